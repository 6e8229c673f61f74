// The loader's styles: the host element, the theme's variables and the launcher; the panel chunk
// adds panel-styles.ts. Both are adopted as constructed stylesheets (dom.ts, adopt). Host-page
// rules cannot reach inside, and the :host rule's !important declarations win over the page's own
// !important ones on our element (for important declarations the inner context wins).

const DARK = 'color-scheme:dark;--bg:#111827;--fg:#f9fafb;--mu:#9ca3af;--bd:#374151;--sf:#1f2937;--er:#fca5a5;';

const HOST =
  ':host{all:initial!important;display:block!important;position:fixed!important;top:0!important;left:0!important;' +
  'width:0!important;height:0!important;overflow:visible!important;visibility:visible!important;opacity:1!important;' +
  'z-index:2147483647!important;pointer-events:auto!important;transform:none!important;filter:none!important;' +
  'clip-path:none!important;contain:none!important;margin:0!important;padding:0!important;border:0!important}';

export const LAUNCHER_CSS = `${HOST}
.root{--p:#2563eb;--op:#fff;--a:#0ea5e9;--oa:#000;--bg:#fff;--fg:#111827;--mu:#4b5563;--bd:#e5e7eb;--sf:#f3f4f6;--er:#b91c1c;--sh:0 12px 40px rgba(0,0,0,.2);
color-scheme:light;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);text-align:left;-webkit-font-smoothing:antialiased}
.root[data-theme=dark]{${DARK}}
@media (prefers-color-scheme:dark){.root[data-theme=auto]{${DARK}}}
*,*::before,*::after{box-sizing:border-box}
[hidden]{display:none!important}
svg{fill:none;stroke:currentColor;stroke-width:2;stroke-linecap:round;stroke-linejoin:round;width:20px;height:20px;flex:none}
button{font:inherit;color:inherit;cursor:pointer;border:0;background:none;margin:0;padding:0;-webkit-tap-highlight-color:transparent}
button[disabled]{cursor:default;opacity:.5}
:focus-visible{outline:2px solid var(--a);outline-offset:2px}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.launcher{position:fixed;bottom:20px;right:20px;min-width:56px;height:56px;border-radius:28px;padding:0 16px;background:var(--p);color:var(--op);display:flex;align-items:center;justify-content:center;gap:8px;font-weight:600;box-shadow:var(--sh);transition:transform .15s}
.launcher:hover{transform:scale(1.05)}
.launcher svg{width:26px;height:26px}
.launcher img{width:32px;height:32px;border-radius:50%;object-fit:cover}
.launcher[data-unread]::after{content:"";position:absolute;top:2px;right:2px;width:14px;height:14px;border-radius:50%;background:var(--a);border:2px solid #fff}
.left .launcher{right:auto;left:20px}
@media (max-width:480px){.open .launcher{display:none}}
@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}
`;
