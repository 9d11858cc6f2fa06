import { createHash } from 'node:crypto';
import { cdiv, decodeMetadata, encodeMetadata, hsmAad, METADATA_FORMAT_V1, METADATA_LENGTH } from '../../src/xks/ciphertext-format';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('CDIV (spec Appendix C worked example)', () => {
  it('hashes aad || ciphertextMetadata || iv || ciphertext || tag to the published value', () => {
    const value = cdiv({
      aad: Buffer.from('cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n', 'base64'),
      metadata: Buffer.from('a2V5X3ZlcnNpb249MQ==', 'base64'),
      iv: Buffer.from('HMrlRw85cAJUd5Ax', 'base64'),
      ciphertext: Buffer.from('ghxkK1txeDNn3q8Y', 'base64'),
      tag: Buffer.from('vBxN2ncH1oEkR8WVXpmyYQ==', 'base64'),
    });
    expect(value.toString('hex')).toBe('a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7');
    expect(value.toString('base64')).toBe('qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=');
  });

  it('treats absent AAD and metadata as empty strings', () => {
    const iv = Buffer.alloc(12, 1);
    const ct = Buffer.alloc(3, 2);
    const tag = Buffer.alloc(16, 3);
    expect(cdiv({ iv, ciphertext: ct, tag })).toEqual(cdiv({ aad: Buffer.alloc(0), metadata: Buffer.alloc(0), iv, ciphertext: ct, tag }));
  });

  it('hashes the raw concatenation, without lengths, in the spec order', () => {
    const parts = { aad: Buffer.from('ab'), metadata: Buffer.from('c'), iv: Buffer.from('iv'), ciphertext: Buffer.from('ct'), tag: Buffer.from('tg') };
    expect(cdiv(parts)).toEqual(createHash('sha256').update('abcivcttg').digest());
    // The spec defines no separators, so moving a byte from the AAD to the metadata keeps the value.
    expect(cdiv({ ...parts, aad: Buffer.from('a'), metadata: Buffer.from('bc') })).toEqual(cdiv(parts));
    expect(cdiv({ ...parts, iv: parts.tag, tag: parts.iv })).not.toEqual(cdiv(parts));
  });
});

describe('HSM AAD layout (spec: 2-byte BE AAD length || AAD || 1-byte metadata length || metadata)', () => {
  it('length-prefixes both fields', () => {
    expect(hsmAad(Buffer.from('ab'), Buffer.from('xyz'))).toEqual(hex('0002 6162 03 78797a'));
  });

  it('writes zero lengths for absent fields', () => {
    expect(hsmAad(undefined, undefined)).toEqual(hex('0000 00'));
  });

  it('separates "metadata" from "the same bytes passed as AAD"', () => {
    const m = encodeMetadata(1);
    expect(hsmAad(undefined, m).equals(hsmAad(m, undefined))).toBe(false);
  });

  it('encodes 8192-byte AAD lengths big-endian', () => {
    expect(hsmAad(Buffer.alloc(8192), undefined).subarray(0, 2)).toEqual(hex('2000'));
  });

  it('carries up to 65535 bytes of AAD and the 20 bytes of metadata the spec allows', () => {
    const aad = Buffer.alloc(65535, 0xaa);
    const m = Buffer.alloc(20, 0xbb);
    const out = hsmAad(aad, m);
    expect(out).toHaveLength(2 + 65535 + 1 + 20);
    expect(out.subarray(0, 2)).toEqual(hex('ffff'));
    expect(out.subarray(2, 2 + 65535).equals(aad)).toBe(true);
    expect(out[2 + 65535]).toBe(20);
    expect(out.subarray(3 + 65535)).toEqual(m);
  });

  it('refuses AAD the 2-byte length cannot express instead of wrapping the length', () => {
    expect(() => hsmAad(Buffer.alloc(65536), undefined)).toThrow(/out of range/);
  });

  it('treats an empty AAD like an absent one', () => {
    expect(hsmAad(Buffer.alloc(0), Buffer.alloc(0))).toEqual(hsmAad(undefined, undefined));
  });
});

describe('ciphertextMetadata', () => {
  it('round-trips the key version within 20 bytes', () => {
    const m = encodeMetadata(70000);
    expect(m.length).toBeLessThanOrEqual(20);
    expect(decodeMetadata(m)).toBe(70000);
  });

  it('is the format byte then the key version as uint32 big-endian', () => {
    expect(METADATA_FORMAT_V1).toBe(1);
    expect(METADATA_LENGTH).toBe(5);
    expect(encodeMetadata(7)).toEqual(hex('01 00000007'));
    expect(encodeMetadata(0x01020304)).toEqual(hex('01 01020304'));
  });

  it.each([0, 1, 0xffffffff])('round-trips key version %i', (v) => {
    expect(decodeMetadata(encodeMetadata(v))).toBe(v);
  });

  it.each([-1, 2 ** 32])('refuses key version %i, which uint32 cannot hold', (v) => {
    // Node's own RangeError comes from another realm than jest's global, so match the message.
    expect(() => encodeMetadata(v)).toThrow(/out of range/);
  });

  it('reads the version from bytes it did not write itself', () => {
    expect(decodeMetadata(hex('01 ffffffff'))).toBe(0xffffffff);
  });

  it('rejects empty, format 0 and over-long metadata', () => {
    expect(decodeMetadata(Buffer.alloc(0))).toBeUndefined();
    expect(decodeMetadata(hex('00 00000001'))).toBeUndefined();
    expect(decodeMetadata(Buffer.concat([encodeMetadata(1), Buffer.alloc(15)]))).toBeUndefined();
  });

  it('rejects unknown formats and lengths', () => {
    expect(decodeMetadata(Buffer.from([0x02, 0, 0, 0, 1]))).toBeUndefined();
    expect(decodeMetadata(Buffer.from([0x01, 0, 0, 1]))).toBeUndefined();
  });
});
