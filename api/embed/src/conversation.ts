import { ApiError, type ConversationRef, type PublicApi } from './api';
import type { Values } from './forms';
import type { WidgetStore } from './store';
import type { Grant, LiveHooks, LiveKitChunk, LiveRoom } from './types';

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

/** Where a visitor's message is: held until an agent is present to receive it, sent, or not delivered. */
export type Delivery = 'held' | 'sent' | 'failed';

/** What a conversation reports to the widget. */
export interface ConversationEvents extends Omit<LiveHooks, 'state' | 'agentPresent'> {
  link(state: Link): void;
  adopted(conversationId: string, status: 'started' | 'resumed'): void;
  /** A room was opened for this conversation (not joined yet): the microphone may start recording into it. */
  roomOpened(): void;
  /** The agent is present, or is not (`left`: it was here in this room and has gone). */
  agent(present: boolean, left: boolean): void;
  delivery(id: string, state: Delivery): void;
}

// How long a held message waits for an agent to be present before it is shown as not delivered.
const AGENT_WAIT_MS = 20000;
// After the room is lost (the server restarted, the network dropped), resume into a fresh room after these pauses.
const RECOVERY_MS = [500, 1000, 2000, 4000, 8000, 8000, 8000];

/**
 * One visitor's conversation with the agent: the public API calls, the resume
 * secret kept in the browser, and the LiveKit room (a fresh one on every join).
 *
 * What the visitor types is held until an agent is present in the room (LiveKit forwards a text
 * stream only to those already there, and `sendText` resolves either way), then sent in order,
 * each message once. A lost room is resumed into a fresh one; held messages wait for it.
 */
export class Conversation {
  ref: ConversationRef | null;
  /** The room opened for this conversation, joined or not yet. */
  room: LiveRoom | null = null;
  /** The same room once joined. */
  session: LiveRoom | null = null;
  private joining: Promise<Outcome> | null = null;
  // Bumped whenever the conversation is left, so that late answers for it are ignored.
  private gen = 0;
  private outbox: { id: string; text: string }[] = [];
  private flushing = false;
  private agentHere = false;
  private agentSeen = false;
  private agentWait: ReturnType<typeof setTimeout> | null = null;
  private recovering = false;
  private linkDown = false;
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
    this.events.link(this.recovering ? 'reconnecting' : 'connecting');
    return (this.joining = this.attempt(gen)
      .catch((): Outcome => {
        if (gen !== this.gen) return 'left';
        this.dropRoom();
        if (!this.recovering) this.giveUp();
        return 'failed';
      })
      .finally(() => {
        if (gen === this.gen) this.joining = null;
      }));
  }

  private async attempt(gen: number): Promise<Outcome> {
    const created = !this.ref;
    // The chunk loads, and its room opens, while the conversation is started: a microphone press records from now.
    const opening = loadChunk(this.base).then((lk) => {
      if (gen !== this.gen) throw new Error('left');
      this.room = lk.open(this.hooks(gen));
      this.events.roomOpened();
      return this.room;
    });
    opening.catch(() => {});
    let grant: Grant;
    if (this.ref) {
      try {
        grant = await this.api.resume(this.ref);
      } catch (e) {
        // 404: unknown here (or the token is wrong); 409: it has ended meanwhile (in another tab, or the room finished).
        if (!(e instanceof ApiError && (e.status === 404 || e.status === 409 || e.status === 410)) || gen !== this.gen) throw e;
        this.dropRoom();
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

    const room = await opening;
    await room.join(grant.livekit);
    if (gen !== this.gen) return void room.disconnect(), 'left';
    this.session = room;
    this.recovering = false;
    this.events.link('connected');
    room.startAudio();
    this.flush();
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
        if (s === 'disconnected') return this.lost();
        // While LiveKit reconnects, nothing is sent: what the visitor types waits for the agent on the other side.
        this.linkDown = s === 'reconnecting';
        if (this.linkDown && this.agentHere) (this.agentHere = false), ev.agent(false, false);
        ev.link(s);
      },
      agentPresent: (present) => {
        if (!live() || present === this.agentHere) return;
        this.agentHere = present;
        if (present) this.agentSeen = true;
        ev.agent(present, !present && this.agentSeen);
        if (present) this.flush();
      },
      text: (...a) => live() && ev.text(...a),
      formRequested: (formId) => live() && ev.formRequested(formId),
      micDenied: () => live() && ev.micDenied(),
      audioBlocked: (blocked) => live() && ev.audioBlocked(blocked),
      mount: (el) => ev.mount(el),
    };
  }

  /**
   * Sends now if an agent is present, else holds the message until one is (joining the room, or
   * moving to a fresh room when the agent has left this one); answers whether a join is needed.
   */
  send(id: string, text: string): boolean {
    this.outbox.push({ id, text });
    this.events.delivery(id, 'held');
    if (this.session && !this.linkDown && !this.agentHere && this.agentSeen) {
      this.moveOn();
      return false;
    }
    this.flush();
    return !this.session && !this.joining;
  }

  /** Sends the held messages in order, one at a time, while an agent is present. */
  private async flush(): Promise<void> {
    if (this.flushing || !this.outbox.length) return;
    const session = this.session;
    if (!session || !this.agentHere) return this.waitForAgent();
    this.clearAgentWait();
    this.flushing = true;
    try {
      while (this.outbox.length && this.session === session && this.agentHere) {
        const { id } = this.outbox[0];
        try {
          await session.sendText(this.outbox[0].text);
          this.outbox.shift();
          this.events.delivery(id, 'sent');
        } catch {
          if (this.session !== session) break; // the room went away meanwhile: held for the next one
          this.outbox.shift();
          this.events.delivery(id, 'failed');
        }
      }
    } finally {
      this.flushing = false;
    }
    if (this.outbox.length) void this.flush();
  }

  /** Held messages are shown as not delivered if no agent arrives in time; each can be retried. */
  private waitForAgent(): void {
    if (this.agentWait) return;
    this.agentWait = setTimeout(() => {
      this.agentWait = null;
      if (this.agentHere && this.session) return;
      this.failHeld();
    }, AGENT_WAIT_MS);
  }

  private clearAgentWait(): void {
    if (this.agentWait) clearTimeout(this.agentWait);
    this.agentWait = null;
  }

  private failHeld(): void {
    for (const { id } of this.outbox.splice(0)) this.events.delivery(id, 'failed');
  }

  /** The agent left this room: a fresh room (a resume) dispatches it again; held messages go there. */
  private moveOn(): void {
    const room = this.session;
    this.session = this.room = null;
    this.agentHere = this.agentSeen = false;
    void room?.disconnect().catch(() => {});
    void this.join();
  }

  /** The room was lost without us leaving it: resume into a fresh one, a few times, keeping what is held. */
  private lost(): void {
    const gen = this.gen;
    this.linkDown = false;
    this.session = this.room = null;
    this.agentHere = this.agentSeen = false;
    this.events.agent(false, false);
    this.recovering = true;
    this.events.link('reconnecting');
    const retry = async (n: number): Promise<void> => {
      if (gen !== this.gen || !this.recovering) return;
      const outcome = await this.join();
      if (outcome !== 'failed' || gen !== this.gen) return;
      if (n + 1 < RECOVERY_MS.length) return void setTimeout(() => void retry(n + 1), RECOVERY_MS[n + 1]);
      this.recovering = false;
      this.giveUp();
    };
    setTimeout(() => void retry(0), RECOVERY_MS[0]);
  }

  private giveUp(): void {
    this.events.link('unavailable');
    this.clearAgentWait();
    this.failHeld();
  }

  private dropRoom(): void {
    void this.room?.disconnect().catch(() => {});
    this.room = this.session = null;
    this.agentHere = this.agentSeen = false;
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
    const { ref } = this;
    this.gen++;
    this.dropRoom();
    this.joining = this.prechat = null;
    this.recovering = false;
    this.clearAgentWait();
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
