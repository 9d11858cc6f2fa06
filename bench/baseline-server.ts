/**
 * The bare baseline for bench/run.ts: node:http answering a fixed ~150-byte JSON body (the shape of
 * an XKS encrypt answer) to any POST, after reading the request body. No parsing, no signature
 * check, no HSM: what node:http alone costs on this machine, measured with the same load.
 *
 *   node dist-bench/bench/baseline-server.js --port PORT [--workers N]
 */
import http from 'node:http';
import { baselineHandler } from './lib/baseline';
import { serveOnWorkers, serverArg } from './lib/server-processes';

serveOnWorkers(Math.max(1, Number(serverArg('workers', '1'))), () => {
  const server = http.createServer(baselineHandler);
  server.keepAliveTimeout = 65_000;
  server.listen(Number(serverArg('port', '0')), '127.0.0.1');
  process.once('SIGTERM', () => server.close(() => process.exit(0)));
});
