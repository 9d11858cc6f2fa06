import { createPublicKey, generateKeyPairSync, KeyObject, sign, verify } from 'node:crypto';

/** What an approver signs: bound to the group's name and the hash of its whole state. */
function approvalMessage(group: string, stateHash: string): Buffer {
  return Buffer.from(`xks-proxy governance v1\ngroup ${group}\nstate ${stateHash}\n`, 'utf8');
}

/** An Ed25519 key pair: the private key as PKCS#8 PEM for its owner, the public key as base64 SPKI DER for the config. */
export function generateApproverKey(): { privateKeyPem: string; publicKey: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKey: publicKey.export({ type: 'spki', format: 'der' }).toString('base64'),
  };
}

export function parsePublicKey(b64: string): KeyObject {
  const key = createPublicKey({ key: Buffer.from(b64, 'base64'), format: 'der', type: 'spki' });
  if (key.asymmetricKeyType !== 'ed25519') throw new Error('not an Ed25519 public key');
  return key;
}

export function publicKeyOf(privateKeyPem: string): string {
  return createPublicKey(privateKeyPem).export({ type: 'spki', format: 'der' }).toString('base64');
}

export function signApproval(privateKeyPem: string, group: string, stateHash: string): string {
  return sign(null, approvalMessage(group, stateHash), privateKeyPem).toString('base64');
}

export function verifyApproval(publicKey: KeyObject, group: string, stateHash: string, signature: string): boolean {
  try {
    return verify(null, approvalMessage(group, stateHash), publicKey, Buffer.from(signature, 'base64'));
  } catch {
    return false;
  }
}
