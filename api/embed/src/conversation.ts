import { ApiError, type ConversationRef, type PublicApi } from './api';
import type { Values } from './forms';
import type { WidgetStore } from './store';
import type { Grant, LiveHooks, LiveKitChunk, LiveSession } from './types';

/** The hashed file name of the LiveKit chunk, set by the build. */
declare const __LK_CHUNK__: string;

const chunkUrl = (base: string) => `${base}/embed/${__LK_CHUNK__}`;

// One LiveKit chunk for every widget on the page; forgotten if it failed to load, so a retry loads it again.
let chunk: Promise<LiveKitChunk> | null = null;
const loadChunk = (base: string) =>
  (chunk ||= (import(chunkUrl(base)) as Promise<LiveKitChunk>).catch((e) => {
    chunk = null;
    throw e;
  }));

let preloaded = false;
/**
 * Fetches and compiles the chunk ahead, without running it, so that the import at the first
 * message finds it in the module map. A script-inserted modulepreload is allowed wherever the
 * import is: by `script-src <api>`, or by 'strict-dynamic' (it is not parser-inserted).
 */
export function preloadChunk(base: string): void {
  if (preloaded || chunk) return;
  preloaded = true;
  const link = document.createElement('link');
  link.rel = 'modulepreload';
  link.href = chunkUrl(base);
  link.addEventListener('load', () => link.remove(), { once: true });
  link.addEventListener('error', () => link.remove(), { once: true });
  (document.head || document.documentElement).append(link);
}

// What the API takes for `visitor` (anything else is a 400 and no conversation would ever start):
// a name of 1 to 80 characters, and a BCP 47 tag of at most 35.
const MAX_NAME = 80;
const LOCALE = /^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$/;

function visitorOf(name: unknown, locale: string): { name?: string; locale?: string } {
  const visitor: { name?: string; locale?: string } = {};
  // The pre-chat field may hold up to 1,000 characters; the form keeps all of them, the visitor name its start.
  if (typeof name === 'string' && name.trim()) visitor.name = Array.from(name.trim()).slice(0, MAX_NAME).join('').trim();
  if (locale.length <= 35 && LOCALE.test(locale)) visitor.locale = locale;
  return visitor;
}

export type Link = 'connecting' | 'connected' | 'reconnecting' | 'unavailable';

/** joined: in a room; gone: the stored conversation no longer exists (now forgotten); left: abandoned meanwhile; failed: try again. */
export type Outcome = 'joined' | 'gone' | 'left' | 'failed';

/** What a conversation reports to the widget. */
export interface ConversationEvents extends Omit<LiveHooks, 'state'> {
  link(state: Link): void;
  adopted(conversationId: string, status: 'started' | 'resumed'): void;
}

/**
 * One visitor's conversation with the agent: the public API calls, the resume
 * secret kept in the browser, and the LiveKit room (a fresh one on every join).
 */
export class Conversation {
  ref: ConversationRef | null;
  session: LiveSession | null = null;
  private joining: Promise<Outcome> | null = null;
  // Bumped whenever the conversation is left, so that late answers for it are ignored.
  private gen = 0;
  private outbox: [string, () => void][] = [];
  private prechat: { formId: string; values: Values } | null = null;

  constructor(
    private readonly api: PublicApi,
    private readonly store: WidgetStore,
    private readonly base: string,
    private readonly locale: string,
    private readonly events: ConversationEvents,
  ) {
    this.ref = store.conversation();
  }

  get busy(): boolean {
    return !!this.joining;
  }

  get awaitsPrechat(): boolean {
    return !this.ref && !this.prechat;
  }

  /** Pre-chat answers: the visitor's name goes with the start, the values are filed once the conversation exists. */
  setPrechat(formId: string, values: Values): void {
    this.prechat = { formId, values };
  }

  /** Resumes the stored conversation or starts one, then joins its room. */
  join(): Promise<Outcome> {
    if (this.session) return Promise.resolve('joined');
    if (this.joining) return this.joining;
    const gen = this.gen;
    this.events.link('connecting');
    return (this.joining = this.attempt(gen)
      .catch((): Outcome => {
        if (gen !== this.gen) return 'left';
        this.events.link('unavailable');
        return 'failed';
      })
      .finally(() => {
        if (gen === this.gen) this.joining = null;
      }));
  }

  private async attempt(gen: number): Promise<Outcome> {
    const created = !this.ref;
    let grant: Grant;
    if (this.ref) {
      try {
        grant = await this.api.resume(this.ref);
      } catch (e) {
        // 404: unknown here (or the token is wrong); 409: it has ended meanwhile (in another tab, or the room finished).
        if (!(e instanceof ApiError && (e.status === 404 || e.status === 409)) || gen !== this.gen) throw e;
        this.forget();
        return 'gone';
      }
    } else {
      grant = await this.api.start(visitorOf(this.prechat?.values.name, this.locale));
    }
    if (gen !== this.gen) {
      if (created) void this.api.end(grant).catch(() => {});
      return 'left';
    }
    this.ref = { conversation_id: grant.conversation_id, resume_token: grant.resume_token };
    this.store.saveConversation(this.ref);
    this.events.adopted(grant.conversation_id, created ? 'started' : 'resumed');
    await this.filePrechat();

    const lk = await loadChunk(this.base);
    if (gen !== this.gen) return 'left';
    const session = await lk.connect(grant.livekit, this.hooks(gen));
    if (gen !== this.gen) return void session.disconnect(), 'left';
    this.session = session;
    this.events.link('connected');
    session.startAudio();
    for (const [text, failed] of this.outbox.splice(0)) this.deliver(text, failed);
    return 'joined';
  }

  /** Kept for the next attempt if filing fails; the conversation goes on either way. */
  private async filePrechat(): Promise<void> {
    const { prechat, ref } = this;
    if (!prechat || !ref) return;
    await this.api.form(ref, prechat.formId, prechat.values).then(
      () => (this.prechat = null),
      () => {},
    );
  }

  private hooks(gen: number): LiveHooks {
    const live = () => gen === this.gen;
    const ev = this.events;
    return {
      state: (s) => {
        if (!live()) return;
        if (s === 'disconnected') this.session = null;
        ev.link(s === 'disconnected' ? 'unavailable' : s);
      },
      agentPresent: (present) => live() && ev.agentPresent(present),
      text: (...a) => live() && ev.text(...a),
      formRequested: (formId) => live() && ev.formRequested(formId),
      micDenied: () => live() && ev.micDenied(),
      mount: (el) => ev.mount(el),
    };
  }

  /** Sends now, or once the room is joined; answers whether it had to wait. */
  send(text: string, failed: () => void): boolean {
    if (this.session) return this.deliver(text, failed), false;
    this.outbox.push([text, failed]);
    return true;
  }

  private deliver(text: string, failed: () => void): void {
    this.session!.sendText(text).catch(failed);
  }

  async submitForm(formId: string, values: Values): Promise<void> {
    if (!this.ref) throw new Error('no conversation');
    await this.api.form(this.ref, formId, values);
    this.session?.formSubmitted(formId, values);
  }

  /** Continues another of the verified visitor's conversations (from their list): leaves this one, joins that. */
  switchTo(conversationId: string): Promise<Outcome> {
    if (this.ref?.conversation_id === conversationId) return this.join();
    this.leave();
    this.ref = { conversation_id: conversationId, resume_token: '' };
    return this.join();
  }

  /** Leaves the room and forgets the conversation here; answers what it was. */
  leave(): ConversationRef | null {
    const { ref, session } = this;
    this.gen++;
    void session?.disconnect().catch(() => {});
    this.session = this.joining = this.prechat = null;
    this.outbox = [];
    this.forget();
    return ref;
  }

  /** Leaves it and tells the server it is over, without waiting for the answer. */
  discard(): ConversationRef | null {
    const ref = this.leave();
    if (ref) void this.api.end(ref).catch(() => {});
    return ref;
  }

  /** Ends it for good: the feedback (when given) and then the end, as the API expects them. */
  async end(rating: number | null, comment?: string): Promise<ConversationRef | null> {
    const ref = this.leave();
    if (!ref) return null;
    if (rating !== null) await this.api.feedback(ref, rating, comment).catch(() => {});
    await this.api.end(ref).catch(() => {});
    return ref;
  }

  private forget(): void {
    this.ref = null;
    this.store.saveConversation(null);
  }
}
