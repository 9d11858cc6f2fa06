const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;

const isSpace = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/** Index of the quote that closes the string opening at `open` (a quote preceded by an even run of backslashes). */
function closingQuote(text: string, open: number): number {
  let at = open;
  for (;;) {
    at = text.indexOf('"', at + 1);
    if (at < 0) return text.length;
    let backslashes = 0;
    for (let k = at - 1; text.charCodeAt(k) === BACKSLASH; k--) backslashes++;
    if (backslashes % 2 === 0) return at;
  }
}

/**
 * The first key that appears twice in one object, at any depth, compared after unescaping ("a" and
 * "\u0061" are the same key); undefined when there is none. JSON.parse silently keeps the last value.
 *
 * Only for text JSON.parse has already accepted: then a string followed by a colon is a key and every
 * other string is a value, so one pass suffices. Strings are skipped with indexOf, so the long Base64
 * fields of an XKS body cost a memchr, not a loop iteration per character.
 */
export function findDuplicateKey(text: string): string | undefined {
  // One entry per open container: the keys seen so far in an object, null in an array.
  const open: (Set<string> | null)[] = [];
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = closingQuote(text, i);
      const keys = open[open.length - 1];
      if (keys) {
        let j = end + 1;
        while (isSpace(text.charCodeAt(j))) j++;
        if (text.charCodeAt(j) === COLON) {
          const raw = text.slice(i + 1, end);
          const key = raw.includes('\\') ? (JSON.parse(`"${raw}"`) as string) : raw;
          if (keys.has(key)) return key;
          keys.add(key);
          i = j + 1;
          continue;
        }
      }
      i = end + 1;
      continue;
    }
    if (c === OPEN_OBJECT) open.push(new Set());
    else if (c === OPEN_ARRAY) open.push(null);
    else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) open.pop();
    i++;
  }
  return undefined;
}

/** Keys in JSON text JSON.parse has accepted: there, a string followed by a colon is a key, and only then. */
function keysInText(text: string): number {
  let keys = 0;
  for (let at = text.indexOf('"'); at >= 0; ) {
    const end = closingQuote(text, at);
    let j = end + 1;
    while (isSpace(text.charCodeAt(j))) j++;
    if (text.charCodeAt(j) === COLON) keys++;
    at = text.indexOf('"', j);
  }
  return keys;
}

/** Own keys of every object in a parsed JSON value, at any depth (iteratively: JSON.parse accepts deep nesting). */
function keysInValue(value: unknown): number {
  let keys = 0;
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const v = pending.pop();
    if (typeof v !== 'object' || v === null) continue;
    if (Array.isArray(v)) {
      for (const item of v) pending.push(item);
      continue;
    }
    // Own values only (for...in would also count what an object inherits): as fast, and deaf to a polluted prototype.
    const values = Object.values(v);
    keys += values.length;
    for (let i = 0; i < values.length; i++) pending.push(values[i]);
  }
  return keys;
}

/**
 * Whether `text` repeats a key in one object, given what JSON.parse made of it. JSON.parse keeps one
 * property per distinct key, so a repeat (and the value it overwrote) leaves fewer keys in `parsed` than
 * the text has; counting both costs less than keeping the keys of each object, and findDuplicateKey
 * names the key only when there is one.
 */
export function hasDuplicateKey(text: string, parsed: unknown): boolean {
  return keysInText(text) !== keysInValue(parsed);
}
