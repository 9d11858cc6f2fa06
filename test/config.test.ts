import { buildRuntimeConfig, ConfigError } from '../src/config/load';
import type { ProxyConfigInput } from '../src/config/schema';

const base = (): ProxyConfigInput => ({
  server: { insecurePlainHttp: true },
  hsm: { modulePath: '/x.so', tokenLabel: 't', pin: { value: '1234' } },
  keyStores: [
    {
      name: 'a',
      pathPrefix: '/a',
      credentials: [{ accessKeyId: 'AAAAAAAAAAAAAAAAAAAAAAAAAA', secretAccessKey: { value: 'FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE' } }],
      groups: ['g1'],
    },
  ],
  groups: [{ name: 'g1', policy: { rules: [{ id: 'allow-all', effect: 'allow' }] }, keys: [{ id: 'k1', label: 'l1' }] }],
});

function errorOf(doc: unknown, env: NodeJS.ProcessEnv = {}): string {
  try {
    buildRuntimeConfig(doc, env);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('config was accepted');
}

describe('configuration validation', () => {
  it('accepts a minimal config and fills defaults', () => {
    const rt = buildRuntimeConfig(base(), {});
    expect(rt.config.limits.deadlineMs).toBe(200);
    expect(rt.keyStores.get('/a')?.keys.get('k1')?.current).toEqual({ version: 1, label: 'l1' });
  });

  it.each<[string, (c: ProxyConfigInput) => unknown, string]>([
    ['bad access key id', (c) => (c.keyStores[0]!.credentials[0]!.accessKeyId = 'lowercase'), 'keyStores[0].credentials[0].accessKeyId'],
    ['bad key id', (c) => (c.groups![0]!.keys![0]!.id = 'a/b'), 'groups[0].keys[0].id'],
    ['unknown group', (c) => (c.keyStores[0]!.groups = ['nope']), 'keyStores[0].groups[0]: no group named "nope"'],
    ['duplicate rule ids', (c) => c.groups![0]!.policy.rules.push({ id: 'allow-all', effect: 'deny' }), 'groups[0].policy.rules'],
    ['bad account', (c) => c.groups![0]!.policy.rules.push({ id: 'x', effect: 'deny', keyAccounts: ['12'] }), 'keyAccounts[0]'],
    [
      'a key id in two groups of one key store',
      (c) => {
        c.groups!.push({ name: 'g2', policy: { rules: [] }, keys: [{ id: 'k1', label: 'other' }] });
        c.keyStores[0]!.groups!.push('g2');
      },
      'is in both group',
    ],
    ['bad prefix', (c) => (c.keyStores[0]!.pathPrefix = '/a/'), 'keyStores[0].pathPrefix'],
    // A field the schema does not have, as a mistyped YAML key gives one.
    ['unknown field', (c) => Object.assign(c.hsm!, { moduel: 'x' }), 'hsm'],
    ['no TLS and no explicit plain HTTP', (c) => delete c.server!.insecurePlainHttp, 'server'],
    ['duplicate prefixes', (c) => c.keyStores.push({ ...c.keyStores[0]!, name: 'b' }), 'path prefixes must be unique'],
    ['health cache over a minute', (c) => (c.hsm!.healthCacheMs = 60_000), 'hsm.healthCacheMs'],
    // The HSM AAD stores the AAD length in two bytes.
    ['an AAD limit beyond a uint16', (c) => (c.limits = { maxAadBytes: 65_536 }), 'limits.maxAadBytes'],
  ])('names the field for %s', (_n, mutate, expected) => {
    const c = base();
    mutate(c);
    expect(errorOf(c)).toContain(expected);
  });

  it('accepts the largest AAD limit a uint16 length can describe', () => {
    const c = base();
    c.limits = { maxAadBytes: 65_535 };
    expect(buildRuntimeConfig(c, {}).config.limits.maxAadBytes).toBe(65_535);
  });

  it('checks resolved secrets and says which one is wrong', () => {
    const c = base();
    c.keyStores[0]!.credentials[0]!.secretAccessKey = { value: 'short' };
    expect(errorOf(c)).toContain('keyStores[0].credentials[0].secretAccessKey: must be 43-64 characters');
  });

  it('reports a missing environment variable without printing any secret', () => {
    const c = base();
    c.hsm!.pin = { env: 'NO_SUCH_PIN' };
    expect(errorOf(c)).toBe('hsm.pin: environment variable NO_SUCH_PIN is not set');
  });

  it('refuses an access key id shared by two key stores', () => {
    const c = base();
    c.keyStores.push({ ...c.keyStores[0]!, name: 'b', pathPrefix: '/b' });
    expect(errorOf(c)).toContain('is also used by key store "a"');
  });
});
