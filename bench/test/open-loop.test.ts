import { expect } from '@jest/globals';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { runOpenLoop } from '../lib/open-loop';
import { localEndpoint, SignedPool } from '../lib/workload';

/**
 * The open-loop generator of `--mode overload` (bench/lib/open-loop.ts, its thread compiled to dist-bench/
 * by the test run's global setup) against a bare node:http server: requests leave on schedule as node:http
 * parses them, answers are counted by status, and Connection: close and a full connection cap are handled
 * as bench/README.md says.
 */

const cred = { accessKeyId: 'AKIAOPENLOOPTEST2345', secretAccessKey: 'open/loop/test/secret/0123456789abcdefghijk' };

async function server(handler: http.RequestListener): Promise<{ port: number; close: () => Promise<void> }> {
  const s = http.createServer(handler);
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return {
    port: (s.address() as AddressInfo).port,
    close: () => {
      s.closeAllConnections();
      return new Promise((resolve) => s.close(() => resolve()));
    },
  };
}

test('sends its rate on schedule as well-formed signed requests; counts answers by status; reopens after Connection: close', async () => {
  let n = 0;
  const seen: { method?: string; url?: string; host?: string; auth: boolean; bodyOk: boolean }[] = [];
  const srv = await server((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      let bodyOk = body.length === Number(req.headers['content-length']);
      try {
        JSON.parse(body.toString('utf8'));
      } catch {
        bodyOk = false;
      }
      seen.push({ method: req.method, url: req.url, host: req.headers.host, auth: /^AWS4-HMAC-SHA256 /.test(req.headers.authorization ?? ''), bodyOk });
      // Every fifth is refused and its connection closed, as the proxy does after a body it did not read.
      if (++n % 5 === 0) {
        res.writeHead(429, { 'content-type': 'application/json', connection: 'close' });
        res.end('{"errorName":"ThrottlingException","errorMessage":"slow down"}');
      } else res.end('{"ok":true}');
    });
  });
  try {
    const endpoint = localEndpoint(srv.port);
    const pool = new SignedPool(endpoint, cred, 'encrypt', 20, '/kms/xks/v1', []);
    const statuses: Record<string, number> = {};
    const run = await runOpenLoop({ label: 't', endpoint, connections: 50, durationS: 1.5, rate: 200, pacing: 'smooth', pool, rampS: 0, onResponse: (status) => (statuses[status] = (statuses[status] ?? 0) + 1) });
    const g = run.openLoop!;
    expect(g.scheduled).toBe(300);
    expect(g.written + g.unsentAtEnd + g.noConnection).toBe(300);
    expect(g.written).toBeGreaterThanOrEqual(295);
    expect({ noConnection: g.noConnection, late: run.late, errors: run.errors, timeouts: run.timeouts, socketErrors: g.socketErrors }).toEqual({ noConnection: 0, late: 0, errors: 0, timeouts: 0, socketErrors: {} });
    // What the server answered is what the generator counted (but the last few, in flight at the stop).
    expect(seen.length).toBeGreaterThanOrEqual(g.written - 3);
    expect(statuses['200']! + statuses['429']!).toBe(run.requests);
    expect(run.requests).toBeGreaterThanOrEqual(seen.length - 3);
    expect(statuses['429']).toBeGreaterThanOrEqual(Math.floor(run.requests / 5) - 1);
    expect(run.errorNames).toEqual({ ThrottlingException: statuses['429'] });
    expect(run.non2xx).toBe(statuses['429']);
    // Each refusal closed its connection; the next send found another or opened one.
    expect(g.closedByServer).toBe(statuses['429']);
    expect(g.opened).toBeGreaterThanOrEqual(statuses['429']!);
    expect(new Set(seen.map((r) => JSON.stringify({ ...r, url: r.url?.replace(/\/keys\/[^/]+\//, '/keys/K/') })))).toEqual(
      new Set([JSON.stringify({ method: 'POST', url: '/kms/xks/v1/keys/K/encrypt', host: endpoint.hostHeader, auth: true, bodyOk: true })]),
    );
    expect(run.rps).toBeGreaterThan(180);
  } finally {
    await srv.close();
  }
}, 20_000);

test('a send that finds every connection busy and the cap reached is dropped and counted as late, not queued', async () => {
  const held: http.ServerResponse[] = [];
  const srv = await server((req, res) => {
    req.resume();
    held.push(res); // never answered
  });
  try {
    const endpoint = localEndpoint(srv.port);
    const pool = new SignedPool(endpoint, cred, 'encrypt', 10, '/kms/xks/v1', []);
    const run = await runOpenLoop({ label: 't', endpoint, connections: 4, durationS: 1, rate: 100, pacing: 'smooth', pool, rampS: 0.5 });
    const g = run.openLoop!;
    expect({ written: g.written, opened: g.opened, maxOpen: g.maxOpen }).toEqual({ written: 4, opened: 4, maxOpen: 4 });
    expect(g.noConnection).toBe(g.scheduled - 4 - g.unsentAtEnd);
    // Only those after the ramp (0.5 s) are late; the step's other figures count from the ramp too.
    expect(run.late).toBeGreaterThanOrEqual(45);
    expect(run.late).toBeLessThanOrEqual(51);
    expect(run.requests).toBe(0);
  } finally {
    for (const res of held) res.destroy();
    await srv.close();
  }
}, 20_000);
