import * as pkcs11js from 'pkcs11js';
import type { RuntimeConfig } from '../config/load';
import type { ModuleTarget } from '../engine/module';
import { openFleetToken } from '../engine/replicate';
import { createDataObject, dataObjectValue, findDataObjects, TokenSession } from '../engine/token';
import { Claim, claimsOf, judgeClaims, Mark } from './epochs';
import { GovernanceError } from './quorum';

/**
 * The newest accepted state of each quorum-protected group, kept where a config writer cannot reach it:
 * private token data objects (CKO_DATA, CKA_TOKEN, CKA_PRIVATE, not modifiable) that only a session logged
 * in with the HSM PIN can find, create or destroy, on every HSM of the fleet. One object per accepted
 * state (`xks-governance <group> <epoch>`): records are only ever added, so two processes recording at once
 * cannot undo each other; all but the newest two epochs of a group are pruned.
 */
const APPLICATION = 'xks-proxy governance';
const KEEP_EPOCHS = 2;

interface Stored extends Mark {
  handle: pkcs11js.Handle;
}

function parseMark(value: Buffer): Mark | undefined {
  try {
    const m = JSON.parse(value.toString('utf8')) as Partial<Mark>;
    if (typeof m.group === 'string' && Number.isSafeInteger(m.epoch) && typeof m.state === 'string') return { group: m.group, epoch: m.epoch as number, state: m.state };
  } catch {
    /* not ours: only a PIN holder could have written it */
  }
  return undefined;
}

function readStored(t: TokenSession): Stored[] {
  return findDataObjects(t, APPLICATION).flatMap((handle) => {
    let value: Buffer;
    try {
      value = dataObjectValue(t, handle);
    } catch {
      return []; // pruned by another process between find and read: only ever an older epoch
    }
    const m = parseMark(value);
    return m ? [{ ...m, handle }] : [];
  });
}

export function readMarks(t: TokenSession): Mark[] {
  return readStored(t).map(({ group, epoch, state }) => ({ group, epoch, state }));
}

/** Adds the states this token lacks, then prunes each group's records below its newest KEEP_EPOCHS epochs. */
export function recordMarks(t: TokenSession, marks: readonly Mark[]): void {
  const stored = readStored(t);
  for (const m of marks) {
    if (stored.some((s) => s.group === m.group && s.epoch === m.epoch && s.state === m.state)) continue;
    const value = Buffer.from(JSON.stringify({ v: 1, group: m.group, epoch: m.epoch, state: m.state, at: new Date().toISOString() }));
    stored.push({ ...m, handle: createDataObject(t, APPLICATION, `xks-governance ${m.group} ${m.epoch}`, value) });
  }
  for (const group of new Set(stored.map((s) => s.group))) {
    const epochs = [...new Set(stored.filter((s) => s.group === group).map((s) => s.epoch))].sort((a, b) => b - a);
    const floor = epochs[KEEP_EPOCHS - 1] ?? -1;
    for (const s of stored) {
      if (s.group !== group || s.epoch >= floor) continue;
      try {
        t.mod.C_DestroyObject(t.session, s.handle);
      } catch {
        /* an HSM that keeps them: reading a few more costs little */
      }
    }
  }
}

const markOf = ({ group, epoch, state }: Claim): Mark => ({ group, epoch, state });

export interface HsmMember {
  id: string;
  target: ModuleTarget;
  pin: string;
}

/**
 * Checks the claimed states against the marks of every member and records what is new. A state no HSM has
 * recorded yet (a change, or the first state after an upgrade) is accepted only once every member holds it,
 * so that any single member's marks are the newest later, whichever members answer then; a state already
 * recorded needs one member to say so, and the others are caught up where they answer.
 */
export function checkAndRecord(members: readonly HsmMember[], claims: readonly Claim[], now: Date): void {
  const open: { id: string; token: TokenSession; marks: Mark[] }[] = [];
  const failed: string[] = [];
  try {
    for (const m of members) {
      let token: TokenSession | undefined;
      try {
        token = openFleetToken(m.target, m.pin);
        open.push({ id: m.id, token, marks: readMarks(token) });
      } catch (e) {
        if (token && !open.some((o) => o.token === token)) token.close();
        failed.push(`${m.id}: ${(e as Error).message}`);
      }
    }
    if (open.length === 0) {
      throw new GovernanceError(`cannot read the newest accepted governance states from any HSM (${failed.join('; ')}); quorum-protected groups are accepted only against them`, 'high-water');
    }
    const mustRecord = judgeClaims(claims, open.flatMap((o) => o.marks), now);
    for (const o of open) {
      try {
        recordMarks(o.token, claims.map(markOf));
      } catch (e) {
        failed.push(`${o.id}: ${(e as Error).message}`);
      }
    }
    if (mustRecord.length > 0 && failed.length > 0) {
      throw new GovernanceError(
        `the new state of group ${mustRecord.map((c) => `"${c.group}"`).join(', ')} could not be recorded on every HSM (${failed.join('; ')}); it is accepted once all hold it`,
        'high-water',
        mustRecord[0]?.group,
      );
    }
  } finally {
    for (const o of open.reverse()) o.token.close();
  }
}

/**
 * This process's guard: the HSMs are those of the first config it loaded (the `hsm`/`hsms` sections change
 * only on restart, so a reloaded file cannot point the check at a token of its own). Every load is checked
 * against them, so a reload refuses what a restart would: also the state this process already runs once the
 * HSMs hold a newer one (an approved change whose file the writer swapped back before this process read it).
 * Only when no HSM answers is a reload that keeps the states this process already accepted let through (a new
 * credential must not wait on the HSM; the states it runs do not change).
 */
let members: HsmMember[] | undefined;
const accepted = new Map<string, string>();

export function guardAgainstRollback(runtime: RuntimeConfig, now = new Date()): void {
  members ??= runtime.config.hsms.map((h) => ({ id: h.id, target: h, pin: runtime.hsmPins.get(h.id) as string }));
  const claims = claimsOf(runtime.config);
  if (claims.length === 0) return;
  const known = claims.every((c) => accepted.get(c.group) === c.state);
  try {
    checkAndRecord(members, claims, now);
  } catch (e) {
    if (known && e instanceof GovernanceError && e.reason === 'high-water') return;
    throw e;
  }
  for (const c of claims) accepted.set(c.group, c.state);
}

/** A protected group this process runs at an older state than the newest its HSMs accepted. */
export interface Behind {
  group: string;
  running: number;
  newest: number;
}

/**
 * Which of the running config's protected groups are behind the HSMs (the HSMs of this process's start, as the
 * guard uses); undefined when no HSM answers or no config was loaded through the guard.
 */
export function statesBehind(config: RuntimeConfig['config']): Behind[] | undefined {
  const claims = claimsOf(config);
  if (!members || claims.length === 0) return claims.length === 0 ? [] : undefined;
  const marks: Mark[] = [];
  let answered = false;
  for (const m of members) {
    let token: TokenSession | undefined;
    try {
      token = openFleetToken(m.target, m.pin);
      marks.push(...readMarks(token));
      answered = true;
    } catch {
      /* a member that does not answer says nothing */
    } finally {
      token?.close();
    }
  }
  if (!answered) return undefined;
  return claims.flatMap((c) => {
    const mine = marks.filter((m) => m.group === c.group);
    const newest = Math.max(-1, ...mine.map((m) => m.epoch));
    const beside = newest === c.epoch && !mine.some((m) => m.epoch === c.epoch && m.state === c.state);
    return newest > c.epoch || beside ? [{ group: c.group, running: c.epoch, newest }] : [];
  });
}
