// Shapes shared by the loader and the lazily loaded LiveKit chunk. Types only: nothing here ends up in a bundle.

export type Theme = 'light' | 'dark' | 'auto';
export type FieldType = 'text' | 'email' | 'phone' | 'textarea' | 'select' | 'checkbox';
export type FeedbackType = 'thumbs' | 'stars' | 'scale_5';

export interface Option { label: string; value: string }

export interface FormField {
  name: string;
  label: string;
  type: FieldType;
  required: boolean;
  options: Option[];
}

export interface Form {
  id: string;
  title: string;
  trigger: 'pre_chat' | 'agent_request';
  fields: FormField[];
}

export interface Config {
  appearance: {
    theme: Theme;
    primary_color: string;
    accent_color: string;
    position: 'bottom-right' | 'bottom-left';
    launcher_label: string | null;
    bubble_icon: string;
  };
  branding: { display_name: string | null; avatar_url: string | null; logo_url: string | null; show_powered_by: boolean };
  text: { enabled: boolean; welcome_message: string | null; input_placeholder: string | null };
  voice: { enabled: boolean; mode: 'push_to_talk' | 'open_mic' };
  quick_actions: { label: string; message: string }[];
  forms: Form[];
  feedback: { enabled: boolean; type: FeedbackType; prompt: string | null; allow_comment: boolean };
  locale: string | null;
  /** Whether the site signs visitor tokens: off ignores them, optional and required verify them. */
  identity: { mode: 'off' | 'optional' | 'required' };
}

/**
 * Who the page says the visitor is: a token its backend signed (`data-visitor-token`, `identify`), and
 * context for the agent (`setContext`). Shared by the loader and the panel; read at each call, so a new
 * token replaces an expiring one for every call after it.
 */
export interface Identity {
  token: string | null;
  context: Record<string, unknown> | null;
  /** Set by the panel: told when the page identifies another visitor (or none). */
  changed?: () => void;
}

export interface LiveKitGrant { url: string; room: string; token: string; expires_at: string }

export interface Grant {
  conversation_id: string;
  resume_token: string;
  channel: string;
  livekit: LiveKitGrant;
}

export type Role = 'agent' | 'visitor' | 'system';

/** What the LiveKit chunk reports back to the loader. */
export interface LiveHooks {
  state(state: 'connected' | 'reconnecting' | 'disconnected'): void;
  /** Whether an agent is in the room and ready (its `lk.agent.state` is set past `initializing`). */
  agentPresent(present: boolean): void;
  /** A message, or a newer version of one: `text` is the whole text so far for `id`. */
  text(id: string, role: Role, text: string, final: boolean): void;
  /** The agent asked for a form; answers false when the form is unknown. */
  formRequested(formId: string): boolean;
  micDenied(): void;
  /** The browser blocked the agent's audio until the visitor interacts (autoplay policy), or let it play. */
  audioBlocked(blocked: boolean): void;
  mount(el: HTMLMediaElement): void;
}

/** A LiveKit room, as the loader sees it: opened first (the microphone may start then), joined once granted. */
export interface LiveRoom {
  join(grant: LiveKitGrant): Promise<void>;
  sendText(text: string): Promise<void>;
  /** Resolves false when the microphone could not be switched (denied, no device). Before `join`, it records
   * into livekit-client's pre-connect buffer, which the agent receives when it joins. */
  setMic(on: boolean): Promise<boolean>;
  formSubmitted(formId: string, values: Record<string, string | boolean>): void;
  startAudio(): void;
  disconnect(): Promise<void>;
}

export interface LiveKitChunk {
  open(hooks: LiveHooks): LiveRoom;
}

/** What the loader hands the panel chunk: the widget's config and what it has already put on the page. */
export interface Mounted {
  id: string;
  /** Where the API and the chunks live (the loader's own origin and path). */
  base: string;
  cfg: Config;
  /** The BCP 47 tag the widget speaks, and its language (a key of the panel's word tables). */
  tag: string;
  lang: string;
  shadow: ShadowRoot;
  root: HTMLDivElement;
  launcher: HTMLButtonElement;
  identity: Identity;
  /** Tells the page's listeners (Anyreach.on). */
  emit(name: 'message' | 'open' | 'close' | 'conversation', detail?: unknown): void;
}

/** The panel, as the loader drives it. */
export interface Panel {
  open(): void;
  close(): void;
  toggle(): void;
  startConversation(): Promise<void>;
}

export interface PanelChunk {
  mountPanel(m: Mounted): Panel;
}
