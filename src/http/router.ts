import type { Operation } from '../xks/operations';

export type Route =
  | { kind: 'xks'; pathPrefix: string; operation: Operation; keyId: string | undefined }
  /** Under /kms/xks/v1 but no such operation. */
  | { kind: 'invalid' };

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
export function route(url: string): Route {
  if (!URI_CHARS.test(url)) return { kind: 'invalid' };
  const m = XKS_PATH.exec(url);
  if (!m) return { kind: 'invalid' };
  if (m[2]) return { kind: 'xks', pathPrefix: m[1] ?? '', operation: 'GetHealthStatus', keyId: undefined };
  const operation = KEY_OPS[m[4] ?? ''];
  return operation ? { kind: 'xks', pathPrefix: m[1] ?? '', operation, keyId: m[3] } : { kind: 'invalid' };
}
