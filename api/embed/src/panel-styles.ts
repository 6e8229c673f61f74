// The panel's styles, adopted into the widget's shadow root when the panel chunk loads.

export const PANEL_CSS = `
.panel{position:fixed;bottom:88px;right:20px;width:380px;max-width:calc(100vw - 40px);height:640px;max-height:calc(100vh - 108px);display:flex;flex-direction:column;background:var(--bg);color:var(--fg);border:1px solid var(--bd);border-radius:16px;box-shadow:var(--sh);overflow:hidden;animation:in .18s ease-out}
@keyframes in{from{opacity:0;transform:translateY(12px)}}
.panel[data-closed]{visibility:hidden;animation:none}
.left .panel{right:auto;left:20px}
header{display:flex;align-items:center;gap:10px;padding:10px 8px 10px 16px;background:var(--p);color:var(--op)}
header img{width:36px;height:36px;border-radius:50%;object-fit:cover;background:#fff}
.hd{flex:1;min-width:0}
h2{margin:0;font-size:16px;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.status:empty{display:none}
.status{margin:0;font-size:12px;display:flex;gap:6px;align-items:center}
.status::before{content:"";width:8px;height:8px;border-radius:50%;background:currentColor;opacity:.5;flex:none}
.status[data-state=connected]::before{background:#22c55e;opacity:1}
.status[data-state=unavailable]::before,.status[data-state=mic_denied]::before{background:#f59e0b;opacity:1}
.ib{width:36px;height:36px;border-radius:8px;display:inline-flex;align-items:center;justify-content:center;flex:none}
.ib:hover{background:rgba(127,127,127,.25)}
.notice{margin:12px 16px 0;padding:10px 12px;border-radius:10px;background:var(--sf);display:flex;gap:8px;align-items:center;justify-content:space-between;font-size:14px}
.log{flex:1;overflow-y:auto;padding:16px;display:flex;flex-direction:column;gap:8px;overscroll-behavior:contain}
.msg{max-width:85%;padding:8px 12px;border-radius:14px;white-space:pre-wrap;overflow-wrap:anywhere;background:var(--sf);align-self:flex-start}
.msg.visitor{align-self:flex-end;background:var(--p);color:var(--op)}
.msg.system{align-self:center;background:none;color:var(--mu);font-size:13px;text-align:center;padding:2px}
.msg.failed::after{content:" ⚠"}
.undelivered{display:block;margin-top:6px;font-size:12px}.undelivered .btn{margin-inline-start:6px;padding:4px 10px;background:var(--bg);color:var(--fg);border:1px solid var(--bd)}
.msg[data-delivery=held]{outline:1px dashed var(--mu);outline-offset:2px}
.quick{display:flex;gap:8px;padding:0 16px 8px;flex-wrap:wrap}
.chip{border:1px solid var(--p);border-radius:16px;padding:5px 12px;font-size:14px;background:var(--bg);text-align:left}
.chip:hover{background:var(--sf)}
.history{padding:8px 16px 0;border-bottom:1px solid var(--bd)}
.history h3{margin:0 0 4px;font-size:13px;font-weight:600}
.history ul{list-style:none;margin:0;padding:0 0 8px;display:flex;flex-direction:column;gap:4px}
.past{width:100%;min-height:24px;text-align:left;border:1px solid var(--bd);border-radius:8px;padding:4px 8px;background:var(--bg);font-size:13px}
.past:hover{background:var(--sf)}
.past .tag{margin-left:6px;opacity:.7;font-size:12px}
.slot{overflow-y:auto;max-height:70%;flex:none}
.slot:empty{display:none}
.card{margin:0 16px 12px;padding:12px;border:1px solid var(--bd);border-radius:12px;display:flex;flex-direction:column;gap:10px;background:var(--bg)}
.card h3,.card p{margin:0;font-size:15px}
label{display:flex;flex-direction:column;gap:4px;font-size:13px;color:var(--mu)}
label.cb{flex-direction:row;align-items:center;gap:8px;color:var(--fg);font-size:14px}
input,textarea,select{font:inherit;font-size:16px;color:var(--fg);background:var(--bg);border:1px solid var(--bd);border-radius:8px;padding:8px 10px;width:100%;margin:0;min-width:0}
input[type=checkbox]{width:24px;height:24px;padding:0;accent-color:var(--p);flex:none}
.btn{background:var(--p);color:var(--op);border-radius:8px;padding:9px 14px;font-weight:600}
.play{margin:8px 16px 0}
.link{color:var(--mu);text-decoration:underline;padding:6px;min-height:32px}
.err{color:var(--er);font-size:13px;margin:0}
.row{display:flex;gap:8px;justify-content:flex-end;align-items:center;flex-wrap:wrap}
.opts{display:flex;gap:6px;flex-wrap:wrap}
.opt{min-width:44px;height:44px;border:1px solid var(--bd);border-radius:10px;display:inline-flex;align-items:center;justify-content:center;gap:6px;padding:0 10px}
.opt[aria-pressed=true]{border-color:var(--p);background:var(--p);color:var(--op)}
.opt[data-on] svg{fill:currentColor}
.composer{display:flex;align-items:flex-end;gap:6px;padding:10px 12px;border-top:1px solid var(--bd)}
.composer textarea{flex:1;resize:none;height:42px;max-height:120px;border-radius:21px;padding:9px 14px;line-height:1.4}
.send,.mic{width:42px;height:42px;border-radius:50%;flex:none;display:inline-flex;align-items:center;justify-content:center}
.send{background:var(--p);color:var(--op)}
.mic{background:var(--sf);touch-action:none;user-select:none;-webkit-user-select:none;-webkit-touch-callout:none}
.mic[aria-disabled=true]{opacity:.6;cursor:not-allowed}
.mic[data-live]{background:var(--a);color:var(--oa);box-shadow:0 0 0 4px rgba(14,165,233,.3)}
.pb{text-align:center;font-size:11px;color:var(--mu);padding:0 0 8px;display:flex;gap:6px;justify-content:center;align-items:center}
.pb img{height:14px}
@media (max-width:480px){.panel{top:0;left:0!important;right:0;bottom:0;width:100%;max-width:none;height:100%;max-height:none;border-radius:0;border:0}}
`;
