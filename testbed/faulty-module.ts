// Tests and the soak run only (testbed/ is never built into the product).
import * as pkcs11js from 'pkcs11js';
import { OFF_THREAD_GATE, type OffThreadGate } from '../src/engine/control-thread';

/**
 * Fault injection at the PKCS#11 boundary: a real pkcs11js module (SoftHSM2 underneath) whose calls
 * can be delayed or made to fail. Async calls (callback last) are delayed without blocking the loop.
 */
export interface Faults {
  /** Extra latency added to async crypto calls (C_Encrypt, C_Decrypt, C_EncryptFinal). */
  delayMs: number;
  /** Methods that fail with this CKR_ value until cleared (e.g. { C_Encrypt: 'CKR_DEVICE_REMOVED' }). */
  fail: Partial<Record<string, string>>;
  /** Counts of calls per method. */
  calls: Record<string, number>;
  /** The real module underneath, for faults made with real calls (e.g. closing every session). */
  real?: pkcs11js.PKCS11;
  /** Sees every C_ call's arguments before it runs; a CKR_ name it returns fails that call (e.g. refuse read-only sessions). */
  inspect?: (method: string, args: unknown[]) => string | undefined;
}

const ASYNC = new Set(['C_Encrypt', 'C_Decrypt', 'C_EncryptFinal']);

function pkcs11Error(name: string, method: string): Error {
  const code = (pkcs11js as unknown as Record<string, number>)[name] ?? 5;
  const E = (pkcs11js as unknown as { Pkcs11Error: new (m: string, c: number, method: string) => Error }).Pkcs11Error;
  return new E(`${name}:${code}`, code, method);
}

export function faultyModule(): { faults: Faults; create: () => pkcs11js.PKCS11 } {
  const faults: Faults = { delayMs: 0, fail: {}, calls: {} };
  const create = (): pkcs11js.PKCS11 => {
    const real = new pkcs11js.PKCS11();
    faults.real = real;
    // Connecting runs on the engine's control thread: the same counts and failures apply there.
    const gate: OffThreadGate = (method, args) => {
      faults.calls[method] = (faults.calls[method] ?? 0) + 1;
      const failure = faults.fail[method] ?? faults.inspect?.(method, args);
      if (failure) throw pkcs11Error(failure, method);
    };
    return new Proxy(real, {
      get(target, prop, receiver) {
        if (prop === OFF_THREAD_GATE) return gate;
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== 'function') return value;
        // Native methods check their receiver: always call them on the real object.
        if (typeof prop !== 'string' || !prop.startsWith('C_')) return (value as (...a: unknown[]) => unknown).bind(target);
        return (...args: unknown[]) => {
          faults.calls[prop] = (faults.calls[prop] ?? 0) + 1;
          const failure = faults.fail[prop] ?? faults.inspect?.(prop, args);
          const cb = args[args.length - 1];
          if (ASYNC.has(prop) && typeof cb === 'function') {
            const done = cb as (e: Error | null, d?: Buffer) => void;
            const finish = (e: Error | null, d?: Buffer): void => {
              const answer = (): void => done(failure ? pkcs11Error(failure, prop) : e, d);
              // No delay: setImmediate, which a test's fake timers leave real (a fake setTimeout would hold the answer).
              if (faults.delayMs > 0) setTimeout(answer, faults.delayMs);
              else setImmediate(answer);
            };
            return (value as (...a: unknown[]) => unknown).apply(target, [...args.slice(0, -1), finish]);
          }
          if (failure) throw pkcs11Error(failure, prop);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  };
  return { faults, create };
}

/** Slot-level calls a removed token still answers (the slot is there, its token is not), and closing what is gone. */
const SLOT_CALLS = new Set(['C_Initialize', 'C_Finalize', 'C_GetInfo', 'C_GetSlotList', 'C_GetSlotInfo', 'C_GetTokenInfo', 'C_GetMechanismList', 'C_GetMechanismInfo', 'C_CloseAllSessions', 'C_CloseSession']);

/**
 * Loses one HSM of a fleet that shares this module, the way a removed token is lost: opening a session
 * on its slot, and every call on its sessions, fails CKR_DEVICE_REMOVED; the other slots are untouched.
 * Returns the switch: a slot to lose it, undefined to bring it back. Takes over `faults.inspect`.
 */
export function slotLoss(faults: Faults): (slot: Buffer | undefined) => void {
  let lost: Buffer | undefined;
  faults.inspect = (method, args) => {
    if (!lost || SLOT_CALLS.has(method)) return undefined;
    if (method === 'C_OpenSession') return (args[0] as Buffer).equals(lost) ? 'CKR_DEVICE_REMOVED' : undefined;
    try {
      return faults.real!.C_GetSessionInfo(args[0] as Buffer).slotID.equals(lost) ? 'CKR_DEVICE_REMOVED' : undefined;
    } catch {
      return undefined;
    }
  };
  return (slot) => {
    lost = slot;
  };
}
