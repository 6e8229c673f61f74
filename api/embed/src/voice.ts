import type { Strings } from './i18n';
import type { LiveSession } from './types';

export interface Mic {
  /** Push-to-talk: talk while held. Open mic: ignored. */
  hold(on: boolean): void;
  /** Switches the microphone off (panel closed, conversation over). */
  release(): void;
}

/**
 * Wires the microphone button. The wanted state is recorded at once and the
 * room catches up one switch at a time, so a quick press-and-release never
 * leaves the microphone on.
 */
export function bindMic(btn: HTMLButtonElement, pushToTalk: boolean, t: Strings, session: () => LiveSession | null, allowed: (ok: boolean) => void): Mic {
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
      const s = session();
      const target = want;
      const ok = !!s && (await s.setMic(target));
      if (s && target) allowed(ok);
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
    want = v;
    if (v) session()?.startAudio();
    void sync();
  };

  if (pushToTalk) {
    btn.addEventListener('pointerdown', (e) => {
      if (e.button !== 0) return;
      btn.setPointerCapture?.(e.pointerId);
      set(true);
    });
    for (const ev of ['pointerup', 'pointercancel', 'lostpointercapture']) btn.addEventListener(ev, () => set(false));
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
    release: () => set(false),
  };
}
