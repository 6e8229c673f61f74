import { ApiError, PublicApi, type ConversationRef } from './api';
import { readConfig } from './config';
import { h } from './dom';
import { renderFeedback, renderForm, type Values } from './forms';
import { pickLocale, type Strings } from './i18n';
import { buildUi, type Ui } from './panel';
import { WidgetStore } from './store';
import { Transcript } from './transcript';
import type { Config, Form, LiveHooks, LiveKitChunk, LiveKitGrant, LiveSession } from './types';
import { bindMic, type Mic } from './voice';

/** The hashed file name of the LiveKit chunk, set by the build. */
declare const __LK_CHUNK__: string;

export type EventName = 'message' | 'open' | 'close' | 'conversation';
export type Listener = (detail?: unknown) => void;

/** What the page sees of one widget. */
export interface WidgetApi {
  readonly id: string;
  open(): Promise<void>;
  close(): void;
  startConversation(): Promise<void>;
  on(name: EventName, fn: Listener): () => void;
}

type State = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'unavailable' | 'ended';
type Phase = 'chat' | 'prechat' | 'feedback' | 'ended';

// One LiveKit chunk for every widget on the page; forgotten if it failed to load, so a retry loads it again.
let chunk: Promise<LiveKitChunk> | null = null;
const loadChunk = (base: string) =>
  (chunk ||= (import(`${base}/embed/${__LK_CHUNK__}`) as Promise<LiveKitChunk>).catch((e) => {
    chunk = null;
    throw e;
  }));

const domReady = () =>
  new Promise<void>((ok) => (document.body ? ok() : document.addEventListener('DOMContentLoaded', () => ok(), { once: true })));

const FOCUSABLE = 'button,input,textarea,select,[tabindex="0"]';

export class Widget implements WidgetApi {
  readonly ready: Promise<boolean>;
  private readonly api: PublicApi;
  private readonly store: WidgetStore;
  private cfg!: Config;
  private t!: Strings;
  private locale!: string;
  private ui!: Ui;
  private log!: Transcript;
  private mic?: Mic;
  private listeners: Partial<Record<EventName, Set<Listener>>> = {};
  private isOpen = false;
  private phase: Phase = 'chat';
  private state: State = 'idle';
  private conv: ConversationRef | null = null;
  private session: LiveSession | null = null;
  private starting: Promise<void> | null = null;
  // Bumped whenever a conversation is left behind, so that its late answers are ignored.
  private gen = 0;
  private outbox: [string, string][] = [];
  private agentHere = false;
  private micDenied = false;
  private prechatValues: Values | null = null;

  constructor(
    readonly id: string,
    private readonly base: string,
    refused: () => void,
  ) {
    this.api = new PublicApi(base, id);
    this.store = new WidgetStore(id);
    this.ready = Promise.all([this.api.config(), domReady()]).then(
      ([body]) => (this.mount(readConfig(body)), true),
      () => (refused(), false),
    );
  }

  // ---- page API ----

  async open(): Promise<void> {
    if (!(await this.ready) || this.isOpen) return;
    const { ui } = this;
    this.isOpen = true;
    ui.panel.hidden = false;
    ui.root.classList.add('open');
    ui.launcher.setAttribute('aria-expanded', 'true');
    ui.launcher.removeAttribute('data-unread');
    this.emit('open');
    this.begin();
    this.focusIn();
  }

  close(): void {
    const { ui } = this;
    if (!ui) return void this.ready.then((ok) => ok && this.close());
    if (!this.isOpen) return;
    this.isOpen = false;
    this.mic?.release();
    ui.panel.hidden = true;
    ui.root.classList.remove('open');
    ui.launcher.setAttribute('aria-expanded', 'false');
    ui.launcher.focus();
    this.emit('close');
  }

  async startConversation(): Promise<void> {
    await this.open();
    if (this.phase === 'ended') this.newConversation();
    else this.begin();
    await this.starting;
  }

  on(name: EventName, fn: Listener): () => void {
    const set = (this.listeners[name] ||= new Set());
    set.add(fn);
    return () => set.delete(fn);
  }

  private emit(name: EventName, detail?: unknown): void {
    this.listeners[name]?.forEach((fn) => {
      try {
        fn(detail);
      } catch (e) {
        console.error(e);
      }
    });
  }

  // ---- building ----

  private mount(cfg: Config): void {
    const { tag, strings: t } = pickLocale(cfg.locale);
    const ui = buildUi(cfg, t, tag);
    this.cfg = cfg;
    this.t = t;
    this.locale = tag;
    this.ui = ui;
    this.log = new Transcript(ui.log, t, cfg.branding.display_name || t.agent, this.store, cfg.text.welcome_message);

    ui.launcher.addEventListener('click', () => (this.isOpen ? this.close() : void this.open()));
    ui.close.addEventListener('click', () => this.close());
    ui.retry.addEventListener('click', () => this.begin());
    ui.newConversation.addEventListener('click', () => this.newConversation());
    ui.end.addEventListener('click', () => this.end());
    ui.panel.addEventListener('keydown', (e) => this.onKey(e));
    ui.panel.addEventListener('keyup', (e) => e.key === ' ' && !this.typing(e) && this.mic?.hold(false));
    ui.panel.addEventListener('click', () => this.session?.startAudio());
    ui.composer.addEventListener('submit', (e) => (e.preventDefault(), this.submitInput()));
    ui.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) e.preventDefault(), this.submitInput();
    });
    ui.input.addEventListener('input', () => this.grow());
    for (const q of cfg.quick_actions) {
      const b = h('button', { type: 'button', class: 'chip', 'data-testid': 'anyreach-quick-action' }, q.label);
      b.addEventListener('click', () => this.send(q.message));
      ui.quick.append(b);
    }
    if (cfg.voice.enabled) {
      this.mic = bindMic(ui.mic, cfg.voice.mode === 'push_to_talk', t, () => this.session, (ok) => {
        this.micDenied = !ok;
        this.render();
      });
    }
    this.conv = this.store.conversation();
    if (this.conv) this.log.restore();
    this.render();
    (document.body || document.documentElement).append(ui.host);
  }

  private render(): void {
    const { ui, t, cfg, state } = this;
    const chat = this.phase === 'chat';
    ui.composer.hidden = !chat || !(cfg.text.enabled || cfg.voice.enabled);
    ui.quick.hidden = !chat || !cfg.quick_actions.length;
    ui.end.hidden = !(this.conv && chat);
    ui.newConversation.hidden = !this.conv && this.phase !== 'ended';
    ui.mic.disabled = !this.session;
    ui.notice.hidden = state !== 'unavailable';
    ui.noticeText.textContent = t.unavailable;
    const shown = state === 'connected' && this.micDenied ? 'mic_denied' : state;
    ui.status.dataset.state = shown;
    ui.status.textContent =
      shown === 'connected'
        ? this.agentHere
          ? t.connected
          : t.waiting
        : shown === 'mic_denied'
          ? t.micDenied
          : shown === 'idle'
            ? ''
            : t[shown];
  }

  private setState(s: State): void {
    this.state = s;
    this.render();
  }

  // ---- conversation ----

  private prechatForm(): Form | undefined {
    return this.cfg.forms.find((f) => f.trigger === 'pre_chat');
  }

  /** Makes sure a conversation is under way: resumes the stored one, or asks the pre-chat form, or starts one. */
  private begin(): void {
    if (this.session || this.starting || this.phase !== 'chat') return;
    const form = this.prechatForm();
    if (!this.conv && form && !this.prechatValues) return this.showPrechat(form);
    const gen = this.gen;
    this.setState('connecting');
    this.starting = (this.conv ? this.resume(gen) : this.create(gen))
      .catch(() => gen === this.gen && this.setState('unavailable'))
      .then(() => {
        if (gen === this.gen) this.starting = null;
      });
  }

  private async create(gen: number): Promise<void> {
    const name = this.prechatValues?.name;
    const grant = await this.api.start(typeof name === 'string' && name ? { name, locale: this.locale } : { locale: this.locale });
    if (gen !== this.gen) return void this.api.end(grant).catch(() => {});
    this.adopt(grant, 'started');
    await this.sendPrechat();
    await this.join(grant.livekit, gen);
  }

  private async resume(gen: number): Promise<void> {
    let grant;
    try {
      grant = await this.api.resume(this.conv!);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404) || gen !== this.gen) throw e;
      // The conversation is over or unknown: start afresh.
      this.conv = null;
      this.store.saveConversation(null);
      this.log.clear();
      const form = this.prechatForm();
      if (form) return this.setState('idle'), this.showPrechat(form);
      return this.create(gen);
    }
    if (gen !== this.gen) return;
    this.adopt(grant, 'resumed');
    await this.sendPrechat();
    await this.join(grant.livekit, gen);
  }

  /** Files the pre-chat answers once the conversation exists; kept for the next attempt if that fails. */
  private async sendPrechat(): Promise<void> {
    const form = this.prechatForm();
    const values = this.prechatValues;
    if (!form || !values || !this.conv) return;
    await this.api.form(this.conv, form.id, values).then(
      () => (this.prechatValues = null),
      () => {},
    );
  }

  private adopt(c: ConversationRef, status: 'started' | 'resumed'): void {
    this.conv = { conversation_id: c.conversation_id, resume_token: c.resume_token };
    this.store.saveConversation(this.conv);
    this.render();
    this.emit('conversation', { conversation_id: c.conversation_id, status });
  }

  private async join(grant: LiveKitGrant, gen: number): Promise<void> {
    const lk = await loadChunk(this.base);
    if (gen !== this.gen) return;
    const session = await lk.connect(grant, this.hooks(gen));
    if (gen !== this.gen) return void session.disconnect();
    this.session = session;
    this.setState('connected');
    session.startAudio();
    for (const [id, text] of this.outbox.splice(0)) this.deliver(id, text);
  }

  private hooks(gen: number): LiveHooks {
    const live = () => gen === this.gen;
    return {
      state: (s) => {
        if (!live()) return;
        if (s !== 'disconnected') return this.setState(s);
        this.session = null;
        this.mic?.release();
        this.setState('unavailable');
      },
      agentPresent: (present) => {
        if (live()) (this.agentHere = present), this.render();
      },
      text: (id, role, text, final) => {
        if (!live()) return;
        if (this.log.show(id, role, text, final)) this.emit('message', { id, role, text });
        if (role === 'agent' && !this.isOpen) this.ui.launcher.setAttribute('data-unread', '');
      },
      formRequested: (formId) => live() && this.showAgentForm(formId),
      micDenied: () => {
        if (live()) (this.micDenied = true), this.render();
      },
      mount: (el) => {
        el.hidden = true;
        this.ui.shadow.append(el);
      },
    };
  }

  private send(text: string): void {
    text = text.trim();
    if (!text || this.phase !== 'chat') return;
    const id = `v${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    if (this.log.show(id, 'visitor', text, true)) this.emit('message', { id, role: 'visitor', text });
    if (this.session) this.deliver(id, text);
    else this.outbox.push([id, text]), this.begin();
  }

  private deliver(id: string, text: string): void {
    this.session!.sendText(text).catch(() => this.log.failed(id));
  }

  private submitInput(): void {
    const { input } = this.ui;
    const text = input.value;
    input.value = '';
    this.grow();
    this.send(text);
  }

  /** Leaves the current conversation behind locally; answers what it was. */
  private abandon(): ConversationRef | null {
    const { conv, session } = this;
    this.gen++;
    this.mic?.release();
    void session?.disconnect().catch(() => {});
    this.conv = this.session = this.starting = this.prechatValues = null;
    this.outbox = [];
    this.agentHere = this.micDenied = false;
    this.store.saveConversation(null);
    this.ui.slot.replaceChildren();
    return conv;
  }

  private newConversation(): void {
    const old = this.abandon();
    if (old) {
      void this.api.end(old).catch(() => {});
      this.emit('conversation', { conversation_id: old.conversation_id, status: 'ended' });
    }
    this.log.clear();
    this.phase = 'chat';
    this.setState('idle');
    this.begin();
    this.focusIn();
  }

  private end(): void {
    if (!this.conv || this.phase !== 'chat') return;
    const { feedback: fb } = this.cfg;
    if (!fb.enabled) return void this.finish(null);
    this.mic?.release();
    this.phase = 'feedback';
    this.ui.slot.replaceChildren(renderFeedback(fb.type, fb.prompt || this.t.feedbackPrompt, fb.allow_comment, this.t, (r, c) => this.finish(r, c)));
    this.render();
    this.focusIn();
  }

  private async finish(rating: number | null, comment?: string): Promise<void> {
    const conv = this.abandon();
    this.phase = 'ended';
    this.setState('ended');
    if (!conv) return;
    if (rating !== null) await this.api.feedback(conv, rating, comment).catch(() => {});
    await this.api.end(conv).catch(() => {});
    if (rating !== null) this.note(this.t.thanks);
    this.note(this.t.ended);
    this.emit('conversation', { conversation_id: conv.conversation_id, status: 'ended' });
    if (this.isOpen) this.ui.newConversation.focus();
  }

  private note(text: string): void {
    this.log.show(`s${Math.random().toString(36).slice(2)}`, 'system', text, true);
  }

  // ---- forms ----

  private showPrechat(form: Form): void {
    this.phase = 'prechat';
    const el = renderForm(form, this.t, 'anyreach-prechat', this.t.start, async (values) => {
      this.prechatValues = values;
      this.phase = 'chat';
      el.remove();
      this.begin();
      this.focusIn();
    });
    this.ui.slot.replaceChildren(el);
    this.render();
    this.focusIn();
  }

  private showAgentForm(formId: string): boolean {
    const form = this.cfg.forms.find((f) => f.id === formId);
    if (!form || !this.conv || this.phase !== 'chat') return false;
    const el = renderForm(
      form,
      this.t,
      'anyreach-agent',
      this.t.submit,
      async (values) => {
        if (!this.conv) throw new Error('no conversation');
        await this.api.form(this.conv, form.id, values);
        this.session?.formSubmitted(form.id, values);
        el.remove();
        this.note(this.t.formSent);
        this.focusIn();
      },
      () => (el.remove(), this.focusIn()),
    );
    this.ui.slot.replaceChildren(el);
    if (this.isOpen) this.focusIn();
    else this.ui.launcher.setAttribute('data-unread', '');
    return true;
  }

  // ---- keyboard and focus ----

  private focusables(): HTMLElement[] {
    return [...this.ui.panel.querySelectorAll<HTMLElement>(FOCUSABLE)].filter(
      (el) => !(el as HTMLButtonElement).disabled && el.getClientRects().length > 0,
    );
  }

  /** Focus where the visitor will act next: the form in the slot, else the message box. */
  private focusIn(): void {
    if (!this.isOpen) return;
    const { slot, input, close } = this.ui;
    const target = slot.querySelector<HTMLElement>('input,select,textarea,button') || (input.isConnected && !this.ui.composer.hidden ? input : null) || close;
    target.focus();
  }

  private typing(e: Event): boolean {
    return !!(e.target as HTMLElement).closest?.('input,textarea,select,button');
  }

  private onKey(e: KeyboardEvent): void {
    if (e.key === 'Escape') {
      e.stopPropagation();
      this.close();
    } else if (e.key === 'Tab') {
      const items = this.focusables();
      const active = this.ui.shadow.activeElement as HTMLElement | null;
      const first = items[0];
      const last = items[items.length - 1];
      const outside = !active || !items.includes(active);
      if (e.shiftKey ? outside || active === first : outside || active === last) {
        e.preventDefault();
        (e.shiftKey ? last : first)?.focus();
      }
    } else if (e.key === ' ' && !this.typing(e)) {
      e.preventDefault();
      if (!e.repeat) this.mic?.hold(true);
    }
  }

  private grow(): void {
    const { input } = this.ui;
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight + 2, 120)}px`;
  }
}
