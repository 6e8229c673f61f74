import { safeUrl } from './config';
import { h, icon } from './dom';
import type { Strings } from './i18n';
import type { Mounted } from './types';

export interface Ui {
  shadow: ShadowRoot;
  root: HTMLDivElement;
  launcher: HTMLButtonElement;
  panel: HTMLDivElement;
  status: HTMLParagraphElement;
  notice: HTMLDivElement;
  noticeText: HTMLSpanElement;
  retry: HTMLButtonElement;
  playAudio: HTMLButtonElement;
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

const PATHS = {
  close: 'M18 6L6 18M6 6l12 12',
  send: 'M22 2L11 13M22 2l-7 20-4-9-9-4z',
  mic: 'M12 1a3 3 0 0 0-3 3v8a3 3 0 0 0 6 0V4a3 3 0 0 0-3-3zM19 10v2a7 7 0 0 1-14 0v-2M12 19v4M8 23h8',
  edit: 'M12 20h9M16.5 3.5a2.12 2.12 0 0 1 3 3L7 19l-4 1 1-4z',
  end: 'M18.36 6.64a9 9 0 1 1-12.73 0M12 2v10',
};

const iconButton = (cls: string, testid: string, label: string, name: keyof typeof PATHS) =>
  h('button', { type: 'button', class: cls, 'data-testid': testid, 'aria-label': label, title: label }, icon(PATHS[name]));

/** False when the page's Permissions-Policy forbids the microphone, or the page is not a secure context. */
export function micAllowed(): boolean {
  const policy = (document as unknown as { featurePolicy?: { allowsFeature(f: string): boolean } }).featurePolicy;
  if (!navigator.mediaDevices?.getUserMedia) return false;
  return !policy || policy.allowsFeature('microphone');
}

/** Builds the panel beside the loader's launcher; the caller attaches it. */
export function buildUi({ cfg, shadow, root, launcher }: Mounted, t: Strings): Ui {
  const { branding: br } = cfg;
  const name = br.display_name || t.title;

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
  // Shown when the browser blocks the agent's audio until the visitor interacts (autoplay policy).
  const playAudio = h('button', { type: 'button', class: 'btn play', 'data-testid': 'anyreach-play-audio', hidden: true }, t.playAudio);

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
      // Closed is invisible but laid out (panel-styles.ts), so that opening it costs no layout.
      'data-closed': true,
    },
    header,
    notice,
    playAudio,
    log,
    quick,
    slot,
    composer,
    powered,
  );

  return { shadow, root, launcher, panel, status, notice, noticeText, retry, playAudio, log, quick, slot, composer, input, send, mic, newConversation, end, close };
}
