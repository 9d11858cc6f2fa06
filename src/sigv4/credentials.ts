import { randomBytes, randomInt } from 'node:crypto';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** A fresh SigV4 credential in the shapes the XKS spec requires (access key id: 26 chars of A-Z2-7; secret: 256-bit Base64). */
export function generateCredential(): { accessKeyId: string; secretAccessKey: string } {
  let accessKeyId = '';
  for (let i = 0; i < 26; i++) accessKeyId += BASE32[randomInt(32)];
  return { accessKeyId, secretAccessKey: randomBytes(32).toString('base64') };
}
