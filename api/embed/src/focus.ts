// Keyboard behaviour of the open panel: a modal dialog keeps Tab inside itself.

const FOCUSABLE = 'button,input,textarea,select,[tabindex="0"]';

function focusables(panel: HTMLElement): HTMLElement[] {
  return [...panel.querySelectorAll<HTMLElement>(FOCUSABLE)].filter(
    (el) => !(el as HTMLButtonElement).disabled && el.getClientRects().length > 0,
  );
}

/** Wraps Tab and Shift+Tab around the panel's first and last controls. */
export function trapTab(e: KeyboardEvent, panel: HTMLElement, shadow: ShadowRoot): void {
  const items = focusables(panel);
  const active = shadow.activeElement as HTMLElement | null;
  const outside = !active || !items.includes(active);
  const edge = e.shiftKey ? items[0] : items[items.length - 1];
  if (outside || active === edge) {
    e.preventDefault();
    (e.shiftKey ? items[items.length - 1] : items[0])?.focus();
  }
}

/** True when the key goes to a control that uses it (typing, pressing a button). */
export function inControl(e: Event): boolean {
  return !!(e.target as HTMLElement).closest?.('input,textarea,select,button');
}
