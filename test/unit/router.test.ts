import { route } from '../../src/http/router';

describe('route', () => {
  it.each([
    ['/kms/xks/v1/health', '', 'GetHealthStatus', undefined],
    ['/kms/xks/v1/keys/k1/metadata', '', 'GetKeyMetadata', 'k1'],
    ['/kms/xks/v1/keys/k1/encrypt', '', 'Encrypt', 'k1'],
    ['/kms/xks/v1/keys/k1/decrypt', '', 'Decrypt', 'k1'],
    ['/tenant/kms/xks/v1/health', '/tenant', 'GetHealthStatus', undefined],
    ['/a/b-c/D_9/kms/xks/v1/keys/k/encrypt', '/a/b-c/D_9', 'Encrypt', 'k'],
    // A prefix may itself look like the XKS path; the last /kms/xks/v1 is the operation's.
    ['/kms/xks/v1/kms/xks/v1/health', '/kms/xks/v1', 'GetHealthStatus', undefined],
  ])('%s', (url, pathPrefix, operation, keyId) => {
    expect(route(url)).toEqual({ kind: 'xks', pathPrefix, operation, keyId });
  });

  it.each(['A-Z.a_z-0.9', '.hidden', 'x'.repeat(128), 'metadata', 'keys'])('takes key id %p as given', (keyId) => {
    expect(route(`/p/kms/xks/v1/keys/${keyId}/decrypt`)).toEqual({ kind: 'xks', pathPrefix: '/p', operation: 'Decrypt', keyId });
  });

  it.each([
    ['an empty target', ''],
    ['the root', '/'],
    ['the API root', '/kms/xks/v1'],
    ['an unknown operation', '/kms/xks/v1/keys/k/sign'],
    ['an operation without a key', '/kms/xks/v1/keys/metadata'],
    ['an empty key id', '/kms/xks/v1/keys//metadata'],
    ['a key id with a slash', '/kms/xks/v1/keys/a/b/metadata'],
    ['health with a key', '/kms/xks/v1/keys/k/health'],
    ['a trailing slash', '/kms/xks/v1/health/'],
    ['a trailing slash after a key operation', '/kms/xks/v1/keys/k/encrypt/'],
    ['a query string', '/kms/xks/v1/health?x=1'],
    ['an empty query string', '/kms/xks/v1/keys/k/encrypt?'],
    ['a fragment', '/kms/xks/v1/health#x'],
    ['another version', '/kms/xks/v2/health'],
    ['upper case', '/KMS/xks/v1/health'],
    ['a missing leading slash', 'kms/xks/v1/health'],
    ['an absolute URL', 'http://host/kms/xks/v1/health'],
    ['a doubled slash in the prefix', '/a//kms/xks/v1/health'],
    ['a doubled leading slash', '//kms/xks/v1/health'],
    ['a dot in the prefix', '/a.b/kms/xks/v1/health'],
    ['a dot-dot prefix segment', '/../kms/xks/v1/health'],
    ['a percent-encoded key id', '/kms/xks/v1/keys/k%31/encrypt'],
    ['a percent-encoded slash', '/kms/xks/v1/keys/a%2Fb/encrypt'],
    ['a space in the key id', '/kms/xks/v1/keys/a b/encrypt'],
    ['a colon in the key id', '/kms/xks/v1/keys/a:b/encrypt'],
    ['a non-ASCII key id', '/kms/xks/v1/keys/\u00e9/encrypt'],
    ['a backslash', '/kms\\xks/v1/health'],
    ['a newline', '/kms/xks/v1/health\n'],
  ])('refuses %s', (_what, url) => {
    expect(route(url)).toEqual({ kind: 'invalid' });
  });
});
