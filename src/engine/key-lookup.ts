import * as pkcs11js from 'pkcs11js';
import type { ProxyConfig } from '../config/schema';
import { EngineError } from './errors';
import type { Pkcs11Module } from './module';

type Handle = pkcs11js.Handle;

/** The CKA_ID xks-admin recorded for each key version label at create/import (versions[].objectId). */
export function objectIdsOf(config: ProxyConfig): Map<string, Buffer> {
  const ids = new Map<string, Buffer>();
  for (const g of config.groups) for (const k of g.keys) for (const v of k.versions ?? []) if (v.objectId) ids.set(v.label, Buffer.from(v.objectId, 'hex'));
  return ids;
}

/**
 * Finds AES-256 secret keys by label and refuses keys that could leave the HSM, and a key whose CKA_ID is
 * not the one recorded for its label (another object given the label later). Handles are cached per
 * connection (they are meaningless after a reconnect; the owner makes a new lookup then).
 */
export class KeyLookup {
  private readonly cache = new Map<string, { key: Handle; objectId: Buffer | undefined }>();

  constructor(
    private readonly mod: Pkcs11Module,
    private readonly objectIdOf: (label: string) => Buffer | undefined = () => undefined,
  ) {}

  /** The key's handle, from the cache or the token; key-not-found when no object has the label. */
  handle(session: Handle, label: string): Handle {
    const objectId = this.objectIdOf(label);
    const cached = this.cache.get(label);
    if (cached && (cached.objectId === objectId || (cached.objectId && objectId?.equals(cached.objectId)))) return cached.key;
    const key = this.find(session, label, objectId);
    if (!key) throw new EngineError('key-not-found', 'the key material for this external key is not in the HSM');
    this.cache.set(label, { key, objectId });
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
