import type { ConversationRef } from './api';
import type { Role } from './types';

// The resume secret lives in localStorage (it must outlive the tab); the
// transcript shown on reload lives in sessionStorage (it need not).
// Storage can be unavailable (private modes, sandboxed frames): then nothing is kept.

export interface Line { id: string; role: Role; text: string }

function get(s: () => Storage, key: string): unknown {
  try {
    const v = s().getItem(key);
    return v ? JSON.parse(v) : null;
  } catch {
    return null;
  }
}

function put(s: () => Storage, key: string, value: unknown): void {
  try {
    if (value === null) s().removeItem(key);
    else s().setItem(key, JSON.stringify(value));
  } catch {
    /* storage full or blocked: the conversation simply will not resume */
  }
}

const local = () => localStorage;
const session = () => sessionStorage;

export class WidgetStore {
  private readonly key: string;

  constructor(widgetId: string) {
    this.key = `anyreach:${widgetId}`;
  }

  conversation(): ConversationRef | null {
    const v = get(local, this.key) as ConversationRef | null;
    return v && typeof v.conversation_id === 'string' && typeof v.resume_token === 'string' ? v : null;
  }

  saveConversation(c: ConversationRef | null): void {
    put(local, this.key, c && { conversation_id: c.conversation_id, resume_token: c.resume_token });
    if (!c) put(session, this.key + ':log', null);
  }

  transcript(): Line[] {
    const v = get(session, this.key + ':log');
    return Array.isArray(v) ? (v as Line[]) : [];
  }

  saveTranscript(lines: Line[]): void {
    put(session, this.key + ':log', lines.slice(-100));
  }
}
