import * as pkcs11js from 'pkcs11js';
import { createPublicKey } from 'node:crypto';
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

/**
 * Attributes of every root KEK: AES-256, on the token, never readable or exportable. `objectId` becomes
 * its CKA_ID, which the store records beside the label so that the proxy uses this very object.
 */
export function kekTemplate(label: string, objectId?: Buffer): pkcs11js.Template {
  const id: pkcs11js.Template = objectId ? [{ type: pkcs11js.CKA_ID, value: objectId }] : [];
  return [
    ...id,
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

/** Every object matching the template, with the label when given. */
function findAll(t: TokenSession, template: pkcs11js.Template, label?: string): Handle[] {
  t.mod.C_FindObjectsInit(t.session, label === undefined ? template : [...template, { type: pkcs11js.CKA_LABEL, value: label }]);
  try {
    return t.mod.C_FindObjects(t.session, 10_000);
  } finally {
    t.mod.C_FindObjectsFinal(t.session);
  }
}

export function findSecretKeys(t: TokenSession, label?: string): Handle[] {
  return findAll(t, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }], label);
}

/** Generates a non-extractable AES-256 key inside the HSM; refuses to create a second key with the same label. */
export function generateKek(t: TokenSession, label: string, objectId?: Buffer): Handle {
  if (findSecretKeys(t, label).length > 0) throw new Error(`a key labelled "${label}" already exists`);
  const template = kekTemplate(label, objectId);
  template.push({ type: pkcs11js.CKA_VALUE_LEN, value: 32 });
  return t.mod.C_GenerateKey(t.session, { mechanism: pkcs11js.CKM_AES_KEY_GEN, parameter: undefined }, template);
}

/**
 * The one secret key with this label (and this CKA_ID, when the store recorded one), as the proxy would use it;
 * an Error naming what is wrong otherwise.
 */
export function versionKey(t: TokenSession, label: string, objectId?: string): Handle {
  const found = findSecretKeys(t, label);
  if (found.length !== 1) throw new Error(found.length === 0 ? `no key labelled "${label}"` : `${found.length} keys labelled "${label}"`);
  const key = found[0] as Handle;
  if (objectId !== undefined) {
    const [id] = t.mod.C_GetAttributeValue(t.session, key, [{ type: pkcs11js.CKA_ID }]);
    if (!(id?.value)?.equals(Buffer.from(objectId, 'hex'))) throw new Error(`the key labelled "${label}" does not carry the recorded CKA_ID ${objectId}`);
  }
  return key;
}

export function keyLabel(t: TokenSession, key: Handle): string {
  const [attr] = t.mod.C_GetAttributeValue(t.session, key, [{ type: pkcs11js.CKA_LABEL }]);
  return attr?.value?.toString('utf8') ?? '';
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
export function unwrapKek(t: TokenSession, wrappingLabel: string, wrapped: Buffer, label: string, mechanism: WrapMechanism, objectId?: Buffer): Handle {
  if (findSecretKeys(t, label).length > 0) throw new Error(`a key labelled "${label}" already exists`);
  // Both RFC 3394 and RFC 5649 wrap a 256-bit key into exactly 40 bytes, and unwrapping checks integrity,
  // so the length is known here (SoftHSM2 does not record CKA_VALUE_LEN for unwrapped keys).
  if (wrapped.length !== 40) throw new Error(`wrapped key material must be 40 bytes (an AES-256 key), got ${wrapped.length}`);
  const [wrappingKey, ...more] = findSecretKeys(t, wrappingLabel);
  if (!wrappingKey || more.length > 0) throw new Error(`need exactly one wrapping key labelled "${wrappingLabel}"`);
  const mech = mechanism === 'aes-key-wrap' ? pkcs11js.CKM_AES_KEY_WRAP : pkcs11js.CKM_AES_KEY_WRAP_PAD;
  // SoftHSM2 refuses CKA_MODIFIABLE in an unwrap template; SENSITIVE/EXTRACTABLE cannot be relaxed later anyway.
  const template = kekTemplate(label, objectId).filter((a) => a.type !== pkcs11js.CKA_MODIFIABLE);
  return t.mod.C_UnwrapKey(t.session, { mechanism: mech, parameter: undefined }, wrappingKey, wrapped, template);
}

/** PKCS#11 v2.40 CKZ_DATA_SPECIFIED (empty OAEP label); pkcs11js has no constant for it. */
const CKZ_DATA_SPECIFIED = 1;
/** RSAES-OAEP hash (MGF1 uses the same): KMS offers both for import; SoftHSM2 2.6 unwraps only with SHA-1. */
export type OaepHash = 'sha256' | 'sha1';
export function oaep(hash: OaepHash): pkcs11js.Mechanism {
  const [hashAlg, mgf] = hash === 'sha256' ? [pkcs11js.CKM_SHA256, pkcs11js.CKG_MGF1_SHA256] : [pkcs11js.CKM_SHA_1, pkcs11js.CKG_MGF1_SHA1];
  return { mechanism: pkcs11js.CKM_RSA_PKCS_OAEP, parameter: { type: pkcs11js.CK_PARAMS_RSA_OAEP, hashAlg, mgf, source: CKZ_DATA_SPECIFIED } as pkcs11js.RsaOAEP };
}

export function findObjects(t: TokenSession, cls: number, label: string): Handle[] {
  return findAll(t, [{ type: pkcs11js.CKA_CLASS, value: cls }], label);
}

/**
 * BYOK import parameters, as KMS's GetParametersForImport: an RSA key pair made in the HSM whose private
 * half can only unwrap (no decrypt, sign or export) and whose public half is handed to the customer.
 * Returns the public key as SPKI PEM.
 */
export function generateWrappingKeyPair(t: TokenSession, label: string, bits: 3072 | 4096, hash: OaepHash): string {
  if (findObjects(t, pkcs11js.CKO_PRIVATE_KEY, label).length > 0) throw new Error(`a key pair labelled "${label}" already exists`);
  const { publicKey } = t.mod.C_GenerateKeyPair(
    t.session,
    { mechanism: pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN, parameter: undefined },
    [
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_MODULUS_BITS, value: bits },
      { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: Buffer.from([1, 0, 1]) },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_WRAP, value: true },
      { type: pkcs11js.CKA_VERIFY, value: false },
    ],
    [
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: false },
      { type: pkcs11js.CKA_SIGN, value: false },
    ],
  );
  // The HSM checks OAEP parameters the same way for encrypt and unwrap: find out now, not at import.
  try {
    t.mod.C_EncryptInit(t.session, oaep(hash), publicKey);
    t.mod.C_Encrypt(t.session, Buffer.alloc(32), Buffer.alloc(bits / 8));
  } catch (e) {
    destroyWrappingKeyPair(t, label);
    throw new Error(`this HSM does not do RSAES-OAEP with ${hash.toUpperCase()} (${(e as Error).message.split(':')[0]}); SoftHSM2 2.6 supports only --oaep-hash sha1`, { cause: e });
  }
  const [n, e] = t.mod.C_GetAttributeValue(t.session, publicKey, [{ type: pkcs11js.CKA_MODULUS }, { type: pkcs11js.CKA_PUBLIC_EXPONENT }]);
  const jwk = { kty: 'RSA', n: n!.value.toString('base64url'), e: e!.value.toString('base64url') };
  return createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString();
}

/** Destroys both halves of a wrapping key pair (after use, or once expired). Returns how many objects went. */
export function destroyWrappingKeyPair(t: TokenSession, label: string): number {
  const objects = [...findObjects(t, pkcs11js.CKO_PRIVATE_KEY, label), ...findObjects(t, pkcs11js.CKO_PUBLIC_KEY, label)];
  for (const o of objects) t.mod.C_DestroyObject(t.session, o);
  return objects.length;
}

/** Labels of the token's private keys starting with `prefix` (the import wrapping keys). */
export function wrappingKeyLabels(t: TokenSession, prefix: string): string[] {
  return findAll(t, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY }])
    .map((h) => keyLabel(t, h))
    .filter((l) => l.startsWith(prefix));
}

/** What the HSM says about an unwrapped key's length: SoftHSM2 2.6 records no CKA_VALUE_LEN for unwrapped keys (0). */
function reportedKeyBytes(t: TokenSession, key: Handle): number | undefined {
  try {
    // A CK_ULONG in host byte order (8 bytes on 64-bit Linux).
    const raw = t.mod.C_GetAttributeValue(t.session, key, [{ type: pkcs11js.CKA_VALUE_LEN }])[0]?.value;
    const n = raw?.length === 8 ? Number(raw.readBigUInt64LE()) : raw?.length === 4 ? raw.readUInt32LE() : 0;
    return n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

function unwrapFailure(e: unknown, hash: OaepHash): Error {
  return new Error(`the HSM could not unwrap the key material: not wrapped with this wrapping key's public key, or not RSAES-OAEP-${hash.toUpperCase()} (${(e as Error).message.split(':')[0]})`);
}

/**
 * BYOK with an asymmetric wrapping key, straight into a non-extractable AES KEK; the plaintext key
 * never exists outside the HSM. Two forms, told apart by length:
 * - one RSA block: RSAES-OAEP (MGF1 with the same hash, empty label) of the 32-byte key itself. The key
 *   length is checked through CKA_VALUE_LEN where the HSM reports it (SoftHSM2 2.6 does not).
 * - one RSA block + 40 bytes: the RSA-AES form (as PKCS#11 CKM_RSA_AES_KEY_WRAP and KMS RSA_AES_KEY_WRAP):
 *   OAEP of an ephemeral AES-256 key, then an AES key wrap of the key under it. Done as two unwraps in the
 *   HSM (the ephemeral key is a session object, destroyed at once), so it works on HSMs without that
 *   mechanism (SoftHSM2 2.6). The second part is RFC 3394 rather than the mechanism's RFC 5649: 40 bytes
 *   of RFC 3394 are exactly a 32-byte key, with integrity, where 40 bytes of RFC 5649 could be 25 to 32.
 */
export function unwrapKekRsa(t: TokenSession, wrappingLabel: string, wrapped: Buffer, label: string, hash: OaepHash, objectId?: Buffer): { key: Handle; lengthChecked: boolean } {
  if (findSecretKeys(t, label).length > 0) throw new Error(`a key labelled "${label}" already exists`);
  const [wrappingKey, ...more] = findObjects(t, pkcs11js.CKO_PRIVATE_KEY, wrappingLabel);
  if (!wrappingKey || more.length > 0) throw new Error(`need exactly one wrapping key pair labelled "${wrappingLabel}" (expired or already used?)`);
  const [modulus] = t.mod.C_GetAttributeValue(t.session, wrappingKey, [{ type: pkcs11js.CKA_MODULUS }]);
  const block = modulus!.value.length;
  if (wrapped.length !== block && wrapped.length !== block + 40) {
    throw new Error(`wrapped key material must be ${block} bytes (RSAES-OAEP of an AES-256 key) or ${block + 40} (RSA-AES key wrap), got ${wrapped.length}`);
  }
  const template = kekTemplate(label, objectId).filter((a) => a.type !== pkcs11js.CKA_MODIFIABLE);
  if (wrapped.length === block + 40) {
    let ephemeral: Handle;
    try {
      ephemeral = t.mod.C_UnwrapKey(t.session, oaep(hash), wrappingKey, wrapped.subarray(0, block), [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
        { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
        { type: pkcs11js.CKA_TOKEN, value: false },
        { type: pkcs11js.CKA_SENSITIVE, value: true },
        { type: pkcs11js.CKA_EXTRACTABLE, value: false },
        { type: pkcs11js.CKA_UNWRAP, value: true },
        { type: pkcs11js.CKA_ENCRYPT, value: false },
        { type: pkcs11js.CKA_DECRYPT, value: false },
      ]);
    } catch (e) {
      throw unwrapFailure(e, hash);
    }
    try {
      const key = t.mod.C_UnwrapKey(t.session, { mechanism: pkcs11js.CKM_AES_KEY_WRAP, parameter: undefined }, ephemeral, wrapped.subarray(block), template);
      return { key, lengthChecked: true };
    } catch (e) {
      throw new Error(`the HSM could not unwrap the AES part (RFC 3394): it was not wrapped under the ephemeral key in the RSA part (${(e as Error).message.split(':')[0]})`, { cause: e });
    } finally {
      t.mod.C_DestroyObject(t.session, ephemeral);
    }
  }
  let key: Handle;
  try {
    key = t.mod.C_UnwrapKey(t.session, oaep(hash), wrappingKey, wrapped, template);
  } catch (e) {
    throw unwrapFailure(e, hash);
  }
  const bytes = reportedKeyBytes(t, key);
  if (bytes !== undefined && bytes !== 32) {
    t.mod.C_DestroyObject(t.session, key);
    throw new Error(`the unwrapped key material is ${bytes} bytes; an AES-256 key (32 bytes) is required`);
  }
  return { key, lengthChecked: bytes === 32 };
}

/**
 * Token data objects (CKO_DATA) of one application, private to the logged-in user: only a session that
 * logged in with the PIN can find, read, create or destroy them. The proxy keeps there what whoever
 * writes its config must not be able to rewrite (src/governance/high-water.ts, usage.ts).
 */
export function findDataObjects(t: TokenSession, application: string, label?: string): Handle[] {
  const template: pkcs11js.Template = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
    { type: pkcs11js.CKA_APPLICATION, value: application },
  ];
  return findAll(t, template, label);
}

export function dataObjectValue(t: TokenSession, object: Handle): Buffer {
  const [attr] = t.mod.C_GetAttributeValue(t.session, object, [{ type: pkcs11js.CKA_VALUE }]);
  return attr?.value ?? Buffer.alloc(0);
}

/**
 * A private token object, written once: it can be destroyed but never changed (CKA_MODIFIABLE false; SoftHSM2
 * refuses a new CKA_VALUE on data objects anyway), so a newer record is a new object.
 */
export function createDataObject(t: TokenSession, application: string, label: string, value: Buffer): Handle {
  return t.mod.C_CreateObject(t.session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_MODIFIABLE, value: false },
    { type: pkcs11js.CKA_APPLICATION, value: application },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_VALUE, value },
  ]);
}
