// Where the widget lives in the page: the last child of <html>, outside <body>, so that a single-page
// app replacing or re-rendering <body>, or a transform on <body> (which would capture our fixed
// positioning), cannot take it away. Put back if the page removes it anyway.

const MAX_REMOUNTS = 20; // a page that keeps removing us wins in the end, rather than a loop of mutations

export function keepMounted(host: HTMLElement): void {
  let remounts = 0;
  const observer = new MutationObserver(() => {
    if (host.isConnected) return;
    watch();
    if (remounts++ < MAX_REMOUNTS) document.documentElement.append(host);
  });
  // The document itself (its <html> replaced) and the current <html> (our element removed).
  const watch = () => {
    observer.disconnect();
    observer.observe(document, { childList: true });
    observer.observe(document.documentElement, { childList: true });
  };
  document.documentElement.append(host);
  watch();
}
