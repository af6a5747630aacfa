// The client's languages: English and Bahasa Indonesia. Every string a person reads is
// a key in client/i18n/<language>.json (a test fails when a key is missing from either
// file, or when the code uses a key neither has). The language is the one chosen in the
// profile menu (remembered in this browser), else the browser's own when it prefers
// Indonesian, else English.

export const LANGUAGES = [
  { code: 'id', name: 'Bahasa Indonesia', locale: 'id-ID' },
  { code: 'en', name: 'English', locale: 'en-GB' },
];

const STORAGE_KEY = 'ecanteen.language';

let language = 'en';
let strings = {};

/** The language to start in: the remembered choice, else the browser's preference. */
export function preferredLanguage() {
  let saved = null;
  try {
    saved = localStorage.getItem(STORAGE_KEY);
  } catch {
    saved = null;
  }
  if (LANGUAGES.some((l) => l.code === saved)) return saved;
  for (const tag of navigator.languages ?? [navigator.language]) {
    const code = String(tag).toLowerCase().split('-')[0];
    // "in" is the code Indonesian had before ISO 639 changed it to "id".
    if (code === 'id' || code === 'in') return 'id';
    if (code === 'en') return 'en';
  }
  return 'en';
}

/** Loads a language's strings and makes it the current one; `remember` keeps the choice. */
export async function useLanguage(code, { remember = false } = {}) {
  const known = LANGUAGES.find((l) => l.code === code) ?? LANGUAGES[1];
  const response = await fetch(`/i18n/${known.code}.json`, { credentials: 'same-origin' });
  if (!response.ok) throw new Error(`cannot load the ${known.name} strings (${response.status})`);
  strings = await response.json();
  language = known.code;
  document.documentElement.lang = known.code;
  if (remember) {
    try {
      localStorage.setItem(STORAGE_KEY, known.code);
    } catch {
      // Private browsing without storage: the choice lasts for this page only.
    }
  }
  translateStatic(document);
}

export function currentLanguage() {
  return language;
}

function locale() {
  return (LANGUAGES.find((l) => l.code === language) ?? LANGUAGES[1]).locale;
}

/** The string for `key`, with `{name}` placeholders filled from `params`. */
export function t(key, params = {}) {
  const template = strings[key];
  if (template === undefined) return key;
  return template.replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/** Fills the elements of the static page that name a key: text, `aria-label`, `title`. */
export function translateStatic(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
}

/** A whole number as the language writes it: 9.999 or 9,999. */
export function formatNumber(n) {
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: 0 }).format(n);
}

/**
 * Rupiah, as the canteen writes prices in either language: "Rp 9.999" (the rupiah has no
 * minor unit, and its thousands are grouped with dots).
 */
export function formatRupiah(amount) {
  const digits = new Intl.NumberFormat('id-ID', { maximumFractionDigits: 0 }).format(Math.abs(amount));
  return `${amount < 0 ? '−' : ''}Rp ${digits}`;
}

/** A moment, in the reader's time zone and the language's format. */
export function formatTime(iso) {
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(iso));
}

/** A calendar day (YYYY-MM-DD), e.g. "Sab, 28 Nov" / "Sat 28 Nov". */
export function formatDay(day, options = { weekday: 'short', day: 'numeric', month: 'short' }) {
  const [y, m, d] = day.split('-').map(Number);
  return new Intl.DateTimeFormat(locale(), { ...options, timeZone: 'UTC' }).format(new Date(Date.UTC(y, m - 1, d)));
}
