import { expect } from '@jest/globals';
import { createHash } from 'node:crypto';
import { dueReason } from '../../src/admin/rotation';
import { chainDigest, GENESIS } from '../../src/audit/log';
import { verifyAuditText } from '../../src/audit/verify';
import { buildRuntimeConfig, ConfigError } from '../../src/config/load';
import { configSchema, KeyConfig } from '../../src/config/schema';
import { Claim, judgeClaims, Mark } from '../../src/governance/epochs';
import { GovernanceError } from '../../src/governance/quorum';
import { maxUsage } from '../../src/governance/usage';
import { canonicalJson, sha256Hex } from '../../src/governance/canonical';
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

describe('key store identity and secret digests', () => {
  const secret = 'a'.repeat(43);
  const digest = (v: string) => createHash('sha256').update(v).digest('hex');
  const doc = (ks: object = {}, creds: object[] = [{ accessKeyId: 'A'.repeat(20), secretAccessKey: { value: secret } }]) => ({
    server: { insecurePlainHttp: true },
    hsm: { modulePath: '/x.so', tokenLabel: 't', pin: { value: '1' } },
    keyStores: [{ name: 'ks', pathPrefix: '/ks', credentials: creds, groups: ['g'], ...ks }],
    groups: [{ name: 'g', policy: { rules: [] }, keys: [{ id: 'k', label: 'l' }] }],
  });
  const recorded = (ks: object = {}, extra: object[] = []) => doc(ks, [{ accessKeyId: 'A'.repeat(20), secretAccessKey: { value: secret }, secretSha256: digest(secret) }, ...extra]);
  const hashOf = (d: object) => {
    const c = configSchema.parse(d);
    return groupStateHash(c, c.groups[0]!);
  };

  it('a key store without a recorded digest hashes as its name, as before: approvals made before the upgrade stay valid', () => {
    const c = configSchema.parse(doc());
    const { approvals: _a, ...group } = c.groups[0]!;
    expect(hashOf(doc())).toBe(sha256Hex(canonicalJson({ v: 1, group, keyStores: ['ks'] })));
    expect(hashOf(doc({ status: 'DISABLED', regions: ['us-east-1'] }))).toBe(hashOf(doc())); // outside the quorum until recorded
  });

  it('once recorded, its name, prefix, status, regions and credentials are in the state; its quota, dates and secret source are not', () => {
    const base = hashOf(recorded());
    expect(base).not.toBe(hashOf(doc()));
    expect(hashOf(recorded({ status: 'DISABLED' }))).not.toBe(base);
    expect(hashOf(recorded({ regions: ['eu-west-1'] }))).not.toBe(base);
    expect(hashOf(recorded({ pathPrefix: '/other' }))).not.toBe(base);
    expect(hashOf(recorded({}, [{ accessKeyId: 'B'.repeat(20), secretAccessKey: { value: 'b'.repeat(43) } }]))).not.toBe(base);
    expect(hashOf(recorded({}, [{ accessKeyId: 'B'.repeat(20), secretAccessKey: { value: 'b'.repeat(43) }, secretSha256: digest('b'.repeat(43)) }]))).not.toBe(base);
    expect(hashOf(doc({}, [{ accessKeyId: 'A'.repeat(20), secretAccessKey: { value: secret }, secretSha256: digest('c'.repeat(43)) }]))).not.toBe(base);
    expect(hashOf(recorded({ requestsPerSecond: 5 }))).toBe(base);
    expect(hashOf(doc({}, [{ accessKeyId: 'A'.repeat(20), secretAccessKey: { file: '/run/secrets/x' }, secretSha256: digest(secret), createdAt: '2026-01-01T00:00:00Z' }]))).toBe(base);
  });

  /** The document with group g protected (quorum of one), signed, and the env that pins its root. */
  const governed = (d: ReturnType<typeof doc>) => {
    const k = generateApproverKey();
    const g = { ...d.groups[0]!, quorum: { approvals: 1, approvers: ['a'] } };
    const withQuorum = { ...d, governance: { administrators: [{ name: 'a', role: 'approver', publicKey: k.publicKey }] }, groups: [g] };
    const c = configSchema.parse(withQuorum);
    const signed = { ...withQuorum, groups: [{ ...g, approvals: [{ approver: 'a', signature: signApproval(k.privateKeyPem, 'g', groupStateHash(c, c.groups[0]!)) }] }] };
    return { doc: signed, env: { XKS_GOVERNANCE_TRUST: governanceRootHash(c) } };
  };
  const refusal = (d: object, env: NodeJS.ProcessEnv = {}): ConfigError => {
    try {
      buildRuntimeConfig(d, env);
    } catch (e) {
      return e as ConfigError;
    }
    throw new Error('accepted');
  };
  const other = 'x'.repeat(43);
  const changed = <D extends { keyStores: { credentials: object[] }[] }>(d: D): D => {
    (d.keyStores[0]!.credentials[0] as { secretAccessKey: object }).secretAccessKey = { value: other };
    return d;
  };

  it('the proxy checks each recorded digest against the secret it resolves: a governance refusal where the store reaches a protected group', () => {
    const ok = governed(recorded());
    expect(buildRuntimeConfig(ok.doc, ok.env).keyStores.get('/ks')!.secrets.get('A'.repeat(20))!.toString()).toBe(secret);
    const swapped = governed(recorded());
    const e = refusal(changed(swapped.doc), swapped.env);
    expect(e.message).toBe(
      'refused by governance: keyStores[0].credentials[0].secretAccessKey: the secret does not match the credential\'s recorded secretSha256 (a secret changed outside xks-admin); key store reaches quorum-protected group "g"',
    );
    expect(e.governance).toEqual({ reason: 'secret', group: 'g' });
    expect(e.message).not.toContain(other);
    // Unprotected: the same check, as an invalid configuration.
    const plain = refusal(changed(recorded()));
    expect(plain.message).toMatch(/^invalid configuration: keyStores\[0\]\.credentials\[0\]\.secretAccessKey: the secret does not match/);
    expect(plain.governance).toBeUndefined();
  });

  it('a recorded key store reaching a protected group needs a digest for every credential', () => {
    const g = governed(recorded({}, [{ accessKeyId: 'B'.repeat(20), secretAccessKey: { value: 'b'.repeat(43) } }]));
    expect(refusal(g.doc, g.env)).toMatchObject({ message: expect.stringMatching(/credentials\[1\] \(BBBB+\) has no secretSha256, but key store "ks" records its identity/), governance: { reason: 'secret', group: 'g' } });
    // Not recorded at all (a deployment upgraded from before digests): accepted as before.
    const upgraded = governed(doc({}, [{ accessKeyId: 'A'.repeat(20), secretAccessKey: { value: secret } }, { accessKeyId: 'B'.repeat(20), secretAccessKey: { value: 'b'.repeat(43) } }]));
    expect(buildRuntimeConfig(upgraded.doc, upgraded.env).keyStores.get('/ks')!.secrets.size).toBe(2);
  });

  it('a check value is the base64 of iv || 32-byte ciphertext || tag, with a 12- or 16-byte IV', () => {
    const version = (checkValue: string) => configSchema.safeParse({ ...doc(), groups: [{ name: 'g', policy: { rules: [] }, keys: [{ id: 'k', versions: [{ version: 1, label: 'l', checkValue }] }] }] }).success;
    expect(version(Buffer.alloc(60, 1).toString('base64'))).toBe(true);
    expect(version(Buffer.alloc(64, 1).toString('base64'))).toBe(true);
    for (const n of [48, 59, 61, 63, 65]) expect(version(Buffer.alloc(n, 1).toString('base64'))).toBe(false);
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
