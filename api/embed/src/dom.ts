// DOM building without innerHTML, so that host pages enforcing Trusted Types
// still work and nothing from the config or the agent is ever parsed as markup.

type Attr = string | number | boolean | null | undefined;
type Child = Node | string | null | undefined | false;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Record<string, Attr> | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const k in attrs || {}) {
    const v = attrs![k];
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';

/** A decorative stroke icon from its 24 x 24 path data (each bundle keeps the paths it draws). */
export function icon(d: string): SVGSVGElement {
  const svg = document.createElementNS(SVG, 'svg');
  const path = document.createElementNS(SVG, 'path');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  path.setAttribute('d', d);
  svg.append(path);
  return svg;
}

/**
 * Adds `css` to a shadow root as a constructed stylesheet (adoptedStyleSheets): a page whose
 * Content-Security-Policy has no 'unsafe-inline' in style-src blocks <style> and style="", not
 * these. Only where constructed sheets do not exist (old browsers) does it fall back to <style>.
 */
export function adopt(shadow: ShadowRoot, css: string): void {
  if ('adoptedStyleSheets' in Document.prototype && 'replaceSync' in CSSStyleSheet.prototype) {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    shadow.adoptedStyleSheets = [...shadow.adoptedStyleSheets, sheet];
  } else {
    shadow.append(h('style', null, css));
  }
}
