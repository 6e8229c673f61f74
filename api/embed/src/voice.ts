import type { Strings } from './i18n';
import type { LiveRoom } from './types';

export interface Mic {
  /** Push-to-talk: talk while held. Open mic: ignored. */
  hold(on: boolean): void;
  /** Switches the microphone off (panel closed, conversation over). */
  release(): void;
  /** A room was opened (joined or not yet): switch the microphone the way the visitor wants it by now. */
  resync(): void;
  /** A fresh room replaced the old one: the microphone is off in it until switched on again. */
  reopen(): void;
}

export interface MicHooks {
  /** The conversation's room, if one is open (joined or not: before joining, it records for the agent). */
  session(): LiveRoom | null;
  /** A press with no room yet: the conversation starts (the press is the visitor's first interaction). */
  start(): void;
  /** The page forbids the microphone: explain, start nothing. Answers true when it does. */
  blocked(): boolean;
  /** Whether switching it on worked (false: denied or no device). */
  allowed(ok: boolean): void;
}

/**
 * Wires the microphone button. The wanted state is recorded at once and the
 * room catches up one switch at a time, so a quick press-and-release never
 * leaves the microphone on. Nothing asks for the microphone before a press.
 */
export function bindMic(btn: HTMLButtonElement, pushToTalk: boolean, t: Strings, hooks: MicHooks): Mic {
  let want = false;
  let on = false;
  let busy = false;

  const show = () => {
    btn.toggleAttribute('data-live', on);
    btn.setAttribute('aria-pressed', String(on));
    if (!pushToTalk) btn.setAttribute('aria-label', on ? t.micOff : t.micOn);
  };

  const sync = async () => {
    if (busy) return;
    busy = true;
    while (on !== want) {
      const s = hooks.session();
      if (!s) break; // no room yet: resync() catches up once there is one
      const target = want;
      const ok = await s.setMic(target);
      if (target) hooks.allowed(ok);
      if (!ok) {
        want = on = false;
        break;
      }
      on = target;
      show();
    }
    busy = false;
    show();
  };

  const set = (v: boolean) => {
    if (v && hooks.blocked()) return;
    want = v;
    const s = hooks.session();
    if (v && !s) hooks.start();
    if (v) s?.startAudio();
    void sync();
  };

  if (pushToTalk) {
    btn.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      btn.setPointerCapture?.(e.pointerId);
      set(true);
    });
    for (const ev of ['pointerup', 'pointercancel', 'lostpointercapture']) btn.addEventListener(ev, () => want && set(false));
    btn.addEventListener('keydown', (e) => {
      if ((e.key === ' ' || e.key === 'Enter') && !e.repeat) set(true);
      if (e.key === ' ' || e.key === 'Enter') e.preventDefault();
    });
    btn.addEventListener('keyup', (e) => {
      if (e.key === ' ' || e.key === 'Enter') set(false);
    });
    btn.addEventListener('contextmenu', (e) => e.preventDefault());
  } else {
    btn.addEventListener('click', () => set(!want));
  }

  return {
    hold: (v) => pushToTalk && set(v),
    release: () => {
      want = false;
      void sync();
    },
    resync: () => void sync(),
    reopen: () => {
      on = false;
      show();
      void sync();
    },
  };
}
