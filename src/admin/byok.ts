import { constants, createCipheriv, publicEncrypt, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { ConfigError } from '../config/load';
import type { KeyUsage } from '../config/schema';
import { sealOnFleet } from '../engine/check-value';
import { destroyWrappingKeyPair, generateWrappingKeyPair, OaepHash, unwrapKekRsa, wrappingKeyLabels } from '../engine/token';
import type { AdminContext } from './context';
import { withHolders } from './fleet';
import { addKey, newVersion, objectIdBytes, versionLabel } from './keys';

/**
 * Import wrapping keys carry their OAEP hash and expiry in the label, so any admin command can check
 * and sweep them without a store of its own.
 */
const PREFIX = 'xks-import-';
const labelFor = (hash: OaepHash, expires: Date): string => `${PREFIX}${randomBytes(4).toString('hex')}-${hash}-exp${Math.floor(expires.getTime() / 1000)}`;

function parseImportLabel(label: string): { hash: OaepHash; expires: Date } | undefined {
  const m = /^xks-import-[0-9a-f]{8}-(sha256|sha1)-exp(\d{9,11})$/.exec(label);
  return m ? { hash: m[1] as OaepHash, expires: new Date(Number(m[2]) * 1000) } : undefined;
}

function importExpiry(label: string): Date | undefined {
  return parseImportLabel(label)?.expires;
}

function oaepHash(v: string | undefined): OaepHash {
  const h = v ?? 'sha256';
  if (h !== 'sha256' && h !== 'sha1') throw new ConfigError('--oaep-hash is sha256 or sha1');
  return h;
}

/** Destroys every import wrapping key past its expiry; returns their labels. */
function sweepExpired(ctx: AdminContext): string[] {
  const now = ctx.now().getTime();
  return ctx.withToken((t) => {
    const expired = wrappingKeyLabels(t, PREFIX).filter((l) => (importExpiry(l)?.getTime() ?? 0) <= now);
    for (const l of expired) destroyWrappingKeyPair(t, l);
    return expired;
  });
}

/**
 * Like KMS GetParametersForImport: a fresh RSA wrapping key pair in the HSM, its public key written to
 * `out` for the customer, valid for `hours` and for one import.
 */
export function importParams(ctx: AdminContext, o: { out: string; bits: number; hours: number; hash?: string }): object {
  const hash = oaepHash(o.hash);
  if (o.bits !== 3072 && o.bits !== 4096) throw new ConfigError('--bits is 3072 or 4096');
  if (!Number.isFinite(o.hours) || o.hours <= 0 || o.hours > 24 * 7) throw new ConfigError('--expires-hours is more than 0 and at most 168');
  const swept = sweepExpired(ctx);
  const expires = new Date(ctx.now().getTime() + o.hours * 3_600_000);
  const label = labelFor(hash, expires);
  const pem = ctx.withToken((t) => generateWrappingKeyPair(t, label, o.bits as 3072 | 4096, hash));
  writeFileSync(o.out, pem, { mode: 0o644 });
  ctx.audit({ action: 'key-import-params', wrappingKey: label, bits: o.bits, expiresAt: expires.toISOString(), swept: swept.length });
  return {
    wrappingKey: label,
    publicKeyFile: o.out,
    algorithm: hash === 'sha256' ? 'RSAES_OAEP_SHA_256' : 'RSAES_OAEP_SHA_1',
    expiresAt: expires.toISOString(),
    rsaAesForm: 'RSA part || AES key wrap (RFC 3394, id-aes256-wrap) of the key under a fresh AES-256 key that the RSA part carries: xks-admin byok wrap --rsa-aes',
    wrapWith: `openssl pkeyutl -encrypt -pubin -inkey ${o.out} -in key.bin -out key.wrapped -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:${hash} -pkeyopt rsa_mgf1_md:${hash}`,
  };
}

/**
 * BYOK through import parameters: refused once they expired; the wrapping key pair is destroyed after a successful
 * import. Under governance the import happens when the change is proposed (the approvers sign the new key's check
 * value), so the parameters need to be valid then, not at approve or apply.
 */
export function importKeyRsa(ctx: AdminContext, o: { group: string; id: string; usage: KeyUsage[]; wrapped: () => Buffer; wrappingKey: string }): object {
  const parsed = parseImportLabel(o.wrappingKey);
  const expires = parsed?.expires;
  if (!parsed || !expires) throw new ConfigError(`"${o.wrappingKey}" is not an import wrapping key (see key import-params)`);
  const v = newVersion(ctx, versionLabel(o.id, 1));
  const label = v.label;
  let lengthChecked = false;
  let form = 'rsa-oaep';
  addKey(ctx, o.group, o.id, o.usage, v, () => {
    if (expires.getTime() <= ctx.now().getTime()) {
      ctx.withToken((t) => destroyWrappingKeyPair(t, o.wrappingKey));
      ctx.audit({ action: 'key-import-refused', keyId: o.id, wrappingKey: o.wrappingKey, reason: 'expired' });
      throw new ConfigError(`import parameters ${o.wrappingKey} expired at ${expires.toISOString()}; run key import-params again`);
    }
    const wrapped = o.wrapped();
    form = wrapped.length % 128 === 40 ? 'rsa-aes-key-wrap' : 'rsa-oaep';
    return withHolders(ctx, undefined, (holders) => {
      const t = holders[0]!.token;
      lengthChecked = unwrapKekRsa(t, o.wrappingKey, wrapped, label, parsed.hash, objectIdBytes(v)).lengthChecked;
      destroyWrappingKeyPair(t, o.wrappingKey);
      return sealOnFleet(holders.slice(0, 1), label, v.objectId);
    });
  });
  ctx.audit({ action: 'key-import', keyId: o.id, group: o.group, label, wrappingKey: o.wrappingKey, mechanism: `${form}-${parsed.hash}`, lengthChecked });
  return {
    imported: o.id,
    group: o.group,
    label,
    version: 1,
    wrappingKeyDestroyed: o.wrappingKey,
    keyLength: lengthChecked ? 'verified: 32 bytes' : 'not reported by this HSM: use the RSA-AES key wrap form (byok wrap --rsa-aes) to have it enforced',
  };
}

/**
 * The customer's side, for those without openssl: RSAES-OAEP of the 32-byte key under the import public
 * key, or (rsaAes) the RSA-AES key wrap form: OAEP of a fresh AES-256 key, then RFC 3394 of the key under it.
 */
export function byokWrap(publicKeyFile: string, materialFile: string, out: string, hash?: string, rsaAes = false): object {
  const material = readFileSync(materialFile);
  if (material.length !== 32) throw new ConfigError(`${materialFile}: key material must be 32 bytes (AES-256), got ${material.length}`);
  const rsa = (data: Buffer): Buffer => publicEncrypt({ key: readFileSync(publicKeyFile), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: oaepHash(hash) }, data);
  let wrapped: Buffer;
  if (rsaAes) {
    const ephemeral = randomBytes(32);
    const kwp = createCipheriv('id-aes256-wrap', ephemeral, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
    wrapped = Buffer.concat([rsa(ephemeral), kwp.update(material), kwp.final()]);
    ephemeral.fill(0);
  } else {
    wrapped = rsa(material);
  }
  material.fill(0);
  writeFileSync(out, wrapped);
  return { wrapped: out, bytes: wrapped.length };
}
