import { dueReason } from '../../src/admin/rotation';
import { chainDigest, GENESIS } from '../../src/audit/log';
import { verifyAuditText } from '../../src/audit/verify';
import { buildRuntimeConfig, ConfigError } from '../../src/config/load';
import { configSchema, KeyConfig } from '../../src/config/schema';
import { Claim, judgeClaims, Mark } from '../../src/governance/epochs';
import { GovernanceError } from '../../src/governance/quorum';
import { maxUsage } from '../../src/governance/usage';
import { canonicalJson } from '../../src/governance/canonical';
import { generateApproverKey, parsePublicKey, signApproval, verifyApproval } from '../../src/governance/signatures';
import { governanceRootHash, groupStateHash } from '../../src/governance/state';

const DAY = 86_400_000;
const at = (days: number) => new Date(Date.UTC(2026, 0, 1) + days * DAY);

describe('canonical JSON', () => {
  it('sorts keys at every depth, drops undefined, keeps array order, no whitespace', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, 1], c: undefined, e: 'x' } })).toBe('{"a":{"d":[3,1],"e":"x"},"b":1}');
    expect(canonicalJson({ a: 1, b: 2 })).toBe(canonicalJson({ b: 2, a: 1 }));
    expect(() => canonicalJson({ n: NaN })).toThrow(/non-finite/);
  });
});

describe('group state hash', () => {
  const config = (groupExtra: object, ksGroups = ['g']) =>
    configSchema.parse({
      server: { insecurePlainHttp: true },
      hsm: { modulePath: '/x.so', tokenLabel: 't', pin: { value: '1' } },
      keyStores: [{ name: 'ks', credentials: [{ accessKeyId: 'A'.repeat(20), secretAccessKey: { value: 'a'.repeat(43) } }], groups: ksGroups }],
      groups: [{ name: 'g', policy: { rules: [] }, keys: [{ id: 'k', label: 'l' }], ...groupExtra }],
    });
  const hashOf = (c: ReturnType<typeof config>) => groupStateHash(c, c.groups[0]!);

  it('ignores defaults written out and the approvals, sees every security-relevant change', () => {
    const base = hashOf(config({}));
    expect(hashOf(config({ status: 'ENABLED' }))).toBe(base);
    expect(hashOf(config({ approvals: [{ approver: 'a', signature: 'A'.repeat(86) + '==' }] }))).toBe(base);
    expect(hashOf(config({ status: 'DISABLED' }))).not.toBe(base);
    expect(hashOf(config({ keys: [{ id: 'k', label: 'other' }] }))).not.toBe(base);
    expect(hashOf(config({ policy: { rules: [{ id: 'r', effect: 'allow' }] } }))).not.toBe(base);
    expect(hashOf(config({}, []))).not.toBe(base); // key store assignment
  });

  it('the governance root covers administrators and quorums', () => {
    const k = generateApproverKey();
    const withAdmin = (role: string, approvals?: number) => {
      const c = config(approvals ? { quorum: { approvals, approvers: ['a'] } } : {});
      c.governance.administrators = [{ name: 'a', role: role as 'approver', publicKey: k.publicKey }];
      return governanceRootHash(c);
    };
    expect(withAdmin('approver')).not.toBe(withAdmin('administrator'));
    expect(withAdmin('approver', 1)).not.toBe(withAdmin('approver'));
  });

  it('an Ed25519 approval verifies for its group and state only', () => {
    const k = generateApproverKey();
    const pub = parsePublicKey(k.publicKey);
    const sig = signApproval(k.privateKeyPem, 'g', 'ab'.repeat(32));
    expect(verifyApproval(pub, 'g', 'ab'.repeat(32), sig)).toBe(true);
    expect(verifyApproval(pub, 'h', 'ab'.repeat(32), sig)).toBe(false);
    expect(verifyApproval(pub, 'g', 'cd'.repeat(32), sig)).toBe(false);
    expect(verifyApproval(parsePublicKey(generateApproverKey().publicKey), 'g', 'ab'.repeat(32), sig)).toBe(false);
  });
});

describe('rotation due', () => {
  const key = (rotation: KeyConfig['rotation'], createdDay?: number): KeyConfig => ({
    id: 'k',
    usage: ['ENCRYPT', 'DECRYPT'],
    status: 'ENABLED',
    versions: [{ version: 1, label: 'l1', ...(createdDay === undefined ? {} : { createdAt: at(createdDay).toISOString() }) }],
    rotation,
  });

  it('falls due at startAt + k*everyDays once a point has passed since the version was made', () => {
    const policy = { everyDays: 30, startAt: at(0).toISOString() };
    expect(dueReason(key(policy, 5), new Map(), at(29))).toBeUndefined();
    expect(dueReason(key(policy, 5), new Map(), at(30))).toMatch(/scheduled rotation at 2026-01-31/);
    expect(dueReason(key(policy, 31), new Map(), at(59))).toBeUndefined();
    expect(dueReason(key(policy, -3), new Map(), at(0))).toMatch(/scheduled/); // made before the start
    expect(dueReason(key({ everyDays: 10 }, 0), new Map(), at(9))).toBeUndefined();
    expect(dueReason(key({ everyDays: 10 }, 0), new Map(), at(10))).toMatch(/scheduled/);
  });

  it('falls due after maxEncryptions on the current version', () => {
    const k = key({ maxEncryptions: 100 }, 0);
    expect(dueReason(k, new Map([['l1', 99]]), at(1))).toBeUndefined();
    expect(dueReason(k, new Map([['l1', 100]]), at(1))).toMatch(/100 encryptions with version 1/);
    expect(dueReason({ ...k, deletion: { requestedAt: at(0).toISOString(), notBefore: at(7).toISOString() } }, new Map([['l1', 100]]), at(1))).toBeUndefined();
  });
});

describe('epochs: what the proxy accepts against the newest recorded state', () => {
  const s = (c: string) => c.repeat(64);
  const later = new Date(Date.UTC(2026, 0, 10)).toISOString();
  const claim = (epoch: number, state: string, more: Partial<Claim> = {}): Claim => ({ group: 'g', epoch, state, expiresAt: later, ...more });
  const marks: Mark[] = [
    { group: 'g', epoch: 3, state: s('a') },
    { group: 'g', epoch: 4, state: s('b') },
    { group: 'other', epoch: 9, state: s('f') },
  ];
  const now = at(5);

  it('accepts the recorded newest state as it is, and a first state (an upgrade: epoch 0) to be recorded', () => {
    expect(judgeClaims([claim(4, s('b'))], marks, now)).toEqual([]);
    expect(judgeClaims([{ group: 'new', epoch: 0, state: s('c') }], marks, now)).toEqual([{ group: 'new', epoch: 0, state: s('c') }]);
  });

  it('refuses an older epoch (rollback) and another state at the newest epoch (fork)', () => {
    expect(() => judgeClaims([claim(3, s('a'))], marks, now)).toThrow(/group "g": state epoch 3 is older than the newest accepted \(epoch 4\)/);
    expect(() => judgeClaims([claim(0, s('a'))], marks, now)).toThrow(GovernanceError);
    expect(() => judgeClaims([claim(4, s('c'))], marks, now)).toThrow(/state cccccccccccccccc\.\.\. is not the one accepted at epoch 4/);
  });

  it('a newer state: accepted before its approvals expire, as the next epoch naming the newest state', () => {
    expect(judgeClaims([claim(5, s('c'), { previous: s('b') })], marks, now)).toHaveLength(1);
    expect(() => judgeClaims([claim(5, s('c'), { previous: s('a') })], marks, now)).toThrow(/follows aaaaaaaaaaaaaaaa\.\.\., not the state accepted at epoch 4/);
    expect(() => judgeClaims([claim(5, s('c'))], marks, now)).toThrow(/state epoch 5 follows no recorded state, not the state accepted at epoch 4/);
    // Further ahead: its chain back cannot be checked, so a branch forked from an older state would pass.
    expect(() => judgeClaims([claim(7, s('c'), { previous: s('e') })], marks, now)).toThrow(/state epoch 7 is not the next after the newest accepted \(epoch 4\)/);
    expect(() => judgeClaims([claim(6, s('c'), { previous: s('b') })], marks, now)).toThrow(GovernanceError);
    const expired = () => judgeClaims([claim(5, s('c'), { previous: s('b'), expiresAt: at(4).toISOString() })], marks, now);
    expect(expired).toThrow(/approvals of state epoch 5 expired at 2026-01-05T00:00:00.000Z before the proxy first accepted it/);
    try {
      expired();
    } catch (e) {
      expect((e as GovernanceError).reason).toBe('expired');
    }
    // Once recorded (at apply, or by a proxy), the same state is accepted after expiry: restarts keep working.
    expect(judgeClaims([claim(4, s('b'), { expiresAt: at(1).toISOString() })], marks, now)).toEqual([]);
  });
});

describe('one HSM key, one owner', () => {
  const base = (groups: object[], administrators: object[] = [{ name: 'a', role: 'auditor', publicKey: generateApproverKey().publicKey }]) => ({
    server: { insecurePlainHttp: true },
    hsm: { modulePath: '/x.so', tokenLabel: 't', pin: { value: '1' }, healthKeyLabel: 'health' },
    keyStores: [{ name: 'ks', credentials: [{ accessKeyId: 'A'.repeat(20), secretAccessKey: { value: 'a'.repeat(43) } }], groups: ['g', 'h'] }],
    governance: { administrators },
    groups,
  });
  const group = (name: string, keys: object[]) => ({ name, policy: { rules: [] }, keys });
  const refusal = (doc: object): ConfigError => {
    try {
      buildRuntimeConfig(doc);
    } catch (e) {
      return e as ConfigError;
    }
    throw new Error('accepted');
  };
  const shadow = (administrators?: object[]) => base([group('g', [{ id: 'k', label: 'L' }]), group('h', [{ id: 'shadow', label: 'L' }])], administrators);

  it('refuses a second entry naming a label or CKA_ID, in any group or version, naming both entries', () => {
    expect(refusal(shadow()).message).toBe(
      'refused by governance: HSM key "L" is named by key "shadow" (group "h") version 1 and by key "k" (group "g") version 1: an HSM key belongs to one key entry',
    );
    expect(refusal(shadow()).governance).toEqual({ reason: 'key-owner', group: 'h' });
    expect(() => buildRuntimeConfig(base([group('g', [{ id: 'k', versions: [{ version: 1, label: 'L' }, { version: 2, label: 'L' }] }])]))).toThrow(/key "k" \(group "g"\) version 2 and by key "k" \(group "g"\) version 1/);
    expect(() =>
      buildRuntimeConfig(base([group('g', [{ id: 'k', versions: [{ version: 1, label: 'L', objectId: 'ab01' }] }]), group('h', [{ id: 'x', versions: [{ version: 1, label: 'M', objectId: 'ab01' }] }])])),
    ).toThrow(/HSM key with CKA_ID ab01 is named by key "x"/);
    expect(() => buildRuntimeConfig(base([group('g', [{ id: 'k', label: 'health' }])]))).toThrow(/HSM key "health" is named by key "k" \(group "g"\) version 1 and by the health check of HSM "t"/);
  });

  it('holds without governance too: the same refusal, as an invalid configuration (no governance reason)', () => {
    const e = refusal(shadow([]));
    expect(e.message).toBe('invalid configuration: HSM key "L" is named by key "shadow" (group "h") version 1 and by key "k" (group "g") version 1: an HSM key belongs to one key entry');
    expect(e.governance).toBeUndefined();
    expect(refusal(base([group('g', [{ id: 'k', label: 'health' }])], [])).message).toMatch(/HSM key "health" is named by key "k" \(group "g"\) version 1 and by the health check of HSM "t"/);
  });

  it('compares labels as the HSM receives them: a lone surrogate is U+FFFD in UTF-8', () => {
    const doc = base([group('g', [{ id: 'k', label: 'key-\uFFFD' }]), group('h', [{ id: 'shadow', label: 'key-\uD800' }])], []);
    expect(refusal(doc).message).toMatch(/is named by key "shadow" \(group "h"\) version 1 and by key "k"/);
  });
});

describe('audit chains named by file', () => {
  const lines = (n: number) => {
    let prev = GENESIS;
    const out: string[] = [];
    for (let seq = 1; seq <= n; seq++) {
      const body = JSON.stringify({ seq, time: 't', event: 'x', prev });
      const hash = chainDigest(prev, body);
      out.push(`${body.slice(0, -1)},"hash":"${hash}"}`);
      prev = hash;
    }
    return out;
  };
  const head = (text: string[], chain: string) => {
    const r = verifyAuditText(text.join('\n'), { chain });
    if (!r.ok) throw new Error(r.reason);
    return r.chains[0]!;
  };

  it('a plain file is checked against its own anchors only; an anchored chain that lost its tail or all its lines fails', () => {
    const log = lines(5);
    const admin = lines(3);
    const anchors = [head(log, 'audit.log'), head(admin, 'audit.log.admin')].map(({ chain, seq, hash }) => ({ chain, seq, hash }));
    expect(anchors.map((a) => a.chain)).toEqual(['audit.log', 'audit.log.admin']);
    expect(verifyAuditText(log.join('\n'), { chain: 'audit.log', anchors })).toMatchObject({ ok: true, anchorsChecked: 1 });
    expect(verifyAuditText(admin.join('\n'), { chain: 'audit.log.admin', anchors })).toMatchObject({ ok: true, anchorsChecked: 1 });
    expect(verifyAuditText(log.slice(0, 4).join('\n'), { chain: 'audit.log', anchors })).toMatchObject({ ok: false, chain: 'audit.log', reason: 'chain audit.log ends at seq 4 but was anchored at seq 5: its last lines are missing' });
    expect(verifyAuditText('', { chain: 'audit.log.admin', anchors })).toMatchObject({ ok: false, reason: 'anchored chain audit.log.admin has no lines in the input' });
    // Unnamed (stdin) lines have their own name, which no file's anchor matches.
    expect(verifyAuditText(log.join('\n'), { anchors })).toMatchObject({ ok: true, anchorsChecked: 0, chains: [{ chain: '(stdin)' }] });
  });
});

describe('usage counts from several sources', () => {
  it('takes per key version the largest: a source can lag, deleting one cannot lower the count', () => {
    expect(maxUsage(new Map([['a', 5], ['b', 1]]), new Map([['a', 3], ['c', 2]]), new Map())).toEqual(new Map([['a', 5], ['b', 1], ['c', 2]]));
  });
});

describe('the governance root and its approval lifetime', () => {
  it('approvalTtlHours is part of the root only when set, so roots pinned before it existed still match', () => {
    const c = configSchema.parse({
      server: { insecurePlainHttp: true },
      hsm: { modulePath: '/x.so', tokenLabel: 't', pin: { value: '1' } },
      keyStores: [{ name: 'ks', credentials: [{ accessKeyId: 'A'.repeat(20), secretAccessKey: { value: 'a'.repeat(43) } }] }],
    });
    const before = governanceRootHash(c);
    expect(governanceRootHash({ ...c, governance: { ...c.governance, approvalTtlHours: undefined } })).toBe(before);
    expect(governanceRootHash({ ...c, governance: { ...c.governance, approvalTtlHours: 24 } })).not.toBe(before);
  });
});
