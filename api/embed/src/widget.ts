// The loader's side of one widget: the public config, the launcher, the page API. The panel and
// everything behind it are a separate chunk (chat.ts), imported when the visitor first reaches for
// the launcher, so that a page pays for the launcher alone until then.
import { onColour, readConfig, safeUrl } from './config';
import { adopt, h, icon } from './dom';
import { Emitter, type EventName, type Listener } from './events';
import { chooseLocale } from './locale';
import { keepMounted } from './mount';
import { LAUNCHER_CSS } from './styles';
import type { Config, Identity, Mounted, Panel, PanelChunk } from './types';

/** The hashed file name of the panel chunk, set by the build. */
declare const __PANEL_CHUNK__: string;

/** What the page sees of one widget (main.ts exposes exactly the methods of PAGE_METHODS, by name). */
export interface WidgetApi {
  readonly id: string;
  open(): Promise<void>;
  close(): void;
  startConversation(): Promise<void>;
  on(name: EventName, fn: Listener): () => void;
  /** The visitor token the site's backend signed; a new one replaces an expiring one. `null`: no one. */
  identify(token: string | null): void;
  /** Context for the agent (keys as the widget declares them), sent with every start and resume after this. */
  setContext(context: Record<string, unknown> | null): void;
}

export const PAGE_METHODS = ['open', 'close', 'startConversation', 'on', 'identify', 'setContext'] as const satisfies readonly (keyof WidgetApi)[];

// A JWT: three base64url parts, the signature possibly empty (the server refuses what it must).
const TOKEN = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

const ICONS: Record<string, string> = {
  chat: 'M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z',
  headset:
    'M3 18v-6a9 9 0 0 1 18 0v6M21 19a2 2 0 0 1-2 2h-1a2 2 0 0 1-2-2v-3a2 2 0 0 1 2-2h3zM3 19a2 2 0 0 0 2 2h1a2 2 0 0 0 2-2v-3a2 2 0 0 0-2-2H3z',
  sparkle: 'M12 3l1.9 5.8L20 11l-6.1 2.2L12 19l-1.9-5.8L4 11l6.1-2.2zM19 3v4M21 5h-4',
  wave: 'M3 11v2M7 8v8M11 4v16M15 7v10M19 10v4',
};

const domReady = () =>
  new Promise<void>((ok) => (document.body ? ok() : document.addEventListener('DOMContentLoaded', () => ok(), { once: true })));

/**
 * Resolves in a new task. The start is a chain of short tasks (fetch, read the config, the styles,
 * the launcher) rather than one: at 4x CPU slowdown the whole of it in one task came to about 50 ms,
 * a long task on the customer's page, and each step alone stays well under that.
 */
const nextTask = () => new Promise<void>((ok) => setTimeout(ok, 0));

/** Why the public config could not be had: the answer's status and problem code (status 0: no answer we may read). */
export class ConfigRefusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string | null,
  ) {
    super(`HTTP ${status}${code ? ` ${code}` : ''}`);
  }
}

async function fetchConfig(base: string, id: string): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(`${base}/public/v1/widgets/${encodeURIComponent(id)}`, { credentials: 'omit', mode: 'cors' });
  } catch {
    throw new ConfigRefusal(0, null);
  }
  if (!res.ok) throw new ConfigRefusal(res.status, await res.json().then((p) => (typeof p?.code === 'string' ? p.code : null), () => null));
  return res.json();
}

/** One console line per cause, naming what the site owner can do about it. */
export function whyNotShown(id: string, base: string, e: unknown): string {
  const w = `[anyreach] widget ${id}`;
  const { status, code } = e instanceof ConfigRefusal ? e : new ConfigRefusal(500, null);
  if (code === 'origin_not_allowed')
    return `${w} is not allowed on ${location.origin}: add this origin to the widget's allowed domains (the console, or PUT /v1/widgets/${id}/domains).`;
  if (code === 'widget_not_live') return `${w} is not live: publish the widget, and the agent version it pins.`;
  if (status === 404) return `${w} does not exist: check data-widget-id on the snippet's <script> tag.`;
  if (status === 429) return `${w}: too many requests from this address; it will load again shortly.`;
  if (status === 0) return `${w}: could not reach ${base} (a network error, or the service is down).`;
  return `${w}: the service answered ${status}; try again later.`;
}

// One panel chunk for every widget on the page; forgotten if it failed to load, so a later click loads it again.
let chunk: Promise<PanelChunk> | null = null;
const loadChunk = (base: string) =>
  (chunk ||= (import(`${base}/embed/${__PANEL_CHUNK__}`) as Promise<PanelChunk>).catch((e) => {
    chunk = null;
    throw e;
  }));

function launcherFace(cfg: Config): Node {
  const { bubble_icon } = cfg.appearance;
  const named = Object.prototype.hasOwnProperty.call(ICONS, bubble_icon) ? ICONS[bubble_icon] : null;
  const src = named ? null : safeUrl(bubble_icon);
  return src ? h('img', { src, alt: '' }) : icon(named || ICONS.chat);
}

export class Widget implements WidgetApi {
  readonly ready: Promise<boolean>;
  private readonly events = new Emitter();
  private mounted: Mounted | null = null;
  private panel: Promise<Panel | null> | null = null;
  private readonly identity: Identity = { token: null, context: null };

  constructor(
    readonly id: string,
    private readonly base: string,
    refused: (e: unknown) => void,
    visitorToken?: string | null,
  ) {
    if (visitorToken) this.identify(visitorToken);
    // The script's own task only registers the widget; the request starts in the next one.
    this.ready = Promise.all([nextTask().then(() => fetchConfig(base, id)), domReady()]).then(
      async ([body]) => {
        const cfg = readConfig(body);
        await nextTask();
        const shadow = this.styles(cfg);
        await nextTask();
        this.mount(cfg, shadow);
        return true;
      },
      (e) => (refused(e), false),
    );
  }

  // ---- page API ----

  async open(): Promise<void> {
    (await this.loadPanel())?.open();
  }

  close(): void {
    // A panel never loaded was never opened.
    void this.panel?.then((p) => p?.close());
  }

  async startConversation(): Promise<void> {
    await (await this.loadPanel())?.startConversation();
  }

  on(name: EventName, fn: Listener): () => void {
    return this.events.on(name, fn);
  }

  identify(token: string | null): void {
    const next = typeof token === 'string' && TOKEN.test(token.trim()) ? token.trim() : null;
    if (token && !next) console.warn('[anyreach] identify() takes the visitor token (a JWT) the site signed');
    if (next === this.identity.token) return;
    this.identity.token = next;
    this.identity.changed?.();
  }

  setContext(context: Record<string, unknown> | null): void {
    const plain = context && typeof context === 'object' && !Array.isArray(context);
    if (context && !plain) console.warn('[anyreach] setContext() takes an object of the keys the widget declares');
    this.identity.context = plain ? { ...context } : null;
  }

  // ---- the launcher ----

  /** The host element and its shadow root with the launcher's stylesheets (parsed here, a task of their own). */
  private styles(cfg: Config): ShadowRoot {
    const { appearance: ap } = cfg;
    const shadow = document.createElement('anyreach-widget').attachShadow({ mode: 'open' });
    adopt(shadow, LAUNCHER_CSS);
    // Checked #rrggbb values (config.ts); text on them is black or white, whichever contrasts more.
    adopt(shadow, `.root{--p:${ap.primary_color};--op:${onColour(ap.primary_color)};--a:${ap.accent_color};--oa:${onColour(ap.accent_color)}}`);
    return shadow;
  }

  private mount(cfg: Config, shadow: ShadowRoot): void {
    const { tag, lang, open } = chooseLocale(cfg.locale);
    const { appearance: ap } = cfg;
    const host = shadow.host as HTMLElement;
    const root = h('div', { class: 'root' + (ap.position === 'bottom-left' ? ' left' : ''), 'data-theme': ap.theme, lang: tag });
    const launcher = h(
      'button',
      {
        type: 'button',
        class: 'launcher',
        'data-testid': 'anyreach-launcher',
        'aria-label': ap.launcher_label || open,
        'aria-expanded': 'false',
        'aria-controls': 'ar-panel',
        'aria-haspopup': 'dialog',
      },
      launcherFace(cfg),
      ap.launcher_label && h('span', null, ap.launcher_label),
    );
    launcher.addEventListener('click', () => void this.loadPanel().then((p) => p?.toggle()));
    // Reaching for the launcher fetches the panel, so that the click opens it at once.
    for (const ev of ['pointerover', 'focus']) launcher.addEventListener(ev, () => void this.loadPanel(), { once: true });
    root.append(launcher);
    shadow.append(root);
    keepMounted(host);
    this.mounted = {
      id: this.id, base: this.base, cfg, tag, lang, shadow, root, launcher, identity: this.identity,
      emit: (name, detail) => this.events.emit(name, detail),
    };
  }

  private loadPanel(): Promise<Panel | null> {
    return (this.panel ||= this.ready
      .then((ok) => (ok && this.mounted ? loadChunk(this.base).then((c) => c.mountPanel(this.mounted!)) : null))
      .catch((e) => {
        this.panel = null;
        console.warn('[anyreach] the chat panel could not be loaded', e);
        return null;
      }));
  }
}
