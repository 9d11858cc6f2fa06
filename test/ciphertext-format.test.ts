import { cdiv, decodeMetadata, encodeMetadata, hsmAad } from '../src/xks/ciphertext-format';

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
});

describe('ciphertextMetadata', () => {
  it('round-trips the key version within 20 bytes', () => {
    const m = encodeMetadata(70000);
    expect(m.length).toBeLessThanOrEqual(20);
    expect(decodeMetadata(m)).toBe(70000);
  });

  it('rejects unknown formats and lengths', () => {
    expect(decodeMetadata(Buffer.from([0x02, 0, 0, 0, 1]))).toBeUndefined();
    expect(decodeMetadata(Buffer.from([0x01, 0, 0, 1]))).toBeUndefined();
  });
});
