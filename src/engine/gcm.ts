import { randomBytes } from 'node:crypto';
import * as pkcs11js from 'pkcs11js';
import { EngineError } from './errors';
import { nextIv } from './iv-source';
import type { HsmConfig, Pkcs11Module } from './module';
import { ckrName, classify, describeFailure, STANDARD_TAG_FAILURES } from './pkcs11-errors';
import { observedGcmLayout } from './pkcs11js-build';
import type { GcmResult } from './types';

type Handle = pkcs11js.Handle;
export type GcmLayout = 'v240' | 'v230';

/**
 * Who chooses the AES-GCM IV of an encryption, learned at connect (hsm.ivSource overrides):
 *   proxy              the proxy draws a random 96-bit IV and passes it (SoftHSM2, NSS, Luna outside FIPS mode);
 *   hsm-writes-zeroed  pIv points to 12 zero bytes and the HSM writes the IV it chose there (CloudHSM, nShield);
 *   hsm-appends        no IV is passed (ulIvLen 0, ulIvBits 96) and the HSM returns ciphertext || tag || IV,
 *                      12 bytes or 16 (Luna 7 in FIPS mode; 16 before firmware 7.9.3).
 */
export type IvSource = NonNullable<HsmConfig['ivSource']>;
/** The order they are tried in: the proxy's own IV first, so that a module taking it keeps today's behaviour. */
export const IV_SOURCES: readonly IvSource[] = ['proxy', 'hsm-writes-zeroed', 'hsm-appends'];

const TAG_BITS = 128;
const TAG_BYTES = TAG_BITS / 8;
/** The IV the proxy draws, and the one it asks an IV-generating HSM for. */
const IV_BYTES = 12;
/** The IV lengths an appending HSM may return; the XKS API allows both in Encrypt's answer and Decrypt's request. */
const APPENDED_IV_BYTES: readonly number[] = [12, 16];
const MAX_APPENDED_IV_BYTES = 16;
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
  ivSource: IvSource;
}

/** For connect errors and logs: what each IV source asked of the HSM. */
const IV_SOURCE_TEXT: Record<IvSource, string> = {
  proxy: 'proxy (a random IV passed in CK_GCM_PARAMS)',
  'hsm-writes-zeroed': 'hsm-writes-zeroed (a zeroed 12-byte pIv for the HSM to fill)',
  'hsm-appends': 'hsm-appends (ulIvLen 0, ulIvBits 96, the IV after the tag)',
};

/**
 * The pIv of an encryption. pkcs11js passes this Buffer's own memory, so an IV the HSM writes lands in it;
 * the caller keeps it referenced until the call that completes the encryption has returned, since a
 * module may keep the pointer from C_EncryptInit and write only then (nShield).
 */
export function ivRequest(source: IvSource): Buffer {
  if (source === 'proxy') return nextIv();
  return source === 'hsm-writes-zeroed' ? Buffer.alloc(IV_BYTES) : Buffer.alloc(0);
}

/** Output room beyond ciphertext and tag: an appending HSM needs it for its IV. */
export const ivRoom = (source: IvSource): number => (source === 'hsm-appends' ? MAX_APPENDED_IV_BYTES : 0);

/**
 * Splits what the HSM returned into ciphertext, tag and the IV that was used. Anything else fails closed:
 * an output of another length, or a zeroed pIv the HSM did not fill (encrypting under an all-zero IV
 * every time would repeat the IV).
 */
export function sealedParts(source: IvSource, iv: Buffer, length: number, sealed: Buffer): GcmResult {
  const extra = sealed.length - length - TAG_BYTES;
  if (source === 'hsm-appends' ? !APPENDED_IV_BYTES.includes(extra) : extra !== 0) {
    throw new EngineError('device', 'the HSM returned an output of unexpected length');
  }
  if (source === 'hsm-writes-zeroed' && iv.every((b) => b === 0)) throw new EngineError('device', 'the HSM did not write the IV it chose');
  const used = source === 'hsm-appends' ? Buffer.from(sealed.subarray(length + TAG_BYTES)) : iv;
  return { iv: used, ciphertext: sealed.subarray(0, length), tag: sealed.subarray(length, length + TAG_BYTES) };
}

/** A refusal of one IV source (try the next), as opposed to a fault of the connection or the HSM. */
export function refused(e: unknown): boolean {
  return e instanceof EngineError || (ckrName(e) !== undefined && classify(e) === 'operation');
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
 * IV's length in bits (NSS rejects anything else); with no IV (ulIvLen 0), 96: the IV the HSM should
 * generate (Luna firmware 7.9.3 reads it so and requires it; older firmware ignores it). v230: the 40-byte
 * structure without ulIvBits (older HSM firmware; NSS accepts both, SoftHSM2 only v240). See bindingSendsV230.
 */
export function gcmMechanism(layout: GcmLayout, iv: Buffer, aad: Buffer): pkcs11js.Mechanism {
  const type = layout === 'v240' ? pkcs11js.CK_PARAMS_AES_GCM_v240 : pkcs11js.CK_PARAMS_AES_GCM;
  const ivBits = (iv.length === 0 ? IV_BYTES : iv.length) * 8;
  const parameter: pkcs11js.AesGCM = { type, iv, aad, ivBits, tagBits: TAG_BITS };
  return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
}

/** A failed C_Decrypt as the caller sees it: a tag that did not verify is the caller's ciphertext, anything else the module's failure. */
function tagFailure(e: unknown, behaviour: GcmBehaviour): unknown {
  const name = ckrName(e);
  if (name && behaviour.tagFailures.has(name)) {
    return new EngineError('tag-mismatch', 'the ciphertext, IV, AAD, ciphertextMetadata or authentication tag is invalid');
  }
  return e;
}

/** The plaintext of a decryption, which is as long as its ciphertext or a failure of the HSM. */
function opened(plain: Buffer, ciphertext: Buffer): Buffer {
  if (plain.length !== ciphertext.length) throw new EngineError('device', 'the HSM returned an output of unexpected length');
  return plain;
}

type Callback = (error: Error | null, data: Buffer) => void;

/**
 * AES-256-GCM calls on one session, inline on the event loop or on libuv's pool (hsm.asyncCalls). Inline,
 * encrypt and decrypt answer synchronously (a value, not a promise) and throw what the module throws: a
 * request served inline then takes no promise hop between the HSM call and its answer.
 */
export class Gcm {
  constructor(
    private readonly mod: Pkcs11Module,
    private readonly layout: GcmLayout,
    private readonly asyncCalls: boolean,
  ) {}

  /** The callback form of a call, as a promise (hsm.asyncCalls). */
  private queued(call: (cb: Callback) => void): Promise<Buffer> {
    return new Promise((resolve, reject) => call((error, data) => (error ? reject(error) : resolve(data))));
  }

  encrypt(session: Handle, key: Handle, plaintext: Buffer, aad: Buffer, behaviour: GcmBehaviour): GcmResult | Promise<GcmResult> {
    const m = this.mod;
    const { ivSource } = behaviour;
    // Referenced until the sealing call below has returned (ivRequest says why).
    const iv = ivRequest(ivSource);
    m.C_EncryptInit(session, gcmMechanism(this.layout, iv, aad), key);
    const out = Buffer.allocUnsafe(plaintext.length + TAG_BYTES + ivRoom(ivSource));
    const final = plaintext.length === 0 && behaviour.emptyPlaintext === 'final';
    if (!this.asyncCalls) return sealedParts(ivSource, iv, plaintext.length, final ? m.C_EncryptFinal(session, out) : m.C_Encrypt(session, plaintext, out));
    const sealed = final ? this.queued((cb) => m.C_EncryptFinal(session, out, cb)) : this.queued((cb) => m.C_Encrypt(session, plaintext, out, cb));
    return sealed.then((data) => sealedParts(ivSource, iv, plaintext.length, data));
  }

  decrypt(session: Handle, key: Handle, iv: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer, behaviour: GcmBehaviour): Buffer | Promise<Buffer> {
    const m = this.mod;
    m.C_DecryptInit(session, gcmMechanism(this.layout, iv, aad), key);
    const input = Buffer.concat([ciphertext, tag]);
    const out = Buffer.allocUnsafe(input.length);
    if (this.asyncCalls) {
      return this.queued((cb) => m.C_Decrypt(session, input, out, cb)).then(
        (plain) => opened(plain, ciphertext),
        (e: unknown) => {
          throw tagFailure(e, behaviour);
        },
      );
    }
    let plain: Buffer;
    try {
      plain = m.C_Decrypt(session, input, out);
    } catch (e) {
      throw tagFailure(e, behaviour);
    }
    return opened(plain, ciphertext);
  }

  /**
   * Proves the module does AES-GCM with this layout and learns its quirks: who chooses the IV (each source
   * in turn, `forced` alone when hsm.ivSource is set, `preferred` first: what the last connection learned),
   * with an encrypt/decrypt round trip through the same code as customer requests; then an empty plaintext
   * (single-part first, then Init+Final) and a deliberately corrupted tag. PKCS#11 faults propagate for the
   * caller to report with their call name; a module refusing every IV source is an Error naming each refusal.
   */
  async probe(session: Handle, key: Handle, forced?: IvSource, preferred?: IvSource): Promise<GcmBehaviour> {
    const order = forced ? [forced] : [...new Set([...(preferred ? [preferred] : []), ...IV_SOURCES])];
    const refusals: string[] = [];
    for (const ivSource of order) {
      const trial: GcmBehaviour = { ivSource, emptyPlaintext: 'single', tagFailures: new Set(STANDARD_TAG_FAILURES) };
      const data = randomBytes(16);
      let sealed: GcmResult;
      try {
        sealed = await this.encrypt(session, key, data, EMPTY, trial);
      } catch (e) {
        if (!refused(e)) throw e;
        refusals.push(`${IV_SOURCE_TEXT[ivSource]}: ${describeFailure(e)}`);
        this.endEncryption(session);
        continue;
      }
      if (!(await this.decrypt(session, key, sealed.iv, EMPTY, sealed.ciphertext, sealed.tag, trial)).equals(data)) {
        throw new Error('the HSM did not return the AES-GCM probe data on decrypt');
      }
      return { ivSource, emptyPlaintext: this.emptyPlaintextMode(session, key, ivSource), tagFailures: this.tagFailures(session, key, sealed) };
    }
    throw new Error(forced ? `hsm.ivSource ${refusals.join('')}` : `the HSM refused every IV source: ${refusals.join('; ')}`);
  }

  /** Ends an encryption a refusing module may have left active (SoftHSM2 keeps it after refusing C_Encrypt). */
  private endEncryption(session: Handle): void {
    try {
      this.mod.C_EncryptFinal(session, Buffer.alloc(TAG_BYTES + MAX_APPENDED_IV_BYTES));
    } catch {
      // CKR_OPERATION_NOT_INITIALIZED: nothing was left.
    }
  }

  /** The return values this module gives for a tag that does not verify. */
  private tagFailures(session: Handle, key: Handle, sealed: GcmResult): ReadonlySet<string> {
    const m = this.mod;
    const forged = Buffer.concat([sealed.ciphertext, sealed.tag]);
    forged[forged.length - 1]! ^= 0x01;
    m.C_DecryptInit(session, gcmMechanism(this.layout, sealed.iv, EMPTY), key);
    try {
      m.C_Decrypt(session, forged, Buffer.alloc(forged.length));
    } catch (e) {
      // A session or connection fault is no answer about the tag (and must not become a "tag failure").
      if (ckrName(e) !== undefined && classify(e) !== 'operation') throw e;
      return new Set([...STANDARD_TAG_FAILURES, ckrName(e) ?? 'CKR_ENCRYPTED_DATA_INVALID']);
    }
    throw new Error('the HSM accepted a corrupted AES-GCM tag; refusing to use it');
  }

  private emptyPlaintextMode(session: Handle, key: Handle, ivSource: IvSource): GcmBehaviour['emptyPlaintext'] {
    const m = this.mod;
    const out = Buffer.alloc(TAG_BYTES + ivRoom(ivSource));
    let iv = ivRequest(ivSource);
    const sealsEmpty = (sealed: Buffer): boolean => {
      try {
        return sealedParts(ivSource, iv, 0, sealed) !== undefined;
      } catch {
        return false;
      }
    };
    m.C_EncryptInit(session, gcmMechanism(this.layout, iv, EMPTY), key);
    try {
      if (sealsEmpty(m.C_Encrypt(session, EMPTY, out))) return 'single';
    } catch (e) {
      // Refused. SoftHSM2 keeps the operation active after refusing (so it is finished below); a module
      // that ended it, as the standard says a failed call does, needs a new init first.
      if (!refused(e)) throw e;
    }
    try {
      if (sealsEmpty(m.C_EncryptFinal(session, out))) return 'final';
    } catch (e) {
      if (ckrName(e) !== 'CKR_OPERATION_NOT_INITIALIZED') throw e;
    }
    iv = ivRequest(ivSource);
    m.C_EncryptInit(session, gcmMechanism(this.layout, iv, EMPTY), key);
    if (sealsEmpty(m.C_EncryptFinal(session, out))) return 'final';
    throw new Error('the HSM cannot encrypt an empty plaintext with AES-GCM');
  }
}
