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

describe('route cache', () => {
  test('a path seen before routes the same, and paths that are no XKS path stay unrouted however often they come', () => {
    const url = '/cache-test/kms/xks/v1/keys/k-1/encrypt';
    const first = route(url);
    expect(route(url)).toEqual(first);
    expect(route(url)).toEqual({ kind: 'xks', pathPrefix: '/cache-test', operation: 'Encrypt', keyId: 'k-1' });
    for (let i = 0; i < 3; i++) expect(route('/cache-test/kms/xks/v1/keys/k-1/sign')).toEqual({ kind: 'invalid' });
    const long = `/${'a'.repeat(600)}/kms/xks/v1/health`;
    expect(route(long)).toEqual({ kind: 'xks', pathPrefix: `/${'a'.repeat(600)}`, operation: 'GetHealthStatus', keyId: undefined });
    expect(route(long)).toEqual(route(long));
  });

  test('stays correct past its size bound', () => {
    for (let i = 0; i < 5000; i++) expect(route(`/p/kms/xks/v1/keys/key-${i}/decrypt`)).toMatchObject({ keyId: `key-${i}` });
    expect(route('/p/kms/xks/v1/keys/key-7/decrypt')).toMatchObject({ keyId: 'key-7', operation: 'Decrypt' });
  });
});
