/**
 * The bare baseline for bench/run.ts: node:http answering a fixed ~150-byte JSON body (the shape of
 * an XKS encrypt answer) to any POST, after reading the request body. No parsing, no signature
 * check, no HSM: what node:http alone costs on this machine, measured with the same load.
 *
 *   node dist-bench/bench/baseline-server.js --port PORT [--workers N]
 */
import cluster from 'node:cluster';
import http from 'node:http';
import { baselineHandler } from './lib/baseline';

const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] as string) : def;
};
const port = Number(arg('port', '0'));
const workers = Math.max(1, Number(arg('workers', '1')));

function serve(): void {
  const server = http.createServer(baselineHandler);
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
