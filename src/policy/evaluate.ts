import type { RuleConfig } from '../config/schema';
import type { RequestMetadata } from '../xks/requests';

/**
 * Secondary authorization on requestMetadata, after the group model of Fortanix DSM: the policy lives
 * on the group. Deny wins over allow; a request no allow rule matches is denied (fail closed).
 * A rule matches when every condition it names matches; a condition on a field the request lacks
 * does not match.
 */
export interface Decision {
  allowed: boolean;
  /** The rule that decided, or "default-deny". */
  rule: string;
}

type Matcher = (value: string | undefined) => boolean;

export interface CompiledRule {
  id: string;
  effect: 'allow' | 'deny';
  conditions: ((m: RequestMetadata) => boolean)[];
}

function globMatcher(patterns: readonly string[]): Matcher {
  const exact = new Set(patterns.filter((p) => !p.includes('*')));
  // `s`: a `*` must span every character, newlines included, or a deny on "user/*" misses "user/Al\nice".
  const wild = patterns
    .filter((p) => p.includes('*'))
    .map((p) => new RegExp(`^${p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 's'));
  return (v) => v !== undefined && (exact.has(v) || wild.some((r) => r.test(v)));
}

/** The account of arn:aws:iam::ACCOUNT:... / arn:aws:sts::ACCOUNT:...; service principals have none. */
export function principalAccount(arn: string | undefined): string | undefined {
  const m = /^arn:[^:]+:(?:iam|sts)::(\d{12}):/.exec(arn ?? '');
  return m?.[1];
}

/** Region and account of arn:aws:kms:REGION:ACCOUNT:key/... */
export function keyArnParts(arn: string | undefined): { region?: string; account?: string } {
  const m = /^arn:[^:]+:kms:([a-z0-9-]+):(\d{12}):/.exec(arn ?? '');
  return m ? { region: m[1], account: m[2] } : {};
}

// The same shapes found anywhere in the string: used only by deny rules, so that junk around an ARN
// (a leading space, a prefix) cannot slip a request past a deny on its account or region.
const LOOSE_PRINCIPAL = /arn:[^:]*:(?:iam|sts)::(\d{12}):/;
const LOOSE_KEY = /arn:[^:]*:kms:([a-z0-9-]+):(\d{12}):/;

/** ARNs as KMS sends them: `arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`, printable ASCII, no spaces. */
const WELL_FORMED_ARN = /^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:(?:\d{12})?:[\x21-\x7e]+$/;

/** An ARN field that is present but does not parse: such a request matches no allow rule (fail closed). */
function malformedArns(m: RequestMetadata): boolean {
  return (
    (m.awsPrincipalArn !== undefined && !WELL_FORMED_ARN.test(m.awsPrincipalArn)) ||
    (m.kmsKeyArn !== undefined && !WELL_FORMED_ARN.test(m.kmsKeyArn))
  );
}

export function compileRule(rule: RuleConfig): CompiledRule {
  const c: CompiledRule['conditions'] = [];
  const on = (patterns: readonly string[] | undefined, pick: (m: RequestMetadata) => string | undefined): void => {
    if (!patterns) return;
    const match = globMatcher(patterns);
    c.push((m) => match(pick(m)));
  };
  const deny = rule.effect === 'deny';
  on(rule.principals, (m) => m.awsPrincipalArn);
  on(rule.principalAccounts, (m) => (deny ? LOOSE_PRINCIPAL.exec(m.awsPrincipalArn ?? '')?.[1] : principalAccount(m.awsPrincipalArn)));
  on(rule.sourceVpcs, (m) => m.awsSourceVpc);
  on(rule.sourceVpces, (m) => m.awsSourceVpce);
  on(rule.viaServices, (m) => m.kmsViaService);
  on(rule.kmsOperations, (m) => m.kmsOperation);
  on(rule.keyAccounts, (m) => (deny ? LOOSE_KEY.exec(m.kmsKeyArn ?? '')?.[2] : keyArnParts(m.kmsKeyArn).account));
  on(rule.keyRegions, (m) => (deny ? LOOSE_KEY.exec(m.kmsKeyArn ?? '')?.[1] : keyArnParts(m.kmsKeyArn).region));
  if (!deny) c.push((m) => !malformedArns(m));
  return { id: rule.id, effect: rule.effect, conditions: c };
}

export function evaluate(rules: readonly CompiledRule[], metadata: RequestMetadata): Decision {
  let allow: string | undefined;
  for (const rule of rules) {
    if (!rule.conditions.every((cond) => cond(metadata))) continue;
    if (rule.effect === 'deny') return { allowed: false, rule: rule.id };
    allow ??= rule.id;
  }
  return allow ? { allowed: true, rule: allow } : { allowed: false, rule: 'default-deny' };
}
