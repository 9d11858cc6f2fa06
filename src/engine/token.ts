import * as pkcs11js from 'pkcs11js';
import { findTokenSlot, initializeModule, loadModule, ModuleTarget } from './module';

type Handle = pkcs11js.Handle;

/** A logged-in session on one token, for administrative tools (not the request path). */
export interface TokenSession {
  mod: pkcs11js.PKCS11;
  session: Handle;
  close(): void;
}

/**
 * Opens a read-write session (administration creates and destroys keys) on the token, logged in. The
 * module gets the same environment and C_Initialize arguments as the engine gives it.
 */
export function openTokenSession(target: ModuleTarget, pin: string): TokenSession {
  const mod = loadModule(target);
  initializeModule(mod, target);
  try {
    const slot = findTokenSlot(mod, target.tokenLabel);
    if (slot === undefined) throw new Error(`no token labelled "${target.tokenLabel}"`);
    const session = mod.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    mod.C_Login(session, pkcs11js.CKU_USER, pin);
    return {
      mod,
      session,
      close: () => {
        mod.C_CloseSession(session);
        mod.C_Finalize();
      },
    };
  } catch (e) {
    mod.C_Finalize();
    throw e;
  }
}

/** Attributes of every root KEK: AES-256, on the token, never readable or exportable. */
export function kekTemplate(label: string): pkcs11js.Template {
  return [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_SENSITIVE, value: true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    { type: pkcs11js.CKA_MODIFIABLE, value: false },
    { type: pkcs11js.CKA_ENCRYPT, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: true },
    { type: pkcs11js.CKA_WRAP, value: false },
    { type: pkcs11js.CKA_UNWRAP, value: false },
  ];
}

export function findSecretKeys(t: TokenSession, label?: string): Handle[] {
  const template: pkcs11js.Template = [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }];
  if (label !== undefined) template.push({ type: pkcs11js.CKA_LABEL, value: label });
  t.mod.C_FindObjectsInit(t.session, template);
  try {
    return t.mod.C_FindObjects(t.session, 10_000);
  } finally {
    t.mod.C_FindObjectsFinal(t.session);
  }
}

/** Generates a non-extractable AES-256 key inside the HSM; refuses to create a second key with the same label. */
export function generateKek(t: TokenSession, label: string): Handle {
  if (findSecretKeys(t, label).length > 0) throw new Error(`a key labelled "${label}" already exists`);
  const template = kekTemplate(label);
  template.push({ type: pkcs11js.CKA_VALUE_LEN, value: 32 });
  return t.mod.C_GenerateKey(t.session, { mechanism: pkcs11js.CKM_AES_KEY_GEN, parameter: undefined as never }, template);
}

export function keyLabel(t: TokenSession, key: Handle): string {
  const [attr] = t.mod.C_GetAttributeValue(t.session, key, [{ type: pkcs11js.CKA_LABEL }]);
  return (attr?.value as Buffer | undefined)?.toString('utf8') ?? '';
}

/** Destroys every secret key with this label (key deletion after its waiting period). Returns how many. */
export function destroyKeys(t: TokenSession, label: string): number {
  const keys = findSecretKeys(t, label);
  for (const k of keys) t.mod.C_DestroyObject(t.session, k);
  return keys.length;
}

export type WrapMechanism = 'aes-key-wrap' | 'aes-key-wrap-pad';

/**
 * BYOK: unwraps key material (RFC 3394 / RFC 5649) under an existing HSM key that allows UNWRAP,
 * straight into a non-extractable KEK. The plaintext key never exists outside the HSM here.
 */
export function unwrapKek(t: TokenSession, wrappingLabel: string, wrapped: Buffer, label: string, mechanism: WrapMechanism): Handle {
  if (findSecretKeys(t, label).length > 0) throw new Error(`a key labelled "${label}" already exists`);
  // Both RFC 3394 and RFC 5649 wrap a 256-bit key into exactly 40 bytes, and unwrapping checks integrity,
  // so the length is known here (SoftHSM2 does not record CKA_VALUE_LEN for unwrapped keys).
  if (wrapped.length !== 40) throw new Error(`wrapped key material must be 40 bytes (an AES-256 key), got ${wrapped.length}`);
  const [wrappingKey, ...more] = findSecretKeys(t, wrappingLabel);
  if (!wrappingKey || more.length > 0) throw new Error(`need exactly one wrapping key labelled "${wrappingLabel}"`);
  const mech = mechanism === 'aes-key-wrap' ? pkcs11js.CKM_AES_KEY_WRAP : pkcs11js.CKM_AES_KEY_WRAP_PAD;
  // SoftHSM2 refuses CKA_MODIFIABLE in an unwrap template; SENSITIVE/EXTRACTABLE cannot be relaxed later anyway.
  const template = kekTemplate(label).filter((a) => a.type !== pkcs11js.CKA_MODIFIABLE);
  return t.mod.C_UnwrapKey(t.session, { mechanism: mech, parameter: undefined as never }, wrappingKey, wrapped, template);
}
