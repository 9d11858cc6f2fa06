/**
 * A key store's quota across cluster workers, on a real proxy process with two workers. KMS keeps a few
 * keep-alive connections open per key store, and each worker accepts its own connections, so all of
 * them can land on one worker: that worker must still admit the whole quota, the two workers together
 * no more than it, and a configuration reload (which builds new key store objects) must not hand out
 * a fresh budget.
 */
import { KeepAliveConnection, ProxyProcess, startProxyProcess } from './support/proxy-process';
import { keyStoreWithKeys, newCredential, testConfig } from './support/proxy';

const RATE = 200;
const PATH = '/t/kms/xks/v1/health';
const cred = newCredential();

const config = (creds = [cred]): ReturnType<typeof testConfig> =>
  testConfig([keyStoreWithKeys('t', '/t', creds, [{ id: 'k', label: 'test-key-1' }], { keyStore: { requestsPerSecond: RATE } })], {
    server: { workers: 2 },
  });

const health = (kmsRequestId: string): unknown => ({ requestMetadata: { kmsRequestId, kmsOperation: 'KmsHealthCheck' } });

let proxy: ProxyProcess;
/** Keep-alive connections by the worker (pid) that serves them. */
const byWorker = new Map<number, KeepAliveConnection[]>();
let busy: KeepAliveConnection[];
let other: KeepAliveConnection[];

beforeAll(async () => {
  // Round robin hands new connections to the workers in turn, so the layout below is reached within a
  // few connections; which worker served each is read from the request log, not assumed.
  proxy = await startProxyProcess(config(), { env: { NODE_CLUSTER_SCHED_POLICY: 'rr' } });
  const layoutDone = (): boolean => {
    const sizes = [...byWorker.values()].map((c) => c.length).sort((a, b) => b - a);
    return (sizes[0] ?? 0) >= 4 && (sizes[1] ?? 0) >= 2;
  };
  for (let i = 0; i < 20 && !layoutDone(); i++) {
    const c = new KeepAliveConnection(proxy.port, cred);
    const id = `probe-${i}`;
    expect((await c.post(PATH, health(id))).status).toBe(200);
    const pid = await proxy.servedBy(id);
    byWorker.set(pid, [...(byWorker.get(pid) ?? []), c]);
  }
  expect(layoutDone()).toBe(true);
  const [first, second] = [...byWorker.values()].sort((a, b) => b.length - a.length) as [KeepAliveConnection[], KeepAliveConnection[]];
  busy = first.slice(0, 4);
  other = second.slice(0, 2);
}, 60_000);

afterAll(async () => {
  for (const conns of byWorker.values()) for (const c of conns) c.close();
  await proxy?.stop();
});

// Real time in the pacing below: the quota is a rate on the proxy processes' own clocks, across real sockets.
/**
 * Open-loop load: `perSecond` requests a second, evenly spaced and spread over `conns` in turn, for
 * `ms`. A request is never sent before its time, so the load never exceeds the rate over any window.
 */
async function paced(conns: KeepAliveConnection[], perSecond: number, ms: number, label: string): Promise<number[]> {
  const total = Math.round((perSecond * ms) / 1000);
  const answers: Promise<number>[] = [];
  const start = performance.now();
  for (let k = 0; k < total; k++) {
    const wait = start + (k * 1000) / perSecond - performance.now();
    if (wait >= 1) await new Promise((r) => setTimeout(r, wait));
    answers.push((conns[k % conns.length] as KeepAliveConnection).post(PATH, health(`${label}-${k}`)).then((r) => r.status));
  }
  return Promise.all(answers);
}

/** Each request at most this often per connection: 4 connections offer up to 800 a second, 4x the quota. */
const FLOOD_GAP_MS = 5;

/**
 * Far over the quota: each connection sends its next request once the last is answered (and
 * FLOOD_GAP_MS passed), for `ms`; `midway` runs halfway. Returns every status, and the seconds from
 * the first request sent to the last answer: whatever was admitted was admitted within them.
 */
async function flood(conns: KeepAliveConnection[], ms: number, label: string, midway?: () => void): Promise<{ statuses: number[]; seconds: number }> {
  const statuses: number[] = [];
  const start = performance.now();
  const timer = midway && setTimeout(midway, ms / 2);
  await Promise.all(
    conns.map(async (c, i) => {
      for (let k = 0; performance.now() - start < ms; k++) {
        const sent = performance.now();
        statuses.push((await c.post(PATH, health(`${label}-${i}-${k}`))).status);
        const wait = sent + FLOOD_GAP_MS - performance.now();
        if (wait >= 1) await new Promise((r) => setTimeout(r, wait));
      }
    }),
  );
  clearTimeout(timer);
  return { statuses, seconds: (performance.now() - start) / 1000 };
}

const count = (statuses: number[], status: number): number => statuses.filter((s) => s === status).length;
/**
 * Requests the quota let through: every answer but its 429 (GetHealthStatus is never shed, so a 429 is
 * the quota's). On a loaded machine a deep health check can fail, and its request still spent a token.
 */
const admittedOf = (statuses: number[]): number => statuses.length - count(statuses, 429);
const reloads = (): number => proxy.output().split('\n').filter((l) => l.includes('"msg":"configuration reloaded"')).length;

test('four keep-alive connections on one worker at 90% of the quota are never throttled', async () => {
  const statuses = await paced(busy, RATE * 0.9, 4000, 'ninety');
  expect(count(statuses, 429)).toBe(0);
  expect(count(statuses, 200)).toBeGreaterThan(0);
  // Each connection stayed the same one, on that worker, all along.
  for (const c of busy) expect(c.sockets.size).toBe(1);
}, 30_000);

test('far over the quota, the same connections get 429s, and that one worker still admits the whole quota', async () => {
  const { statuses, seconds } = await flood(busy, 3000, 'over-one');
  const admitted = admittedOf(statuses);
  expect(count(statuses, 429)).toBeGreaterThan(0);
  // At most the bucket's second of burst plus the rate, and what the workers hold (1.5 leases of 50 ms each).
  expect(admitted).toBeLessThanOrEqual(RATE * (seconds + 1.25));
  expect(admitted).toBeGreaterThanOrEqual(RATE * seconds * 0.9);
  for (const c of busy) expect(c.sockets.size).toBe(1);
}, 30_000);

test('two workers over the quota together admit the quota, and a reload midway does not reset it', async () => {
  const conns = [...busy.slice(0, 2), ...other];
  // Spends whatever the bucket holds, so that what follows is what the rate refills.
  await flood(conns, 1000, 'drain');
  const before = reloads();
  // Halfway, a credential is added (a rotation), and every worker reloads its configuration.
  const run = await flood(conns, 4000, 'over-two', () => proxy.rewrite(config([cred, newCredential()])));
  expect(reloads() - before).toBeGreaterThanOrEqual(2);
  const admitted = admittedOf(run.statuses);
  // The rate over the run, what the workers held (0.15 s of it) and a margin: a reload that handed out
  // a fresh budget would add a whole second, and a quota applied per worker would double it.
  expect(admitted).toBeLessThanOrEqual(RATE * (run.seconds + 0.5));
  expect(admitted).toBeGreaterThanOrEqual(RATE * run.seconds * 0.9);
}, 30_000);
