import { dueReason } from '../../src/admin/rotation';
import { configSchema, KeyConfig } from '../../src/config/schema';
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
