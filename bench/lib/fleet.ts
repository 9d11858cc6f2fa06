import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createReplicated, openFleetToken, prepareReplicationTarget, trustReplicationKey } from '../../src/engine/replicate';
import { destroyKeys, generateKek } from '../../src/engine/token';
import type { HsmSetup } from '../../testbed/hsm-setups';

/** The demo keys softhsm/setup-token.sh makes, which a fleet bench needs on every HSM. */
const DEMO_KEY_LABELS = ['xks-demo-key-1', 'xks-demo-key-2'];

/**
 * Turns the demo setup (one SoftHSM2 token) into a fleet of `count` tokens of the same module: the
 * extra tokens are made here with a known SO PIN, the demo keys are made again on the second token and
 * replicated to all the others (the proxy's own replication, src/engine/replicate.ts), and the config's
 * `hsm` section becomes `hsms`. setup-token's keys are still unused, so replacing them loses nothing.
 */
export function makeBenchFleet(dir: string, config: Record<string, unknown>, count: number, remote?: HsmSetup): void {
  const hsm = config.hsm as Record<string, unknown> & { tokenLabel: string; environment: Record<string, string>; modulePath: string };
  const pin = readFileSync(join(dir, 'secrets', 'hsm-pin'), 'utf8');
  const so = randomBytes(12).toString('hex');
  // With `remote`, the last HSM is that token behind a p11-kit server (a process of its own, which the
  // loss window stops and starts); the others are tokens of the in-process module.
  const local = remote ? count - 1 : count;
  if (local < 2) throw new Error('a fleet bench needs at least two tokens of the in-process module (--hsms 3 with --hsm-loss)');
  const labels = Array.from({ length: local - 1 }, (_, i) => `${hsm.tokenLabel}-${i + 2}`);
  for (const label of labels) {
    execFileSync('softhsm2-util', ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', so], { env: { ...process.env, ...hsm.environment }, stdio: 'ignore' });
  }
  const ids = [hsm.tokenLabel, ...labels, ...(remote ? [remote.tokenLabel] : [])];
  const isRemote = (i: number): boolean => remote !== undefined && i === ids.length - 1;
  const target = (tokenLabel: string, i = -1) =>
    isRemote(i) && remote ? { modulePath: remote.modulePath, environment: remote.environment, tokenLabel } : { modulePath: hsm.modulePath, environment: hsm.environment, tokenLabel };
  const pinOf = (i: number): string => (isRemote(i) && remote ? remote.pin : pin);
  // The second token (its SO PIN is known here) is the source; the security officer trusts every other's
  // replication key on it. An SO login excludes user sessions on that token, so this comes first.
  const sourceLabel = ids[1] as string;
  ids.forEach((label, i) => {
    if (i === 1) return;
    const t = openFleetToken(target(label, i), pinOf(i));
    let pub;
    try {
      pub = prepareReplicationTarget(t);
    } finally {
      t.close();
    }
    const soSession = openFleetToken(target(sourceLabel), so, 'so');
    try {
      trustReplicationKey(soSession, `hsm-${i + 1}`, pub);
    } finally {
      soSession.close();
    }
  });
  const tokens = ids.map((label, i) => ({ id: `hsm-${i + 1}`, token: openFleetToken(target(label, i), pinOf(i)) }));
  try {
    const [first, source, ...rest] = tokens;
    if (!first || !source) throw new Error('a fleet bench needs at least two HSMs');
    for (const label of DEMO_KEY_LABELS) {
      destroyKeys(first.token, label);
      createReplicated([source, first, ...rest], label);
    }
    for (const t of [source, ...rest]) generateKek(t.token, hsm.healthKeyLabel as string);
  } finally {
    for (const t of tokens.reverse()) t.token.close();
  }
  const { ...shared } = hsm;
  delete config.hsm;
  config.hsms = ids.map((tokenLabel, i) =>
    isRemote(i) && remote
      ? { ...shared, id: `hsm-${i + 1}`, tokenLabel, modulePath: remote.modulePath, environment: remote.environment, pin: { file: join(dir, 'secrets', 'remote-pin') } }
      : { ...shared, id: `hsm-${i + 1}`, tokenLabel },
  );
  if (remote) writeFileSync(join(dir, 'secrets', 'remote-pin'), remote.pin, { mode: 0o600 });
}
