import { resolveSecret } from '../config/load';
import { Holder, sealOnFleet } from '../engine/check-value';
import { createReplicated, FleetToken, locate, openFleetToken, prepareReplicationTarget, trustReplicationKey } from '../engine/replicate';
import { generateKek, TokenSession, unwrapKek, WrapMechanism } from '../engine/token';
import type { AdminContext } from './context';

/**
 * Admin operations over every HSM of the configured fleet (config `hsms`). With one HSM they are the
 * plain single-token operations, so a single-HSM deployment behaves exactly as before.
 */
function fleetOf(ctx: AdminContext): ReturnType<AdminContext['store']['read']>['hsms'] {
  return ctx.store.read().hsms;
}

/** Runs fn with a logged-in session on every HSM of the fleet (closed afterwards, whatever happens). */
export function withFleet<T>(ctx: AdminContext, fn: (tokens: FleetToken[]) => T): T {
  const open: FleetToken[] = [];
  try {
    fleetOf(ctx).forEach((h, i) => open.push({ id: h.id, token: openFleetToken(h, resolveSecret(h.pin, process.env, `hsms[${i}].pin`)) }));
    return fn(open);
  } finally {
    for (const { token } of open.reverse()) token.close();
  }
}

/**
 * Runs fn with the HSMs of the fleet that hold a key version (`placed`: its versions[].hsms; absent: every HSM),
 * each with its GCM settings, for sealing and opening check values.
 */
export function withHolders<T>(ctx: AdminContext, placed: readonly string[] | undefined, fn: (holders: Holder[]) => T): T {
  const hsms = fleetOf(ctx);
  // One HSM: the plain single-token session, as every other command uses.
  if (hsms.length === 1) return ctx.withToken((token) => fn([{ id: hsms[0]!.id, token, hsm: hsms[0]! }]));
  return withFleet(ctx, (tokens) => fn(tokens.filter((t) => !placed || placed.includes(t.id)).map((t) => ({ ...t, hsm: hsms.find((h) => h.id === t.id)! }))));
}

/**
 * A new key version on every HSM: generated on the first and replicated to the others under their
 * trusted replication keys (src/engine/replicate.ts), never in clear outside an HSM. Returns its check
 * value (sealed on the first, opened on every other).
 */
export function makeKeyVersion(ctx: AdminContext, label: string, objectId: Buffer): string {
  const hex = objectId.toString('hex');
  if (fleetOf(ctx).length === 1) {
    return withHolders(ctx, undefined, (holders) => {
      generateKek(holders[0]!.token, label, objectId);
      return sealOnFleet(holders, label, hex);
    });
  }
  try {
    withFleet(ctx, (tokens) => createReplicated(tokens, label, objectId));
  } catch (e) {
    throw new Error(
      `${(e as Error).message}; replication needs the security officer's step once per pair of HSMs ` +
        '(xks-admin hsm trust-replication --source ID --target ID, SO PIN in XKS_HSM_SO_PIN), or import the same ' +
        'wrapped material into each HSM (key import: BYOK into every HSM of the fleet)',
      { cause: e },
    );
  }
  return withHolders(ctx, undefined, (holders) => sealOnFleet(holders, label, hex));
}

/** Runs fn on every HSM of the fleet (e.g. destroying a purged key's versions everywhere). */
export function onEveryHsm(ctx: AdminContext, fn: (t: TokenSession) => void): void {
  if (fleetOf(ctx).length === 1) ctx.withToken(fn);
  else withFleet(ctx, (tokens) => tokens.forEach(({ token }) => fn(token)));
}

/** BYOK into every HSM: the same wrapped material unwrapped in each (each needs the wrapping key). Returns its check value. */
export function importKeyVersion(ctx: AdminContext, label: string, wrappingKey: string, wrapped: Buffer, mechanism: WrapMechanism, objectId: Buffer): string {
  const sealed = (): string => withHolders(ctx, undefined, (holders) => sealOnFleet(holders, label, objectId.toString('hex')));
  if (fleetOf(ctx).length === 1) {
    return withHolders(ctx, undefined, (holders) => {
      unwrapKek(holders[0]!.token, wrappingKey, wrapped, label, mechanism, objectId);
      return sealOnFleet(holders, label, objectId.toString('hex'));
    });
  }
  withFleet(ctx, (tokens) => {
    const done: TokenSession[] = [];
    for (const { id, token } of tokens) {
      try {
        unwrapKek(token, wrappingKey, wrapped, label, mechanism, objectId);
        done.push(token);
      } catch (e) {
        throw new Error(`HSM ${id}: ${(e as Error).message}${done.length ? ` (the key version is already on ${done.length} other HSM(s); remove it there or retry on this one)` : ''}`, { cause: e });
      }
    }
  });
  // Each HSM unwrapped the material on its own: the check value proves they hold the same key.
  return sealed();
}

/** Where each label lives (HSM ids), for `key describe`; undefined for a single HSM. */
export function keyLocations(ctx: AdminContext, labels: readonly string[]): Map<string, string[]> | undefined {
  if (fleetOf(ctx).length === 1) return undefined;
  return withFleet(ctx, (tokens) => new Map(labels.map((l) => [l, locate(tokens, l)])));
}

/**
 * The security officer's step: `target` makes its replication key pair inside the HSM, and its public
 * half is installed on `source` marked CKA_TRUSTED (only an SO session may set it).
 */
export function trustReplication(ctx: AdminContext, sourceId: string, targetId: string, soPin: string): object {
  const hsms = fleetOf(ctx);
  const index = (id: string): number => {
    const i = hsms.findIndex((h) => h.id === id);
    if (i < 0) throw new Error(`no HSM with id "${id}" in hsms`);
    return i;
  };
  const source = hsms[index(sourceId)]!;
  const ti = index(targetId);
  const target = hsms[ti]!;
  const t = openFleetToken(target, resolveSecret(target.pin, process.env, `hsms[${ti}].pin`));
  try {
    const pub = prepareReplicationTarget(t);
    const so = openFleetToken(source, soPin, 'so');
    try {
      trustReplicationKey(so, targetId, pub);
    } finally {
      so.close();
    }
  } finally {
    t.close();
  }
  ctx.audit({ action: 'hsm-trust-replication', source: sourceId, target: targetId });
  return { source: sourceId, target: targetId, trusted: true };
}
