// Which language the widget speaks, decided by the loader (it labels the launcher before the
// panel chunk, which holds the panel's words in i18n.ts, is loaded).

const OPEN: Record<string, string> = { en: 'Open chat', es: 'Abrir chat', de: 'Chat öffnen', fr: 'Ouvrir le chat' };

export interface Locale {
  /** The BCP 47 tag to speak (the page sends it as the visitor's locale). */
  tag: string;
  /** Its language, for which the widget has words ('en' when it has none). */
  lang: string;
  /** The launcher's default label in that language. */
  open: string;
}

/** The config's locale, else the browser's first supported one, else English. */
export function chooseLocale(configured: string | null): Locale {
  const wanted = configured ? [configured] : [...(navigator.languages || []), navigator.language];
  for (const tag of wanted) {
    const lang = (tag || '').toLowerCase().split(/[-_]/)[0];
    if (OPEN[lang]) return { tag, lang, open: OPEN[lang] };
  }
  return { tag: configured || navigator.language || 'en', lang: 'en', open: OPEN.en };
}
