import { h } from './dom';
import type { Strings } from './i18n';
import type { Line, WidgetStore } from './store';
import type { Role } from './types';

/** The message list: renders lines, updates streamed ones in place, keeps them for a reload. */
export class Transcript {
  private els = new Map<string, HTMLElement>();
  private lines: Line[] = [];
  private finals = new Set<string>();

  constructor(
    private readonly log: HTMLElement,
    private readonly t: Strings,
    private readonly agentName: string,
    private readonly store: WidgetStore,
    welcome: string | null,
  ) {
    if (welcome) log.append(this.bubble('agent', welcome, 'anyreach-welcome'));
  }

  /** Shows or updates a line; true the first time it becomes final. */
  show(id: string, role: Role, text: string, final: boolean): boolean {
    let el = this.els.get(id);
    if (!el) {
      el = this.bubble(role, text, 'anyreach-message');
      this.els.set(id, el);
      this.log.append(el);
    } else {
      el.querySelector('.t')!.textContent = text;
    }
    el.setAttribute('aria-busy', String(!final));
    this.log.scrollTop = this.log.scrollHeight;
    if (!final) return false;
    const line = this.lines.find((l) => l.id === id);
    if (line) line.text = text;
    else this.lines.push({ id, role, text });
    this.store.saveTranscript(this.lines);
    if (this.finals.has(id)) return false;
    this.finals.add(id);
    return true;
  }

  /** Marks a visitor's message held (waiting for the agent), sent, or not delivered with its own retry. */
  delivery(id: string, state: 'held' | 'sent' | 'failed', retry: () => void): void {
    const el = this.els.get(id);
    if (!el) return;
    el.querySelector('.undelivered')?.remove();
    el.classList.toggle('failed', state === 'failed');
    if (state === 'held') el.dataset.delivery = 'held';
    else el.dataset.delivery = state;
    if (state !== 'failed') return;
    const again = h('button', { type: 'button', class: 'btn resend', 'data-testid': 'anyreach-resend' }, this.t.resend);
    again.addEventListener('click', retry);
    el.append(h('span', { class: 'undelivered' }, h('span', { class: 'note' }, this.t.notSent), ' ', again));
  }

  textOf(id: string): string | null {
    return this.els.get(id)?.querySelector('.t')?.textContent ?? null;
  }

  restore(): void {
    for (const l of this.store.transcript()) this.show(l.id, l.role, l.text, true);
  }

  clear(): void {
    this.els.forEach((el) => el.remove());
    this.els.clear();
    this.lines = [];
    this.finals.clear();
  }

  private bubble(role: Role, text: string, testid: string): HTMLElement {
    const who = role === 'visitor' ? this.t.you : role === 'agent' ? this.agentName : '';
    return h('div', { class: `msg ${role}`, 'data-testid': testid, 'data-role': role }, who && h('span', { class: 'sr' }, `${who}: `), h('span', { class: 't' }, text));
  }
}
