import type { Grant, Identity } from './types';

/** A refused or failed public call; `status` is 0 when the network failed. */
export class ApiError extends Error {
  constructor(readonly status: number) {
    super(`HTTP ${status}`);
  }
}

/** A conversation this browser may continue; `resume_token` is empty for one of a verified visitor's list. */
export interface ConversationRef { conversation_id: string; resume_token: string }

/** One of a verified visitor's conversations on this widget. */
export interface PastConversation { conversation_id: string; started_at: string; ended: boolean }

/** The public API, called from the host page so that every call carries its Origin. */
export class PublicApi {
  private readonly root: string;

  constructor(
    base: string,
    widgetId: string,
    private readonly identity: Identity = { token: null, context: null },
  ) {
    this.root = `${base}/public/v1/widgets/${encodeURIComponent(widgetId)}`;
  }

  start(visitor: { name?: string; locale?: string }): Promise<Grant> {
    return this.call('POST', '/conversations', { visitor, ...this.identified() }) as Promise<Grant>;
  }

  /** With the resume token, or (a conversation of the verified visitor's list) with the visitor token alone. */
  resume(c: ConversationRef): Promise<Grant> {
    const body = { ...(c.resume_token ? { resume_token: c.resume_token } : {}), ...this.identified() };
    return this.call('POST', this.conv(c, 'resume'), body) as Promise<Grant>;
  }

  /** The verified visitor's conversations on this widget, newest first (none without a token). */
  async visitorConversations(): Promise<PastConversation[]> {
    const { token } = this.identity;
    if (!token) return [];
    const found = (await this.call('GET', '/visitor/conversations', undefined, { Authorization: `Bearer ${token}` })) as {
      items?: PastConversation[];
    } | null;
    return Array.isArray(found?.items) ? found.items : [];
  }

  /** What a start or resume adds: the visitor token and the page's context, when the page gave them. */
  private identified(): { visitor_token?: string; context?: Record<string, unknown> } {
    const { token, context } = this.identity;
    return { ...(token ? { visitor_token: token } : {}), ...(context ? { context } : {}) };
  }

  form(c: ConversationRef, formId: string, values: Record<string, string | boolean>): Promise<unknown> {
    return this.call('POST', this.conv(c, `forms/${encodeURIComponent(formId)}`), { resume_token: c.resume_token, values });
  }

  feedback(c: ConversationRef, rating: number, comment?: string): Promise<unknown> {
    return this.call('POST', this.conv(c, 'feedback'), { resume_token: c.resume_token, rating, comment });
  }

  end(c: ConversationRef): Promise<unknown> {
    return this.call('POST', this.conv(c, 'end'), { resume_token: c.resume_token });
  }

  private conv(c: ConversationRef, action: string): string {
    return `/conversations/${encodeURIComponent(c.conversation_id)}/${action}`;
  }

  private async call(method: string, path: string, body?: unknown, extra?: Record<string, string>): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(this.root + path, {
        method,
        credentials: 'omit',
        mode: 'cors',
        headers: { ...(body === undefined ? {} : { 'Content-Type': 'application/json' }), ...extra },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0);
    }
    if (!res.ok) throw new ApiError(res.status);
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }
}
