import { createHash } from 'node:crypto';

/**
 * ciphertextMetadata layout (5 bytes, within the spec's 20): format byte, then the key version (uint32 BE).
 * Format 1 = the spec's length-prefixed AAD binding below. A future format gets a new byte, so
 * ciphertexts of every earlier format stay decryptable.
 */
export const METADATA_FORMAT_V1 = 0x01;
export const METADATA_LENGTH = 5;

export function encodeMetadata(keyVersion: number): Buffer {
  const b = Buffer.allocUnsafe(METADATA_LENGTH);
  b[0] = METADATA_FORMAT_V1;
  b.writeUInt32BE(keyVersion, 1);
  return b;
}

/** Returns the key version, or undefined when the metadata is not ours (so the ciphertext is invalid). */
export function decodeMetadata(metadata: Buffer): number | undefined {
  if (metadata.length !== METADATA_LENGTH || metadata[0] !== METADATA_FORMAT_V1) return undefined;
  return metadata.readUInt32BE(1);
}

/**
 * The AAD given to the HSM (spec, Encrypt, ciphertextMetadata):
 *   uint16be(len(aad)) || aad || uint8(len(metadata)) || metadata
 * Lengths make "no AAD + metadata" differ from "metadata passed as AAD".
 */
export function hsmAad(aad: Buffer | undefined, metadata: Buffer | undefined): Buffer {
  const a = aad ?? Buffer.alloc(0);
  const m = metadata ?? Buffer.alloc(0);
  const out = Buffer.allocUnsafe(2 + a.length + 1 + m.length);
  out.writeUInt16BE(a.length, 0);
  a.copy(out, 2);
  out[2 + a.length] = m.length;
  m.copy(out, 3 + a.length);
  return out;
}

/** Ciphertext Data Integrity Value (spec Appendix C): SHA-256 over aad || metadata || iv || ciphertext || tag. */
export function cdiv(parts: { aad?: Buffer; metadata?: Buffer; iv: Buffer; ciphertext: Buffer; tag: Buffer }): Buffer {
  const h = createHash('sha256');
  if (parts.aad) h.update(parts.aad);
  if (parts.metadata) h.update(parts.metadata);
  return h.update(parts.iv).update(parts.ciphertext).update(parts.tag).digest();
}
