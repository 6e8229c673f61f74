import { h, icon } from './dom';
import type { Strings } from './i18n';
import type { FeedbackType, Form, FormField } from './types';

export type Values = Record<string, string | boolean>;

let seq = 0;

const UP = 'M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3';
const DOWN = 'M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zM17 2h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17';
const STAR = 'M12 2l3.09 6.26L22 9.27l-5 4.87 1.18 6.88L12 17.77l-6.18 3.25L7 14.14 2 9.27l6.91-1.01z';

// What the API accepts for each type of field, checked here too: an answer it refuses would be lost.
// Browsers take `ada@localhost` as an email address; the API wants a dot in the domain.
const MAX_LENGTH: Partial<Record<FormField['type'], number>> = { text: 1000, textarea: 5000, email: 254, phone: 32 };
const PATTERN: Partial<Record<FormField['type'], string>> = {
  email: '[^@\\s]+@[^@\\s]+\\.[^@\\s]+',
  phone: '\\+?[0-9 \\(\\)\\.\\-]{5,32}',
};

function control(f: FormField, id: string, t: Strings): HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement {
  const common = {
    id,
    name: f.name,
    required: f.required,
    maxlength: MAX_LENGTH[f.type],
    pattern: PATTERN[f.type],
    'aria-required': f.required ? 'true' : null,
    'data-testid': `anyreach-field-${f.name}`,
  };
  if (f.type === 'textarea') return h('textarea', { ...common, rows: 3 });
  if (f.type === 'select')
    return h('select', common, h('option', { value: '' }, t.choose), ...f.options.map((o) => h('option', { value: o.value }, o.label)));
  const type = f.type === 'phone' ? 'tel' : f.type;
  const autocomplete = f.type === 'email' ? 'email' : f.type === 'phone' ? 'tel' : f.name === 'name' ? 'name' : null;
  return h('input', { ...common, type, autocomplete });
}

/**
 * A configured form as a card. `submit` resolves when the values were accepted;
 * a rejection shows a retry message and keeps what the visitor typed.
 */
export function renderForm(
  form: Form,
  t: Strings,
  testid: 'anyreach-prechat' | 'anyreach-agent',
  submitLabel: string,
  submit: (values: Values) => Promise<void>,
  cancel?: () => void,
): HTMLFormElement {
  const n = ++seq;
  const titleId = `ar-f${n}`;
  const fields = form.fields.map((f, i) => {
    const c = control(f, `ar-f${n}-${i}`, t);
    const text = h('span', null, f.label, f.required && h('span', { class: 'sr' }, ` (${t.required})`), f.required && h('span', { 'aria-hidden': 'true' }, ' *'));
    return { f, c, el: f.type === 'checkbox' ? h('label', { class: 'cb' }, c, text) : h('label', null, text, c) };
  });
  const error = h('p', { class: 'err', role: 'alert', hidden: true }, t.formError);
  const button = h('button', { type: 'submit', class: 'btn', 'data-testid': `${testid}-submit` }, submitLabel);
  const el = h(
    'form',
    { class: 'card', 'data-testid': `${testid}-form`, 'data-form-id': form.id, 'aria-labelledby': form.title ? titleId : null },
    form.title && h('h3', { id: titleId }, form.title),
    ...fields.map((x) => x.el),
    error,
    h('div', { class: 'row' }, cancel && h('button', { type: 'button', class: 'link', 'data-testid': `${testid}-cancel` }, t.cancel), button),
  );
  el.querySelector('.link')?.addEventListener('click', () => cancel && cancel());
  el.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!el.reportValidity()) return;
    const values: Values = {};
    for (const { f, c } of fields) {
      const v = f.type === 'checkbox' ? (c as HTMLInputElement).checked : c.value.trim();
      // An optional field left empty is not sent: "" is not a valid email or phone number.
      if (v !== '') values[f.name] = v;
    }
    button.disabled = true;
    error.hidden = true;
    try {
      await submit(values);
    } catch {
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

/**
 * Asks for a rating when the visitor ends the conversation.
 * thumbs: 1 (helpful) or 0 (not helpful); stars and scale_5: 1 to 5.
 */
export function renderFeedback(
  type: FeedbackType,
  prompt: string,
  allowComment: boolean,
  t: Strings,
  submit: (rating: number | null, comment?: string) => Promise<void>,
): HTMLFormElement {
  let rating: number | null = null;
  const choices: [number, (Node | string)[], string][] =
    type === 'thumbs'
      ? [
          [1, [icon(UP)], t.helpful],
          [0, [icon(DOWN)], t.notHelpful],
        ]
      : [1, 2, 3, 4, 5].map((n) => [n, type === 'stars' ? [icon(STAR)] : [String(n)], t.outOf.replace('{n}', String(n))]);
  const buttons = choices.map(([value, face, label]) =>
    h('button', { type: 'button', class: 'opt', 'aria-pressed': 'false', 'aria-label': label, title: label, 'data-testid': 'anyreach-feedback-option', 'data-value': value }, ...face),
  );
  const comment = allowComment ? h('textarea', { rows: 2, 'data-testid': 'anyreach-feedback-comment', maxlength: 2000 }) : null;
  const send = h('button', { type: 'submit', class: 'btn', disabled: true, 'data-testid': 'anyreach-feedback-submit' }, t.sendFeedback);
  const skip = h('button', { type: 'button', class: 'link', 'data-testid': 'anyreach-feedback-skip' }, t.skip);
  const el = h(
    'form',
    { class: 'card', 'data-testid': 'anyreach-feedback-form', 'aria-labelledby': 'ar-fb' },
    h('p', { id: 'ar-fb' }, prompt),
    h('div', { class: 'opts', role: 'group', 'aria-labelledby': 'ar-fb' }, ...buttons),
    comment && h('label', null, t.comment, comment),
    h('div', { class: 'row' }, skip, send),
  );
  buttons.forEach((b, i) =>
    b.addEventListener('click', () => {
      rating = choices[i][0];
      send.disabled = false;
      buttons.forEach((o, j) => {
        o.setAttribute('aria-pressed', String(i === j));
        // Stars fill up to the chosen one.
        o.toggleAttribute('data-on', type === 'stars' && j <= i);
      });
    }),
  );
  const done = (r: number | null) => {
    send.disabled = skip.disabled = true;
    void submit(r, comment?.value.trim() || undefined);
  };
  skip.addEventListener('click', () => done(null));
  el.addEventListener('submit', (e) => {
    e.preventDefault();
    if (rating !== null) done(rating);
  });
  return el;
}
