import type { Grant } from './types';

/** A refused or failed public call; `status` is 0 when the network failed. */
export class ApiError extends Error {
  constructor(readonly status: number) {
    super(`HTTP ${status}`);
  }
}

export interface ConversationRef { conversation_id: string; resume_token: string }

/** The public API, called from the host page so that every call carries its Origin. */
export class PublicApi {
  private readonly root: string;

  constructor(base: string, widgetId: string) {
    this.root = `${base}/public/v1/widgets/${encodeURIComponent(widgetId)}`;
  }

  start(visitor: { name?: string; locale?: string }): Promise<Grant> {
    return this.call('POST', '/conversations', { visitor }) as Promise<Grant>;
  }

  resume(c: ConversationRef): Promise<Grant> {
    return this.call('POST', this.conv(c, 'resume'), { resume_token: c.resume_token }) as Promise<Grant>;
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

  private async call(method: string, path: string, body?: unknown): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(this.root + path, {
        method,
        credentials: 'omit',
        mode: 'cors',
        headers: body === undefined ? undefined : { 'Content-Type': 'application/json' },
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
