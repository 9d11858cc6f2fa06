import * as pkcs11js from 'pkcs11js';
import { EngineError } from './errors';
import type { Pkcs11Module } from './module';

type Handle = pkcs11js.Handle;

/**
 * Finds AES-256 secret keys by label and refuses keys that could leave the HSM. Handles are cached
 * per connection (they are meaningless after a reconnect; the owner makes a new lookup then).
 */
export class KeyLookup {
  private readonly cache = new Map<string, Handle>();

  constructor(private readonly mod: Pkcs11Module) {}

  /** The key's handle, from the cache or the token; key-not-found when no object has the label. */
  handle(session: Handle, label: string): Handle {
    const cached = this.cache.get(label);
    if (cached) return cached;
    const key = this.find(session, label);
    if (!key) throw new EngineError('key-not-found', 'the key material for this external key is not in the HSM');
    this.cache.set(label, key);
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

  /** Undefined when no secret key has the label; key-unusable when it is ambiguous or unsafe. */
  find(session: Handle, label: string): Handle | undefined {
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
    const [keyType, valueLen, sensitive, extractable] = m.C_GetAttributeValue(session, key, [
      { type: pkcs11js.CKA_KEY_TYPE },
      { type: pkcs11js.CKA_VALUE_LEN },
      { type: pkcs11js.CKA_SENSITIVE },
      { type: pkcs11js.CKA_EXTRACTABLE },
    ]).map((a) => a.value as Buffer);
    const uint = (b: Buffer | undefined): number => (b ? b.readUIntLE(0, Math.min(b.length, 6)) : -1);
    // 0 = not recorded: SoftHSM2 leaves CKA_VALUE_LEN unset on unwrapped keys (xks-admin checks their length on import).
    if (uint(keyType) !== pkcs11js.CKK_AES || (uint(valueLen) !== 32 && uint(valueLen) !== 0)) {
      throw new EngineError('key-unusable', 'the HSM key for this external key is not AES-256');
    }
    if (uint(sensitive) !== 1 || uint(extractable) !== 0) {
      throw new EngineError('key-unusable', 'the HSM key for this external key is extractable or not sensitive; refusing to use it');
    }
    return key;
  }

  /** Without a configured health key, a session-only key (gone when the sessions go) still proves the HSM works. */
  generateSessionKey(session: Handle): Handle {
    return this.mod.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN, parameter: undefined as never }, [
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
