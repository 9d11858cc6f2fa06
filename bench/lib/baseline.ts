import type { RequestListener } from 'node:http';

/** A fixed body shaped like an XKS encrypt answer (about 150 bytes). */
const BODY = Buffer.from(
  JSON.stringify({
    ciphertext: 'q1VxuDOeIthPWzKx2KcG2bkM8Xx8bWqI0wZ9Kc3dJ6w=',
    ciphertextMetadata: 'AAE=',
    initializationVector: 'y8/a9ng2Bmx1ocsf',
    authenticationTag: 'pMmT+V9Mr2SvJ3y1mY3CZQ==',
  }),
);
const HEADERS = { 'content-type': 'application/json', 'content-length': String(BODY.length) };

/**
 * The bare baseline's request listener: reads the request body and answers any POST with the fixed
 * body. No parsing, no signature check, no HSM: what node:http alone costs (bench/baseline-server.ts
 * serves it on a port, bench/stage-costs.ts in process).
 */
export const baselineHandler: RequestListener = (req, res) => {
  req.on('data', () => undefined);
  req.on('end', () => {
    if (req.method !== 'POST') {
      res.writeHead(405).end();
      return;
    }
    res.writeHead(200, HEADERS);
    res.end(BODY);
  });
};
