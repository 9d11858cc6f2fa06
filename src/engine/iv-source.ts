import { randomFillSync } from 'node:crypto';

/**
 * 96-bit GCM IVs from the CSPRNG, drawn from a pooled buffer: one randomFillSync per 341 IVs instead
 * of one per request (the per-call cost of the CSPRNG dominated on the hot path). Every byte is used
 * once; each IV is copied out so no two callers share memory.
 */
const IV_BYTES = 12;
const POOL_BYTES = IV_BYTES * 341;
let pool = Buffer.allocUnsafe(0);
let offset = 0;

export function nextIv(): Buffer {
  if (offset + IV_BYTES > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(POOL_BYTES));
    offset = 0;
  }
  const iv = Buffer.from(pool.subarray(offset, offset + IV_BYTES));
  offset += IV_BYTES;
  return iv;
}
