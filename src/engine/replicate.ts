import * as pkcs11js from 'pkcs11js';
import { findTokenSlot, initializeModule, leaseModule, ModuleTarget } from './module';
import { ckrName } from './pkcs11-errors';
import { findObjects, generateWrappingKeyPair, kekTemplate, oaep, type TokenSession } from './token';

type Handle = pkcs11js.Handle;

/**
 * Key versions on every HSM of a fleet without their material ever being in clear outside an HSM.
 *
 * PKCS#11's own way: the new key is generated with CKA_WRAP_WITH_TRUSTED, so it can only be wrapped by a
 * key carrying CKA_TRUSTED, which only the security officer can set. Each other HSM ("target") holds an
 * RSA replication key pair made inside it (private half: sensitive, non-extractable, unwrap only); the
 * security officer installs the public half on each source HSM, marked CKA_TRUSTED, once (a ceremony:
 * `trustReplicationKey`). Replicating a key is then C_WrapKey (RSA-OAEP) on the source and C_UnwrapKey
 * on the target into a sensitive, non-extractable key; finally the source copy is made non-extractable
 * (CKA_EXTRACTABLE may only ever go from true to false), so afterwards no copy can leave any HSM.
 *
 * OAEP uses SHA-1 (with MGF1-SHA-1): the one hash SoftHSM2 accepts for OAEP, and OAEP's security as a
 * key transport does not rest on SHA-1's collision resistance.
 */
const REPLICATION_KEY_LABEL = 'xks-replication';
const OAEP = oaep('sha1');

/** A session on one token through a shared module lease (two tokens of one module can be open together). */
export function openFleetToken(target: ModuleTarget, pin: string, user: 'user' | 'so' = 'user'): TokenSession {
  const lease = leaseModule(target);
  const mod = lease.mod;
  try {
    initializeModule(mod, target);
    const slot = findTokenSlot(mod, target.tokenLabel);
    if (slot === undefined) throw new Error(`no token labelled "${target.tokenLabel}"`);
    const session = mod.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    // Login is per application and token: in a process whose proxy already uses the token, it is logged in.
    // A user login is never logged out here: C_Logout would log out the proxy's sessions too (also ones its
    // engine opened on another thread after this login), and closing the application's last session ends the
    // login anyway. The security officer's (administration only, never in the proxy) is ended at once.
    try {
      mod.C_Login(session, user === 'so' ? pkcs11js.CKU_SO : pkcs11js.CKU_USER, pin);
    } catch (e) {
      if (user === 'so' || ckrName(e) !== 'CKR_USER_ALREADY_LOGGED_IN') throw e;
    }
    lease.inUse = true;
    return {
      mod,
      session,
      close: () => {
        if (user === 'so') {
          try {
            mod.C_Logout(session);
          } catch {
            /* already logged out */
          }
        }
        mod.C_CloseSession(session);
        lease.release();
      },
    };
  } catch (e) {
    lease.release();
    throw e;
  }
}

const find = findObjects;

function one(t: TokenSession, cls: number, label: string, what: string): Handle {
  const found = find(t, cls, label);
  if (found.length !== 1) throw new Error(`need exactly one ${what} labelled "${label}" (found ${found.length})`);
  return found[0] as Handle;
}

export interface ReplicationPublicKey {
  modulus: Buffer;
  publicExponent: Buffer;
}

/**
 * On a target HSM: the RSA-3072 replication key pair, made inside it (once); returns the public half
 * for the security officer to trust on the sources.
 */
export function prepareReplicationTarget(t: TokenSession, label = REPLICATION_KEY_LABEL): ReplicationPublicKey {
  // The same kind of pair as BYOK's import wrapping key: its private half can only unwrap, never leave.
  if (find(t, pkcs11js.CKO_PUBLIC_KEY, label).length === 0) generateWrappingKeyPair(t, label, 3072, 'sha1');
  const pub = one(t, pkcs11js.CKO_PUBLIC_KEY, label, 'replication public key');
  const [modulus, publicExponent] = t.mod.C_GetAttributeValue(t.session, pub, [{ type: pkcs11js.CKA_MODULUS }, { type: pkcs11js.CKA_PUBLIC_EXPONENT }]);
  return { modulus: modulus?.value as Buffer, publicExponent: publicExponent?.value as Buffer };
}

/** Security officer ceremony on a source HSM: installs a target's public replication key as CKA_TRUSTED. */
export function trustReplicationKey(so: TokenSession, targetId: string, key: ReplicationPublicKey): Handle {
  const label = `${REPLICATION_KEY_LABEL}-${targetId}`;
  for (const old of find(so, pkcs11js.CKO_PUBLIC_KEY, label)) so.mod.C_DestroyObject(so.session, old);
  return so.mod.C_CreateObject(so.session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_RSA },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: false },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_MODULUS, value: key.modulus },
    { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: key.publicExponent },
    { type: pkcs11js.CKA_WRAP, value: true },
    { type: pkcs11js.CKA_ENCRYPT, value: false },
    { type: pkcs11js.CKA_VERIFY, value: false },
    { type: pkcs11js.CKA_TRUSTED, value: true },
  ]);
}

/**
 * A KEK's attributes (kekTemplate) except the two replication needs to differ: the source copy must be
 * extractable (under CKA_WRAP_WITH_TRUSTED) until it has been wrapped, and modifiable so that it can
 * then be made non-extractable; SoftHSM2 also refuses CKA_MODIFIABLE in an unwrap template.
 */
const aesKey = (label: string, objectId?: Buffer): pkcs11js.Template =>
  kekTemplate(label, objectId).filter((a) => a.type !== pkcs11js.CKA_EXTRACTABLE && a.type !== pkcs11js.CKA_MODIFIABLE);

export interface FleetToken {
  id: string;
  token: TokenSession;
}

/**
 * Generates the key version on the first HSM and replicates it to the others under their trusted
 * replication keys; the source copy is then made non-extractable. On a failure, the copies made so far
 * are destroyed so that the fleet is not left half-provisioned. Returns the ids that hold the key.
 */
export function createReplicated(tokens: readonly FleetToken[], label: string, objectId?: Buffer): string[] {
  const [source, ...targets] = tokens;
  if (!source) throw new Error('no HSM to create the key on');
  for (const { id, token } of tokens) {
    if (find(token, pkcs11js.CKO_SECRET_KEY, label).length > 0) throw new Error(`HSM ${id}: a key labelled "${label}" already exists`);
  }
  // Before generating anything: every target must be trusted on the source (the ceremony was done).
  const wrapping = targets.map((t) => ({ ...t, trusted: one(source.token, pkcs11js.CKO_PUBLIC_KEY, `${REPLICATION_KEY_LABEL}-${t.id}`, `trusted replication key for HSM ${t.id}`) }));
  const made: { token: TokenSession; key: Handle }[] = [];
  try {
    const template = aesKey(label, objectId);
    template.push(
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_EXTRACTABLE, value: targets.length > 0 },
      { type: pkcs11js.CKA_WRAP_WITH_TRUSTED, value: true },
    );
    const key = source.token.mod.C_GenerateKey(source.token.session, { mechanism: pkcs11js.CKM_AES_KEY_GEN, parameter: undefined }, template);
    made.push({ token: source.token, key });
    for (const t of wrapping) {
      const wrapped = source.token.mod.C_WrapKey(source.token.session, OAEP, t.trusted, key, Buffer.alloc(1024));
      const unwrapKey = one(t.token, pkcs11js.CKO_PRIVATE_KEY, REPLICATION_KEY_LABEL, `replication private key on HSM ${t.id}`);
      const copy = t.token.mod.C_UnwrapKey(t.token.session, OAEP, unwrapKey, wrapped, [
        ...aesKey(label, objectId),
        { type: pkcs11js.CKA_EXTRACTABLE, value: false },
        { type: pkcs11js.CKA_WRAP_WITH_TRUSTED, value: true },
      ]);
      made.push({ token: t.token, key: copy });
    }
    if (targets.length > 0) source.token.mod.C_SetAttributeValue(source.token.session, key, [{ type: pkcs11js.CKA_EXTRACTABLE, value: false }]);
    return tokens.map((t) => t.id);
  } catch (e) {
    for (const m of made) {
      try {
        m.token.mod.C_DestroyObject(m.token.session, m.key);
      } catch {
        /* best effort: the error below is what the operator needs */
      }
    }
    throw e;
  }
}

/** Where a key version lives: the HSM ids whose token has a secret key with this label. */
export function locate(tokens: readonly FleetToken[], label: string): string[] {
  return tokens.filter(({ token }) => find(token, pkcs11js.CKO_SECRET_KEY, label).length > 0).map((t) => t.id);
}
