/**
 * The bare baseline for bench/run.ts: node:http answering a fixed ~150-byte JSON body (the shape of
 * an XKS encrypt answer) to any POST, after reading the request body. No parsing, no signature
 * check, no HSM: what node:http alone costs on this machine, measured with the same load.
 *
 *   node dist-bench/bench/baseline-server.js --port PORT [--workers N]
 */
import cluster from 'node:cluster';
import http from 'node:http';

const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] as string) : def;
};
const port = Number(arg('port', '0'));
const workers = Math.max(1, Number(arg('workers', '1')));

const BODY = Buffer.from(
  JSON.stringify({
    ciphertext: 'q1VxuDOeIthPWzKx2KcG2bkM8Xx8bWqI0wZ9Kc3dJ6w=',
    ciphertextMetadata: 'AAE=',
    initializationVector: 'y8/a9ng2Bmx1ocsf',
    authenticationTag: 'pMmT+V9Mr2SvJ3y1mY3CZQ==',
  }),
);
const HEADERS = { 'content-type': 'application/json', 'content-length': String(BODY.length) };

function serve(): void {
  const server = http.createServer((req, res) => {
    req.on('data', () => undefined);
    req.on('end', () => {
      if (req.method !== 'POST') {
        res.writeHead(405).end();
        return;
      }
      res.writeHead(200, HEADERS);
      res.end(BODY);
    });
  });
  server.keepAliveTimeout = 65_000;
  server.listen(port, '127.0.0.1');
  process.once('SIGTERM', () => server.close(() => process.exit(0)));
}

if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  process.once('SIGTERM', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 2000).unref();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
    });
  });
} else {
  serve();
}
