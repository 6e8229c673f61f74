// Entry of embed.js: finds its <script>, starts the widget it names and
// exposes the page API as window.Anyreach (the only global it defines).
//
// The page API is one table of method names (PAGE_METHODS in widget.ts): each is a method of every
// widget (`Anyreach.get(id).open()`) and, for the first widget, of the global (`Anyreach.open()`).
// A new page method is a Widget method plus its name in that table; a new snippet attribute is
// read from `script.dataset` in boot() and handed to the Widget.
import { PAGE_METHODS, Widget, whyNotShown, type WidgetApi } from './widget';

interface PageApi extends Omit<WidgetApi, 'id'> {
  /** One widget by id; without an id, the first one on the page. */
  get(id?: string): WidgetApi | undefined;
  /** Runs `fn(Anyreach)`; also accepted before the script loads, as `window.Anyreach = [fn, ...]`. */
  push(fn: (api: PageApi) => void): void;
}

// Shared by every copy of embed.js on the page, so that two snippets make two widgets under one API
// (and the same snippet pasted twice makes one).
const WIDGETS = Symbol.for('anyreach.widgets');
type Hub = PageApi & { [WIDGETS]: Map<string, WidgetApi> };
type AnyMethod = (...args: unknown[]) => unknown;

function hub(): Hub {
  const w = window as unknown as { Anyreach?: unknown };
  const existing = w.Anyreach as Hub | unknown[] | undefined;
  if (existing && !Array.isArray(existing) && existing[WIDGETS]) return existing;
  const widgets = new Map<string, WidgetApi>();
  const first = (): WidgetApi | undefined => widgets.values().next().value;
  const api = {
    [WIDGETS]: widgets,
    get: (id?: string) => (id ? widgets.get(id) : first()),
    push: (fn: (api: PageApi) => void) => {
      try {
        fn(api);
      } catch (e) {
        console.error(e);
      }
    },
  } as Hub;
  for (const name of PAGE_METHODS) {
    (api as unknown as Record<string, AnyMethod>)[name] = (...args) => {
      const widget = first();
      if (widget) return (widget[name] as AnyMethod).apply(widget, args);
      // No widget (refused, or not on this page): listeners are accepted and never called.
      return name === 'on' ? () => false : undefined;
    };
  }
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

/** The page-facing side of one widget: only the methods of PAGE_METHODS, bound to it. */
function facade(widget: Widget): WidgetApi {
  const api: Record<string, unknown> = { id: widget.id };
  for (const name of PAGE_METHODS) api[name] = (widget[name] as AnyMethod).bind(widget);
  return api as unknown as WidgetApi;
}

function boot(): void {
  const api = hub();
  const widgets = api[WIDGETS];
  const script = findScript(widgets);
  const id = script?.getAttribute('data-widget-id')?.trim();
  if (!script || !id) return void console.warn('[anyreach] embed.js needs a data-widget-id attribute on its <script> tag');
  if (widgets.has(id)) return;
  const widget = new Widget(
    id,
    baseOf(script.src),
    (e) => {
      widgets.delete(id);
      console.warn(whyNotShown(id, baseOf(script.src), e));
    },
    script.getAttribute('data-visitor-token'),
  );
  widgets.set(id, facade(widget));
}

boot();
