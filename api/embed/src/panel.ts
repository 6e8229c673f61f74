import { onColour, safeUrl } from './config';
import { h, icon, ICONS } from './dom';
import type { Strings } from './i18n';
import { applyStyles } from './styles';
import type { Config } from './types';

export interface Ui {
  host: HTMLElement;
  shadow: ShadowRoot;
  root: HTMLDivElement;
  launcher: HTMLButtonElement;
  panel: HTMLDivElement;
  status: HTMLParagraphElement;
  notice: HTMLDivElement;
  noticeText: HTMLSpanElement;
  retry: HTMLButtonElement;
  log: HTMLDivElement;
  quick: HTMLDivElement;
  slot: HTMLDivElement;
  composer: HTMLFormElement;
  input: HTMLTextAreaElement;
  send: HTMLButtonElement;
  mic: HTMLButtonElement;
  newConversation: HTMLButtonElement;
  end: HTMLButtonElement;
  close: HTMLButtonElement;
}

const iconButton = (cls: string, testid: string, label: string, name: string) => {
  const b = h('button', { type: 'button', class: cls, 'data-testid': testid, 'aria-label': label, title: label }, icon(name));
  return b;
};

function launcherFace(cfg: Config): Node {
  const src = safeUrl(cfg.appearance.bubble_icon);
  if (!ICONS.includes(cfg.appearance.bubble_icon) && src) return h('img', { src, alt: '' });
  return icon(cfg.appearance.bubble_icon);
}

/** Builds the widget's DOM in a fresh shadow root; nothing is attached to the page yet. */
/** False when the page's Permissions-Policy forbids the microphone, or the page is not a secure context. */
export function micAllowed(): boolean {
  const policy = (document as unknown as { featurePolicy?: { allowsFeature(f: string): boolean } }).featurePolicy;
  if (!navigator.mediaDevices?.getUserMedia) return false;
  return !policy || policy.allowsFeature('microphone');
}

export function buildUi(cfg: Config, t: Strings, locale: string): Ui {
  const host = document.createElement('anyreach-widget');
  const shadow = host.attachShadow({ mode: 'open' });
  const { appearance: ap, branding: br } = cfg;
  const name = br.display_name || t.title;
  // The colours are checked #rrggbb values (config.ts); text on them is black or white, whichever reads better.
  applyStyles(shadow, { '--p': ap.primary_color, '--op': onColour(ap.primary_color), '--a': ap.accent_color, '--oa': onColour(ap.accent_color) });

  const root = h('div', { class: 'root' + (ap.position === 'bottom-left' ? ' left' : ''), 'data-theme': ap.theme, lang: locale });

  const launcher = h(
    'button',
    {
      type: 'button',
      class: 'launcher',
      'data-testid': 'anyreach-launcher',
      'aria-label': ap.launcher_label || t.open,
      'aria-expanded': 'false',
      'aria-controls': 'ar-panel',
      'aria-haspopup': 'dialog',
    },
    launcherFace(cfg),
    ap.launcher_label && h('span', null, ap.launcher_label),
  );

  const avatar = safeUrl(br.avatar_url) || safeUrl(br.logo_url);
  const status = h('p', { class: 'status', role: 'status', 'data-testid': 'anyreach-status', 'data-state': 'idle' });
  const newConversation = iconButton('ib', 'anyreach-new-conversation', t.newConversation, 'edit');
  const end = iconButton('ib', 'anyreach-end', t.end, 'end');
  const close = iconButton('ib', 'anyreach-close', t.close, 'close');
  const header = h(
    'header',
    null,
    avatar && h('img', { src: avatar, alt: '' }),
    h('div', { class: 'hd' }, h('h2', { id: 'ar-title', 'data-testid': 'anyreach-title' }, name), status),
    newConversation,
    end,
    close,
  );

  const noticeText = h('span');
  const retry = h('button', { type: 'button', class: 'btn', 'data-testid': 'anyreach-retry' }, t.retry);
  // The status line (role=status) already announces the state; the notice only offers the retry.
  const notice = h('div', { class: 'notice', hidden: true }, noticeText, retry);

  const log = h('div', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-label': name, 'data-testid': 'anyreach-messages', tabindex: '0' });
  const quick = h('div', { class: 'quick', role: 'group', 'aria-label': t.suggestions });
  const slot = h('div', { class: 'slot' });

  const input = h('textarea', {
    rows: 1,
    'data-testid': 'anyreach-input',
    'aria-label': cfg.text.input_placeholder || t.placeholder,
    placeholder: cfg.text.input_placeholder || t.placeholder,
    maxlength: 4000,
    enterkeyhint: 'send',
  });
  const send = iconButton('send', 'anyreach-send', t.send, 'send');
  send.type = 'submit';
  const mic = iconButton('mic', 'anyreach-mic', cfg.voice.mode === 'push_to_talk' ? t.holdToTalk : t.micOn, 'mic');
  mic.setAttribute('aria-pressed', 'false');
  // Said to assistive technology when the page does not let us use the microphone (shown on a press too).
  const micNote = h('span', { id: 'ar-mic-note', class: 'sr', 'data-testid': 'anyreach-mic-note' }, t.micUnavailable);
  if (!micAllowed()) mic.setAttribute('aria-disabled', 'true'), mic.setAttribute('aria-describedby', 'ar-mic-note');
  const composer = h('form', { class: 'composer', 'data-testid': 'anyreach-composer' }, cfg.text.enabled && input, cfg.voice.enabled && mic, cfg.voice.enabled && micNote, cfg.text.enabled && send);

  const logo = br.avatar_url && safeUrl(br.logo_url);
  const powered = br.show_powered_by ? h('div', { class: 'pb' }, logo && h('img', { src: logo, alt: '' }), t.poweredBy) : null;

  const panel = h(
    'div',
    {
      id: 'ar-panel',
      class: 'panel',
      role: 'dialog',
      'aria-modal': 'true',
      'aria-labelledby': 'ar-title',
      'data-testid': 'anyreach-panel',
      hidden: true,
    },
    header,
    notice,
    log,
    quick,
    slot,
    composer,
    powered,
  );

  root.append(launcher, panel);
  shadow.append(root);
  return { host, shadow, root, launcher, panel, status, notice, noticeText, retry, log, quick, slot, composer, input, send, mic, newConversation, end, close };
}
