// Entry of embed.js: finds its <script>, starts the widget it names and
// exposes the page API as window.Anyreach (the only global it defines).
import type { EventName, Listener } from './events';
import { Widget, type WidgetApi } from './widget';

interface PageApi extends Omit<WidgetApi, 'id'> {
  /** One widget by id; without an id, the first one on the page. */
  get(id?: string): WidgetApi | undefined;
  /** Runs `fn(Anyreach)`; also accepted before the script loads, as `window.Anyreach = [fn, ...]`. */
  push(fn: (api: PageApi) => void): void;
}

// Shared by every copy of embed.js on the page, so that two snippets make two widgets under one API.
const WIDGETS = Symbol.for('anyreach.widgets');
type Hub = PageApi & { [WIDGETS]: Map<string, WidgetApi> };

function hub(): Hub {
  const w = window as unknown as { Anyreach?: unknown };
  const existing = w.Anyreach as Hub | unknown[] | undefined;
  if (existing && !Array.isArray(existing) && existing[WIDGETS]) return existing;
  const widgets = new Map<string, WidgetApi>();
  const first = (): WidgetApi | undefined => widgets.values().next().value;
  const api: Hub = {
    [WIDGETS]: widgets,
    get: (id) => (id ? widgets.get(id) : first()),
    open: async () => first()?.open(),
    close: () => first()?.close(),
    startConversation: async () => first()?.startConversation(),
    on: (name: EventName, fn: Listener) => first()?.on(name, fn) || (() => false),
    push: (fn) => {
      try {
        fn(api);
      } catch (e) {
        console.error(e);
      }
    },
  };
  w.Anyreach = api;
  // Callbacks queued by the page before the script arrived run once the first widget exists.
  if (Array.isArray(existing)) queueMicrotask(() => existing.forEach((fn) => typeof fn === 'function' && api.push(fn as (api: PageApi) => void)));
  return api;
}

function findScript(taken: Map<string, unknown>): HTMLScriptElement | null {
  const current = document.currentScript as HTMLScriptElement | null;
  if (current?.hasAttribute('data-widget-id')) return current;
  const all = document.querySelectorAll<HTMLScriptElement>('script[data-widget-id][src*="embed.js"]');
  return [...all].find((s) => !taken.has(s.getAttribute('data-widget-id')!.trim())) || null;
}

/** The API lives where the script came from: https://host/prefix/embed.js -> https://host/prefix. */
function baseOf(src: string): string {
  const u = new URL(src, document.baseURI);
  return u.origin + u.pathname.replace(/\/[^/]*$/, '');
}

function boot(): void {
  const api = hub();
  const widgets = api[WIDGETS];
  const script = findScript(widgets);
  const id = script?.getAttribute('data-widget-id')?.trim();
  if (!script || !id) return void console.warn('[anyreach] embed.js needs a data-widget-id attribute on its <script> tag');
  if (widgets.has(id)) return;
  const widget = new Widget(id, baseOf(script.src), () => {
    widgets.delete(id);
    console.warn(`[anyreach] widget ${id} is not allowed on ${location.origin}`);
  });
  widgets.set(id, {
    id,
    open: () => widget.open(),
    close: () => widget.close(),
    startConversation: () => widget.startConversation(),
    on: (name, fn) => widget.on(name, fn),
  });
}

boot();
