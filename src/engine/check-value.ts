import type * as pkcs11js from 'pkcs11js';
import { GcmLayout, gcmMechanism, IV_SOURCES, IvSource, ivRequest, ivRoom, refused, sealedParts } from './gcm';
import type { Pkcs11Module } from './module';
import { ckrName, classify, describeFailure } from './pkcs11-errors';
import { type TokenSession, versionKey } from './token';

type Handle = pkcs11js.Handle;

/**
 * A key version's check value: AES-256-GCM of a fixed block under the key, sealed by the HSM when the version is
 * made or imported and kept in the config as base64 of iv || ciphertext || tag (so, for a protected group, under
 * its quorum's signatures). Only that key material opens it: a token holding another key under the recorded label
 * and CKA_ID (one a config writer made and points `hsm` at) fails one decrypt. GCM decryption takes the IV it is
 * given on every module (only encryption may insist on choosing it), so a value sealed under any IV source opens
 * under any other. It reveals nothing of the key: one known-plaintext encryption under a random IV, as every
 * answer to an Encrypt is.
 */
const BLOCK = Buffer.alloc(32);
/** Its own AAD: a request's AAD starts with a 2-byte length (src/xks/ciphertext-format.ts) that this cannot match. */
const AAD = Buffer.from('xks-proxy key check value v1', 'utf8');
const TAG_BYTES = 16;
/** The IV lengths an HSM may use (12, or 16 from Luna firmware before 7.9.3). */
const IV_BYTES: readonly number[] = [12, 16];

function parts(value: string): { iv: Buffer; sealed: Buffer } | undefined {
  const raw = Buffer.from(value, 'base64');
  const ivBytes = raw.length - BLOCK.length - TAG_BYTES;
  if (!IV_BYTES.includes(ivBytes)) return undefined;
  return { iv: raw.subarray(0, ivBytes), sealed: raw.subarray(ivBytes) };
}

/**
 * Whether the key opens the check value. False when the module refuses the decrypt as an operation (a tag that
 * does not verify, however the module reports it; a key that may not decrypt); a fault of the session, the
 * handle or the connection propagates, for the caller to handle as it handles any.
 */
export function opensCheckValue(mod: Pkcs11Module, session: Handle, key: Handle, value: string, layout: GcmLayout): boolean {
  const p = parts(value);
  if (!p) return false;
  mod.C_DecryptInit(session, gcmMechanism(layout, p.iv, AAD), key);
  let plain: Buffer;
  try {
    plain = mod.C_Decrypt(session, p.sealed, Buffer.alloc(p.sealed.length));
  } catch (e) {
    if (ckrName(e) !== undefined && classify(e) === 'operation') return false;
    throw e;
  }
  return plain.equals(BLOCK);
}

/** Ends an encryption a refusing module may have left active (SoftHSM2 keeps it after refusing C_Encrypt). */
function endEncryption(mod: Pkcs11Module, session: Handle): void {
  try {
    mod.C_EncryptFinal(session, Buffer.alloc(TAG_BYTES + 16));
  } catch {
    // CKR_OPERATION_NOT_INITIALIZED: nothing was left.
  }
}

/**
 * Seals the check value of a key (xks-admin, when a version is made, imported or first given one). The IV source
 * is hsm.ivSource when set, else the first the module accepts, as the engine learns it at connect; the value is
 * opened once before it is returned.
 */
export function sealCheckValue(mod: Pkcs11Module, session: Handle, key: Handle, hsm: { gcmParams: GcmLayout; ivSource?: IvSource }): string {
  const refusals: string[] = [];
  for (const source of hsm.ivSource ? [hsm.ivSource] : IV_SOURCES) {
    // Referenced until C_Encrypt has returned: an HSM that chooses the IV may write it here then.
    const iv = ivRequest(source);
    let value: string;
    try {
      mod.C_EncryptInit(session, gcmMechanism(hsm.gcmParams, iv, AAD), key);
      const sealed = sealedParts(source, iv, BLOCK.length, mod.C_Encrypt(session, BLOCK, Buffer.alloc(BLOCK.length + TAG_BYTES + ivRoom(source))));
      value = Buffer.concat([sealed.iv, sealed.ciphertext, sealed.tag]).toString('base64');
    } catch (e) {
      if (!refused(e)) throw e;
      refusals.push(`${source}: ${describeFailure(e)}`);
      endEncryption(mod, session);
      continue;
    }
    if (!opensCheckValue(mod, session, key, value, hsm.gcmParams)) throw new Error('the HSM key does not open the check value it just sealed');
    return value;
  }
  throw new Error(`cannot seal a check value: the HSM refused every IV source (${refusals.join('; ')})`);
}

/** One HSM of a fleet that holds a key version, open for administration, with its GCM settings. */
export interface Holder {
  id: string;
  token: TokenSession;
  hsm: { gcmParams: GcmLayout; ivSource?: IvSource };
}

/** Every holder's object for the version opens the check value; an Error naming the first HSM where it does not. */
export function openOnEach(holders: readonly Holder[], label: string, objectId: string | undefined, value: string): void {
  for (const h of holders) {
    const key = versionKey(h.token, label, objectId);
    if (!opensCheckValue(h.token.mod, h.token.session, key, value, h.hsm.gcmParams)) {
      throw new Error(`HSM ${h.id}: the key labelled "${label}" does not open the version's check value (other key material)`);
    }
  }
}

/** The check value of a key version, sealed on its first holder and opened on each other (a fleet holds one key). */
export function sealOnFleet(holders: readonly Holder[], label: string, objectId?: string): string {
  const [first, ...others] = holders;
  if (!first) throw new Error(`no HSM holds "${label}"`);
  const value = sealCheckValue(first.token.mod, first.token.session, versionKey(first.token, label, objectId), first.hsm);
  openOnEach(others, label, objectId, value);
  return value;
}
