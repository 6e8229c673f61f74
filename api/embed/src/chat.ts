// Entry of the panel chunk (chat-<hash>.js, ESM): imported by the loader when the visitor first
// reaches for the launcher (pointer over it, focus on it, a click, or the page API). Everything
// after the launcher lives here: the panel, forms, feedback, the conversation and its API calls.
import { PublicApi, type PastConversation } from './api';
import { Conversation, preloadChunk, type ConversationEvents, type Link } from './conversation';
import { adopt, h } from './dom';
import { inControl, trapTab } from './focus';
import { renderFeedback, renderForm } from './forms';
import { stringsFor, type Strings } from './i18n';
import { buildUi, micAllowed, type Ui } from './panel';
import { PANEL_CSS } from './panel-styles';
import { WidgetStore } from './store';
import { Transcript } from './transcript';
import type { Config, Form, Identity, Mounted, Panel } from './types';
import { bindMic, type Mic } from './voice';

type State = 'idle' | 'ended' | Link;
type Phase = 'chat' | 'prechat' | 'feedback' | 'ended';

const noteId = () => `s${Math.random().toString(36).slice(2)}`;

/** The open side of one widget: the panel and the flow from opening to feedback. */
class Chat implements Panel {
  private readonly cfg: Config;
  private readonly t: Strings;
  private readonly ui: Ui;
  private readonly emit: Mounted['emit'];
  private readonly identity: Identity;
  private api!: PublicApi;
  // A verified visitor's other conversations on this widget ("your conversations"), shown above the messages.
  private readonly history: HTMLElement;
  private historyAsked = 0;
  private log!: Transcript;
  private conv!: Conversation;
  private mic?: Mic;
  private isOpen = false;
  private phase: Phase = 'chat';
  private state: State = 'idle';
  private agentHere = false;
  private agentLeft = false;
  private micDenied = false;
  private micExplained = false;

  constructor(m: Mounted) {
    this.cfg = m.cfg;
    this.emit = m.emit;
    this.t = stringsFor(m.lang);
    adopt(m.shadow, PANEL_CSS);
    this.ui = buildUi(m, this.t);
    this.identity = m.identity;
    this.history = h('nav', { class: 'history', 'aria-label': this.t.yourConversations, 'data-testid': 'anyreach-history', hidden: true });
    this.mount(m);
  }

  open(): void {
    if (this.isOpen) return;
    const { ui } = this;
    this.isOpen = true;
    ui.panel.removeAttribute('data-closed');
    ui.root.classList.add('open');
    ui.launcher.setAttribute('aria-expanded', 'true');
    ui.launcher.removeAttribute('data-unread');
    this.emit('open');
    void this.showHistory();
    // Opening records nothing: the conversation starts at the first message, quick action, mic press or pre-chat form.
    if (this.phase === 'chat') this.askPrechat();
    this.focusIn();
  }

  close(): void {
    const { ui } = this;
    if (!this.isOpen) return;
    this.isOpen = false;
    this.mic?.release();
    ui.panel.setAttribute('data-closed', '');
    ui.root.classList.remove('open');
    ui.launcher.setAttribute('aria-expanded', 'false');
    ui.launcher.focus();
    this.emit('close');
  }

  toggle(): void {
    if (this.isOpen) this.close();
    else this.open();
  }

  async startConversation(): Promise<void> {
    this.open();
    if (this.phase === 'ended') this.newConversation();
    await this.begin();
  }

  // ---- building ----

  private mount({ id, base, tag }: Mounted): void {
    const { cfg, t, ui } = this;
    const store = new WidgetStore(id);
    this.log = new Transcript(ui.log, t, cfg.branding.display_name || t.agent, store, cfg.text.welcome_message);
    this.api = new PublicApi(base, id, this.identity);
    this.conv = new Conversation(this.api, store, base, tag, this.conversationEvents());
    this.identity.changed = () => void (this.isOpen ? this.showHistory() : (this.history.hidden = true));
    ui.log.before(this.history);
    // Fetch the LiveKit chunk ahead once the visitor shows intent (focus or pointer on the composer or a suggestion).
    const preload = () => preloadChunk(base);
    for (const el of [ui.composer, ui.quick]) for (const ev of ['focusin', 'pointerover']) el.addEventListener(ev, preload, { once: true });

    ui.close.addEventListener('click', () => this.close());
    ui.retry.addEventListener('click', () => {
      void this.begin();
      this.focusIn();
    });
    ui.playAudio.addEventListener('click', () => this.conv.session?.startAudio());
    ui.newConversation.addEventListener('click', () => this.newConversation());
    ui.end.addEventListener('click', () => this.end());
    ui.panel.addEventListener('keydown', (e) => this.onKey(e));
    ui.panel.addEventListener('keyup', (e) => e.key === ' ' && !inControl(e) && this.mic?.hold(false));
    ui.panel.addEventListener('click', () => this.conv.session?.startAudio());
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
      this.mic = bindMic(ui.mic, cfg.voice.mode === 'push_to_talk', t, {
        session: () => this.conv.room,
        start: () => void this.begin(),
        blocked: () => !micAllowed() && (this.explainMic(), true),
        allowed: (ok) => {
          this.micDenied = !ok;
          this.render();
        },
      });
    }
    if (this.conv.ref) this.log.restore();
    this.render();
    ui.root.append(ui.panel);
  }

  private conversationEvents(): ConversationEvents {
    return {
      link: (s) => {
        if (s === 'unavailable') this.mic?.release();
        this.setState(s);
      },
      roomOpened: () => this.mic?.reopen(),
      adopted: (conversation_id, status) => {
        this.render();
        this.emit('conversation', { conversation_id, status });
      },
      agent: (present, left) => {
        this.agentHere = present;
        this.agentLeft = left;
        this.render();
      },
      delivery: (id, state) => this.log.delivery(id, state, () => this.resend(id)),
      audioBlocked: (blocked) => {
        this.ui.playAudio.hidden = !blocked;
      },
      text: (id, role, text, final) => {
        if (this.log.show(id, role, text, final)) this.emit('message', { id, role, text });
        if (role === 'agent' && !this.isOpen) this.ui.launcher.setAttribute('data-unread', '');
      },
      formRequested: (formId) => this.showAgentForm(formId),
      micDenied: () => {
        this.micDenied = true;
        this.render();
      },
      mount: (el) => {
        el.hidden = true;
        this.ui.shadow.append(el);
      },
    };
  }

  private render(): void {
    const { ui, t, cfg, state } = this;
    const chat = this.phase === 'chat';
    const live = !!this.conv.ref;
    ui.composer.hidden = !chat || !(cfg.text.enabled || cfg.voice.enabled);
    ui.quick.hidden = !chat || !cfg.quick_actions.length;
    ui.end.hidden = !(live && chat);
    ui.newConversation.hidden = !live && this.phase !== 'ended';
    ui.notice.hidden = state !== 'unavailable';
    ui.noticeText.textContent = t.unavailable;
    const shown = state === 'connected' && this.micDenied ? 'mic_denied' : state;
    ui.status.dataset.state = shown;
    ui.status.textContent =
      shown === 'idle'
        ? ''
        : shown === 'mic_denied'
          ? t.micDenied
          : shown === 'connected'
            ? this.agentHere
              ? t.connected
              : this.agentLeft
                ? t.agentLeft
                : t.waiting
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

  /** Shows the pre-chat form when there is one to ask before a conversation; answers whether it did. */
  private askPrechat(): boolean {
    const { conv } = this;
    const form = this.prechatForm();
    if (!form || conv.session || conv.busy || !conv.awaitsPrechat) return false;
    this.showPrechat(form);
    return true;
  }

  /** Makes sure a conversation is under way: asks the pre-chat form first when there is one to ask. */
  private async begin(): Promise<void> {
    const { conv } = this;
    if (this.phase !== 'chat' || this.askPrechat()) return;
    if ((await conv.join()) !== 'gone') return;
    // The stored conversation is over: start afresh.
    this.log.clear();
    this.setState('idle');
    return this.begin();
  }

  /** Once per page: the page's Permissions-Policy (or an insecure page) leaves us no microphone. */
  private explainMic(): void {
    if (this.micExplained) return;
    this.micExplained = true;
    this.log.show(noteId(), 'system', this.t.micUnavailable, true);
  }

  private send(text: string): void {
    text = text.trim();
    if (!text || this.phase !== 'chat') return;
    const id = `v${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
    if (this.log.show(id, 'visitor', text, true)) this.emit('message', { id, role: 'visitor', text });
    if (this.conv.send(id, text)) void this.begin();
  }

  /** A message that was not delivered, sent again from its own button; focus goes back to the message box. */
  private resend(id: string): void {
    const text = this.log.textOf(id);
    if (!text || this.phase !== 'chat') return;
    if (this.conv.send(id, text)) void this.begin();
    this.focusIn();
  }

  private submitInput(): void {
    const { input } = this.ui;
    const text = input.value;
    input.value = '';
    this.grow();
    this.send(text);
  }

  /** Drops what is on screen of the old conversation (the room, the mic, any open form). */
  private reset(): void {
    this.mic?.release();
    this.ui.slot.replaceChildren();
    this.agentHere = this.micDenied = false;
  }

  private newConversation(): void {
    const old = this.conv.discard();
    this.reset();
    if (old) {
      this.emit('conversation', { conversation_id: old.conversation_id, status: 'ended' });
    }
    this.log.clear();
    this.phase = 'chat';
    this.setState('idle');
    // Like opening: nothing starts until the visitor writes, speaks or answers the pre-chat form.
    this.askPrechat();
    this.focusIn();
  }

  private end(): void {
    if (!this.conv.ref || this.phase !== 'chat') return;
    const { feedback: fb } = this.cfg;
    if (!fb.enabled) return void this.finish(null);
    this.mic?.release();
    this.phase = 'feedback';
    this.ui.slot.replaceChildren(renderFeedback(fb.type, fb.prompt || this.t.feedbackPrompt, fb.allow_comment, this.t, (r, c) => this.finish(r, c)));
    this.render();
    this.focusIn();
  }

  private async finish(rating: number | null, comment?: string): Promise<void> {
    const ending = this.conv.end(rating, comment);
    this.reset();
    this.phase = 'ended';
    this.setState('ended');
    const ref = await ending;
    if (!ref) return;
    if (rating !== null) this.log.show(noteId(), 'system', this.t.thanks, true);
    this.log.show(noteId(), 'system', this.t.ended, true);
    this.emit('conversation', { conversation_id: ref.conversation_id, status: 'ended' });
    if (this.isOpen) this.ui.newConversation.focus();
  }

  // ---- a verified visitor's conversations ----

  /** Lists the verified visitor's other conversations (asked again on every open and each new token). */
  private async showHistory(): Promise<void> {
    const { history, t } = this;
    const asked = ++this.historyAsked;
    let found: PastConversation[] = [];
    if (this.cfg.identity.mode !== 'off' && this.identity.token) {
      found = await this.api.visitorConversations().catch(() => []);
    }
    if (asked !== this.historyAsked) return; // a newer token asked meanwhile
    const others = found.filter((c) => c.conversation_id !== this.conv.ref?.conversation_id).slice(0, 5);
    history.hidden = !others.length;
    const when = (c: PastConversation) => {
      const d = new Date(c.started_at);
      return isNaN(d.getTime()) ? '' : d.toLocaleString(this.ui.root.lang || undefined, { dateStyle: 'medium', timeStyle: 'short' });
    };
    const items = others.map((c) => {
      const b = h('button', { type: 'button', class: 'past', 'data-testid': 'anyreach-past-conversation', 'data-conversation-id': c.conversation_id },
        when(c) || t.conversation, c.ended ? h('span', { class: 'tag' }, t.endedTag) : null);
      b.addEventListener('click', () => void this.continueConversation(c.conversation_id));
      return h('li', null, b);
    });
    history.replaceChildren(h('h3', null, t.yourConversations), h('ul', null, ...items));
  }

  private async continueConversation(conversationId: string): Promise<void> {
    if (this.phase !== 'chat' && this.phase !== 'ended') return;
    this.reset();
    this.log.clear();
    this.phase = 'chat';
    this.setState('idle');
    this.history.hidden = true;
    const outcome = await this.conv.switchTo(conversationId);
    if (outcome === 'gone') this.log.show(noteId(), 'system', this.t.ended, true);
    this.render();
    this.focusIn();
  }

  // ---- forms ----

  private showPrechat(form: Form): void {
    this.phase = 'prechat';
    const el = renderForm(form, this.t, 'anyreach-prechat', this.t.start, async (values) => {
      this.conv.setPrechat(form.id, values);
      this.phase = 'chat';
      el.remove();
      void this.begin();
      this.focusIn();
    });
    this.ui.slot.replaceChildren(el);
    this.render();
    this.focusIn();
  }

  private showAgentForm(formId: string): boolean {
    const form = this.cfg.forms.find((f) => f.id === formId);
    if (!form || this.phase !== 'chat') return false;
    const done = () => (el.remove(), this.focusIn());
    const el = renderForm(
      form,
      this.t,
      'anyreach-agent',
      this.t.submit,
      async (values) => {
        await this.conv.submitForm(form.id, values);
        this.log.show(noteId(), 'system', this.t.formSent, true);
        done();
      },
      done,
    );
    this.ui.slot.replaceChildren(el);
    if (this.isOpen) this.focusIn();
    else this.ui.launcher.setAttribute('data-unread', '');
    return true;
  }

  // ---- keyboard and focus ----

  /** Focus where the visitor acts next: the form in the slot, else the message box, else the close button. */
  private focusIn(): void {
    if (!this.isOpen) return;
    const { slot, input, composer, close } = this.ui;
    const target = slot.querySelector<HTMLElement>('input,select,textarea,button') || (input.isConnected && !composer.hidden ? input : close);
    target.focus();
  }

  private onKey(e: KeyboardEvent): void {
    if (e.key === 'Escape') {
      e.stopPropagation();
      this.close();
    } else if (e.key === 'Tab') {
      trapTab(e, this.ui.panel, this.ui.shadow);
    } else if (e.key === ' ' && !inControl(e)) {
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

/** What the loader calls once the chunk is imported. */
export function mountPanel(m: Mounted): Panel {
  return new Chat(m);
}
