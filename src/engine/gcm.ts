import { randomBytes } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import { EngineError } from './errors';
import { nextIv } from './iv-source';
import type { Pkcs11Module } from './module';
import { ckrName, STANDARD_TAG_FAILURES } from './pkcs11-errors';
import { observedGcmLayout } from './pkcs11js-build';
import type { GcmResult } from './types';

type Handle = pkcs11js.Handle;
export type GcmLayout = 'v240' | 'v230';

const TAG_BITS = 128;
const TAG_BYTES = TAG_BITS / 8;
const EMPTY = Buffer.alloc(0);

/**
 * What a module does differently with AES-GCM, learned at connect by probing it, so that no vendor
 * name is ever tested in code.
 */
export interface GcmBehaviour {
  /** Return values meaning "the tag did not verify" (SoftHSM2 adds CKR_GENERAL_ERROR to the standard ones). */
  tagFailures: ReadonlySet<string>;
  /**
   * How to encrypt an empty plaintext: 'single' = C_Encrypt (NSS allows only single-part GCM);
   * 'final' = C_EncryptFinal right after the init (SoftHSM2 rejects C_Encrypt on empty input).
   */
  emptyPlaintext: 'single' | 'final';
}

/**
 * Whether this pkcs11js binary sends the v2.30 layout. Version 2.1.7 builds the 48-byte v2.40 structure for
 * CK_PARAMS_AES_GCM too, with ulIvBits uninitialised (NSS then answers CKR_MECHANISM_PARAM_INVALID at
 * random); patches/pkcs11js+2.1.7.patch makes it the 40-byte v2.30 structure, and the install checks what
 * the built binary sends (src/engine/pkcs11js-build.ts). Unless seen, v230 is refused at connect rather than sent wrong.
 */
export function bindingSendsV230(): boolean {
  return observedGcmLayout() === 'v230';
}

/**
 * The one place the CK_GCM_PARAMS layout is chosen. v240: the 48-byte structure with ulIvBits set to the
 * IV's length in bits (NSS rejects anything else). v230: the 40-byte structure without ulIvBits (older
 * HSM firmware; NSS accepts both, SoftHSM2 only v240). See bindingSendsV230.
 */
export function gcmMechanism(layout: GcmLayout, iv: Buffer, aad: Buffer): pkcs11js.Mechanism {
  const type = layout === 'v240' ? pkcs11js.CK_PARAMS_AES_GCM_v240 : pkcs11js.CK_PARAMS_AES_GCM;
  const parameter: pkcs11js.AesGCM = { type, iv, aad, ivBits: iv.length * 8, tagBits: TAG_BITS };
  return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
}

type Callback = (error: Error | null, data: Buffer) => void;

/** AES-256-GCM calls on one session, inline on the event loop or on libuv's pool (hsm.asyncCalls). */
export class Gcm {
  constructor(
    private readonly mod: Pkcs11Module,
    private readonly layout: GcmLayout,
    private readonly asyncCalls: boolean,
  ) {}

  private call(inline: () => Buffer, async: (cb: Callback) => void): Buffer | Promise<Buffer> {
    if (!this.asyncCalls) return inline();
    return new Promise((resolve, reject) => async((error, data) => (error ? reject(error) : resolve(data))));
  }

  async encrypt(session: Handle, key: Handle, plaintext: Buffer, aad: Buffer, behaviour: GcmBehaviour): Promise<GcmResult> {
    const m = this.mod;
    const iv = nextIv();
    m.C_EncryptInit(session, gcmMechanism(this.layout, iv, aad), key);
    const out = Buffer.allocUnsafe(plaintext.length + TAG_BYTES);
    const sealed =
      plaintext.length === 0 && behaviour.emptyPlaintext === 'final'
        ? await this.call(() => m.C_EncryptFinal(session, out), (cb) => m.C_EncryptFinal(session, out, cb))
        : await this.call(() => m.C_Encrypt(session, plaintext, out), (cb) => m.C_Encrypt(session, plaintext, out, cb));
    if (sealed.length !== out.length) throw new EngineError('device', 'the HSM returned an output of unexpected length');
    return { iv, ciphertext: sealed.subarray(0, plaintext.length), tag: sealed.subarray(plaintext.length) };
  }

  async decrypt(session: Handle, key: Handle, iv: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer, behaviour: GcmBehaviour): Promise<Buffer> {
    const m = this.mod;
    m.C_DecryptInit(session, gcmMechanism(this.layout, iv, aad), key);
    const input = Buffer.concat([ciphertext, tag]);
    const out = Buffer.allocUnsafe(input.length);
    let plain: Buffer;
    try {
      plain = await this.call(() => m.C_Decrypt(session, input, out), (cb) => m.C_Decrypt(session, input, out, cb));
    } catch (e) {
      const name = ckrName(e);
      if (name && behaviour.tagFailures.has(name)) {
        throw new EngineError('tag-mismatch', 'the ciphertext, IV, AAD, ciphertextMetadata or authentication tag is invalid');
      }
      throw e;
    }
    if (plain.length !== ciphertext.length) throw new EngineError('device', 'the HSM returned an output of unexpected length');
    return plain;
  }

  /**
   * Proves the module does AES-GCM with this layout and learns its quirks: a round trip, an empty
   * plaintext (single-part first, then Init+Final), and a deliberately corrupted tag. Inline calls: this
   * runs once per connection. PKCS#11 failures propagate for the caller to report with their call name.
   */
  probe(session: Handle, key: Handle): GcmBehaviour {
    const m = this.mod;
    const data = randomBytes(16);
    const iv = randomBytes(12);
    m.C_EncryptInit(session, gcmMechanism(this.layout, iv, EMPTY), key);
    const sealed = m.C_Encrypt(session, data, Buffer.alloc(data.length + TAG_BYTES));
    m.C_DecryptInit(session, gcmMechanism(this.layout, iv, EMPTY), key);
    if (!m.C_Decrypt(session, sealed, Buffer.alloc(sealed.length)).equals(data)) {
      throw new Error('the HSM did not return the AES-GCM probe data on decrypt');
    }
    const emptyPlaintext = this.emptyPlaintextMode(session, key);
    sealed[sealed.length - 1]! ^= 0x01;
    m.C_DecryptInit(session, gcmMechanism(this.layout, iv, EMPTY), key);
    try {
      m.C_Decrypt(session, sealed, Buffer.alloc(sealed.length));
    } catch (e) {
      return { emptyPlaintext, tagFailures: new Set([...STANDARD_TAG_FAILURES, ckrName(e) ?? 'CKR_ENCRYPTED_DATA_INVALID']) };
    }
    throw new Error('the HSM accepted a corrupted AES-GCM tag; refusing to use it');
  }

  private emptyPlaintextMode(session: Handle, key: Handle): GcmBehaviour['emptyPlaintext'] {
    const m = this.mod;
    const out = Buffer.alloc(TAG_BYTES);
    m.C_EncryptInit(session, gcmMechanism(this.layout, randomBytes(12), EMPTY), key);
    try {
      if (m.C_Encrypt(session, EMPTY, out).length === TAG_BYTES) return 'single';
    } catch {
      // Refused. SoftHSM2 keeps the operation active after refusing (so it is finished below); a module
      // that ended it, as the standard says a failed call does, needs a new init first.
    }
    try {
      if (m.C_EncryptFinal(session, out).length === TAG_BYTES) return 'final';
    } catch (e) {
      if (ckrName(e) !== 'CKR_OPERATION_NOT_INITIALIZED') throw e;
    }
    m.C_EncryptInit(session, gcmMechanism(this.layout, randomBytes(12), EMPTY), key);
    if (m.C_EncryptFinal(session, out).length === TAG_BYTES) return 'final';
    throw new Error('the HSM cannot encrypt an empty plaintext with AES-GCM');
  }
}
