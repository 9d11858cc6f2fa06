/**
 * The readiness and health probes of a stress step, on a thread of their own. autocannon saturates the
 * bench's main event loop under overload, so a probe timed there would time out waiting for the bench,
 * not for the proxy; this thread's event loop only has the probes on it.
 *
 * Protocol: workerData is a ProbeSpec (it holds the credential: never log it); the thread posts
 * 'started' once the first probes are out, and on 'stop' posts the ProbeStats of each and exits.
 */
import { randomUUID } from 'node:crypto';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { getProbe, opsProbe, ProbeStats, sampleProbe } from './overload';
import { libJs } from './paths';
import { Credential, Endpoint, post } from './workload';

export interface ProbeSpec {
  endpoint: Endpoint;
  basePath: string;
  cred: Credential;
  /** The ops port (local proxy): GET /readyz and GET /healthz there are probed too. */
  opsPort?: number;
}

export interface ProbeResults {
  readyz: ProbeStats | null;
  /** GET /healthz on the ops port (local proxy), as /readyz. */
  opsHealthz: ProbeStats | null;
  /** GET /healthz on the XKS port (a load balancer's target check), a new connection each time. */
  healthz: ProbeStats;
  health: ProbeStats;
}

/** Signed GetHealthStatus with a 1 s timeout, the way KMS's health checks (and a watching operator) see it. */
export function healthProbe(s: ProbeSpec): () => Promise<string> {
  const body = (): string => JSON.stringify({ requestMetadata: { kmsRequestId: randomUUID(), kmsOperation: 'KmsHealthCheck' } });
  return () =>
    post(s.endpoint, `${s.basePath}/health`, body(), s.cred, 1000).then(
      (r) => String(r.status),
      (e: Error) => (/within/.test(e.message) ? 'timeout' : 'error'),
    );
}

/** Starts the probes on their own thread; resolves once they run. */
export async function startProbes(spec: ProbeSpec): Promise<{ stop: () => Promise<ProbeResults> }> {
  const worker = new Worker(libJs('probe-worker.js'), { workerData: spec });
  let failure: Error | undefined;
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  // The worker's own error, never workerData (the credential) in what is reported.
  worker.on('error', (e) => (failure = new Error(`probe thread: ${e.message}`)));
  await new Promise<void>((resolve, reject) => {
    worker.once('message', () => resolve());
    void exited.then(() => reject(failure ?? new Error('probe thread exited before it started')));
  });
  return {
    stop: async () => {
      const results = new Promise<ProbeResults>((resolve, reject) => {
        worker.once('message', (r: ProbeResults) => resolve(r));
        void exited.then(() => reject(failure ?? new Error('probe thread exited without results')));
      });
      worker.postMessage('stop');
      const r = await results;
      await worker.terminate();
      return r;
    },
  };
}

if (!isMainThread && parentPort) {
  const port = parentPort;
  const data = workerData as ProbeSpec;
  // Buffers arrive as plain Uint8Arrays: TLS options want Buffers back.
  const tls = data.endpoint.tls && Object.fromEntries(Object.entries(data.endpoint.tls).map(([k, v]) => [k, typeof v === 'string' ? v : Buffer.from(v as Uint8Array)]));
  const spec: ProbeSpec = { ...data, endpoint: { ...data.endpoint, tls } };
  const readyz = spec.opsPort ? sampleProbe(opsProbe(spec.opsPort, '/readyz')) : undefined;
  const opsHealthz = spec.opsPort ? sampleProbe(opsProbe(spec.opsPort, '/healthz')) : undefined;
  const healthz = sampleProbe(getProbe(spec.endpoint, '/healthz'));
  const health = sampleProbe(healthProbe(spec));
  port.postMessage('started');
  port.once('message', () => {
    void (async () => {
      const r: ProbeResults = { readyz: readyz ? await readyz.stop() : null, opsHealthz: opsHealthz ? await opsHealthz.stop() : null, healthz: await healthz.stop(), health: await health.stop() };
      port.postMessage(r);
    })();
  });
}
