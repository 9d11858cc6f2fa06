import type { Operation } from '../xks/operations';

export type Route =
  | { readonly kind: 'xks'; readonly pathPrefix: string; readonly operation: Operation; readonly keyId: string | undefined }
  /** Under /kms/xks/v1 but no such operation. */
  | { readonly kind: 'invalid' };

export type XksRoute = Extract<Route, { kind: 'xks' }>;

const XKS_PATH = /^((?:\/[A-Za-z0-9_-]+)*)\/kms\/xks\/v1\/(?:(health)|keys\/([^/]+)\/(metadata|encrypt|decrypt))$/;
const KEY_OPS: Readonly<Partial<Record<string, Operation>>> = { metadata: 'GetKeyMetadata', encrypt: 'Encrypt', decrypt: 'Decrypt' };
/** Characters a valid XKS URI can hold; anything else cannot be one, and keeps SigV4 URI encoding trivial. */
const URI_CHARS = /^[A-Za-z0-9/._-]*$/;

/**
 * Maps a request target to an XKS operation. Query strings are never part of an XKS URI. The key id is
 * only known to be one path segment here; a key operation validates it before it looks the key up
 * (src/xks/operations.ts).
 */
/**
 * Routes already computed, by request target. KMS sends the same few paths over and over (a key store's
 * keys times four operations), so most requests cost a map lookup instead of two regular expressions.
 * Only XKS paths of a plausible length are kept, at most MAX_ROUTES of them (about 1 MB): a client sending
 * endless distinct paths only empties it now and then.
 */
const routes = new Map<string, Route>();
const MAX_ROUTES = 4096;
const MAX_CACHED_URL = 512;

export function route(url: string): Route {
  const known = routes.get(url);
  if (known) return known;
  const r = parseRoute(url);
  if (r.kind === 'xks' && url.length <= MAX_CACHED_URL) {
    if (routes.size >= MAX_ROUTES) routes.clear();
    routes.set(url, r);
  }
  return r;
}

function parseRoute(url: string): Route {
  if (!URI_CHARS.test(url)) return { kind: 'invalid' };
  const m = XKS_PATH.exec(url);
  if (!m) return { kind: 'invalid' };
  if (m[2]) return { kind: 'xks', pathPrefix: m[1] ?? '', operation: 'GetHealthStatus', keyId: undefined };
  const operation = KEY_OPS[m[4] ?? ''];
  return operation ? { kind: 'xks', pathPrefix: m[1] ?? '', operation, keyId: m[3] } : { kind: 'invalid' };
}
