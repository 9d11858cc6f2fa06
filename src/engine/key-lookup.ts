import * as pkcs11js from 'pkcs11js';
import type { ProxyConfig } from '../config/schema';
import type { ProxyEvents } from '../events';
import type { Logger } from '../log';
import { opensCheckValue } from './check-value';
import { EngineError } from './errors';
import type { HsmConfig, Pkcs11Module } from './module';

type Handle = pkcs11js.Handle;

/** What xks-admin recorded for a key version at create/import/rotate (versions[].objectId, versions[].checkValue). */
export interface RecordedKey {
  /** CKA_ID, hex: the object found by the label must carry it. */
  objectId?: string;
  /** src/engine/check-value.ts: the object must open it before it is first used. */
  checkValue?: string;
}

/** Each key version label's record (a label belongs to one version: src/config/load.ts refuses a second owner). */
export function recordedKeysOf(config: ProxyConfig): Map<string, RecordedKey> {
  const out = new Map<string, RecordedKey>();
  for (const g of config.groups) {
    for (const k of g.keys) {
      for (const v of k.versions ?? []) if (v.objectId !== undefined || v.checkValue !== undefined) out.set(v.label, { objectId: v.objectId, checkValue: v.checkValue });
    }
  }
  return out;
}

const sameRecord = (a: RecordedKey | undefined, b: RecordedKey | undefined): boolean => a === b || (a?.objectId === b?.objectId && a?.checkValue === b?.checkValue);

export interface KeyLookupDeps {
  /** The record of a key version label in the configuration in force (re-read on each lookup: reloads change it). */
  recordOf?: (label: string) => RecordedKey | undefined;
  logger: Logger;
  /** 'key.check-failed' is published on every refusal for a check value. */
  events?: ProxyEvents;
  hsmId?: string;
}

interface Cached {
  record: RecordedKey | undefined;
  key?: Handle;
  /** The object did not open the recorded check value: refused until the record or the connection changes, or the refusal ages. */
  refused?: { error: EngineError; at: number };
}

/**
 * A refused key is looked at again after this long: a module that reports some transient fault of a decrypt as
 * an ordinary failure (SoftHSM2 says CKR_GENERAL_ERROR for a bad tag and for other troubles) must not keep a
 * good key refused until a restart, and one decrypt a minute per refused key costs nothing.
 */
const REFUSAL_RECHECK_MS = 60_000;

/**
 * Finds AES-256 secret keys by label and refuses keys that could leave the HSM, a key whose CKA_ID is not the one
 * recorded for its label (another object given the label later), and one that does not open the version's
 * recorded check value (another key material under the recorded label and CKA_ID: a token of a config writer's).
 * The check is one decrypt per handle: a handle, and a refusal (for a minute), are cached per connection with the
 * record they were judged against, so a request pays a map lookup; a reload that changes the record, a stale handle
 * and a reconnect look the key up, and check it, again.
 */
export class KeyLookup {
  private readonly cache = new Map<string, Cached>();
  private readonly recordOf: (label: string) => RecordedKey | undefined;
  private readonly hsmId: string;

  constructor(
    private readonly mod: Pkcs11Module,
    private readonly deps: KeyLookupDeps,
    private readonly hsm: Pick<HsmConfig, 'gcmParams' | 'tokenLabel'>,
  ) {
    this.recordOf = deps.recordOf ?? (() => undefined);
    this.hsmId = deps.hsmId ?? hsm.tokenLabel;
  }

  /** The key's handle, from the cache or the token; key-not-found when no object has the label. */
  handle(session: Handle, label: string): Handle {
    const record = this.recordOf(label);
    const cached = this.cache.get(label);
    if (cached && sameRecord(cached.record, record)) {
      if (cached.key !== undefined) return cached.key;
      if (cached.refused && performance.now() - cached.refused.at < REFUSAL_RECHECK_MS) {
        this.deps.events?.publish('key.check-failed', { hsm: this.hsmId });
        throw cached.refused.error;
      }
    }
    const key = this.find(session, label, record?.objectId === undefined ? undefined : Buffer.from(record.objectId, 'hex'));
    if (!key) throw new EngineError('key-not-found', 'the key material for this external key is not in the HSM');
    if (record?.checkValue !== undefined && !opensCheckValue(this.mod, session, key, record.checkValue, this.hsm.gcmParams)) {
      const refused = new EngineError('key-unusable', 'the HSM key for this external key is not the key version recorded for it (it does not open its check value)');
      this.cache.set(label, { record, refused: { error: refused, at: performance.now() } });
      this.deps.logger.error(
        { hsm: this.hsmId, label },
        'key refused: the HSM object under this key version\'s label and CKA_ID does not open the check value recorded for the version: other key material (a token that is not the one the keys were made on?); the key version is refused on this HSM',
      );
      this.deps.events?.publish('key.check-failed', { hsm: this.hsmId });
      throw refused;
    }
    this.cache.set(label, { record, key });
    return key;
  }

  /**
   * One attribute read on the handle: a deleted object makes the module answer CKR_OBJECT_HANDLE_INVALID,
   * which the engine treats as a stale handle (forget, look up again, and then key-not-found).
   */
  confirm(session: Handle, key: Handle): void {
    this.mod.C_GetAttributeValue(session, key, [{ type: pkcs11js.CKA_KEY_TYPE }]);
  }

  /** Drops a handle the module said is stale, so the next use looks the key up again. */
  forget(label: string): void {
    this.cache.delete(label);
  }

  /** Undefined when no secret key has the label; key-unusable when it is ambiguous, unsafe or not the recorded object. */
  find(session: Handle, label: string, objectId?: Buffer): Handle | undefined {
    const m = this.mod;
    m.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_LABEL, value: label },
    ]);
    let found: Handle[];
    try {
      found = m.C_FindObjects(session, 2);
    } finally {
      m.C_FindObjectsFinal(session);
    }
    if (found.length === 0) return undefined;
    if (found.length > 1) throw new EngineError('key-unusable', 'more than one HSM key has the label configured for this key');
    const key = found[0] as Handle;
    const [keyType, valueLen, sensitive, extractable, id] = m.C_GetAttributeValue(session, key, [
      { type: pkcs11js.CKA_KEY_TYPE },
      { type: pkcs11js.CKA_VALUE_LEN },
      { type: pkcs11js.CKA_SENSITIVE },
      { type: pkcs11js.CKA_EXTRACTABLE },
      { type: pkcs11js.CKA_ID },
    ]).map((a) => a.value);
    const uint = (b: Buffer | undefined): number => (b ? b.readUIntLE(0, Math.min(b.length, 6)) : -1);
    // 0 = not recorded: SoftHSM2 leaves CKA_VALUE_LEN unset on unwrapped keys (xks-admin checks their length on import).
    if (uint(keyType) !== pkcs11js.CKK_AES || (uint(valueLen) !== 32 && uint(valueLen) !== 0)) {
      throw new EngineError('key-unusable', 'the HSM key for this external key is not AES-256');
    }
    if (uint(sensitive) !== 1 || uint(extractable) !== 0) {
      throw new EngineError('key-unusable', 'the HSM key for this external key is extractable or not sensitive; refusing to use it');
    }
    if (objectId && !objectId.equals(id ?? Buffer.alloc(0))) {
      throw new EngineError('key-unusable', 'the HSM key with this label is not the one created for this external key (its CKA_ID differs from the recorded one)');
    }
    return key;
  }

  /** Without a configured health key, a session-only key (gone when the sessions go) still proves the HSM works. */
  generateSessionKey(session: Handle): Handle {
    return this.mod.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN, parameter: undefined }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_TOKEN, value: false },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: true },
    ]);
  }
}
