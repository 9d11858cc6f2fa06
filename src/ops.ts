import type { RequestListener } from 'node:http';

/**
 * The ops port: liveness, readiness (/readyz with its reasons, /healthz as the XKS port answers it) and Prometheus metrics, for a single process (src/app.ts) and for the
 * cluster primary (src/main.ts), which answers for all its workers. A new operator endpoint (a debug
 * dump, say) goes in ENDPOINTS here; the XKS port serves only the XKS API and GET /healthz (the same
 * readiness, for load balancers that can reach only that port).
 */

/** `ready` decides the status code; the other fields explain it in the /readyz body. */
export type Readiness = { ready: boolean } & Record<string, unknown>;

export interface OpsSources {
  readiness(): Readiness;
  /** The Prometheus exposition text (this process's registry, or the cluster's aggregate). */
  metrics(): Promise<string>;
  metricsContentType: string;
}

type Send = (status: number, body: string, type?: string) => void;

const ENDPOINTS: Readonly<Record<string, (src: OpsSources, send: Send) => void>> = {
  '/livez': (_src, send) => send(200, '{"status":"ok"}'),
  '/readyz': (src, send) => {
    const r = src.readiness();
    send(r.ready ? 200 : 503, JSON.stringify(r));
  },
  // What the XKS port's GET /healthz answers (src/http/pipeline.ts), for probes configured by that name.
  '/healthz': (src, send) => {
    const ok = src.readiness().ready;
    send(ok ? 200 : 503, ok ? '{"status":"ok"}' : '{"status":"unavailable"}');
  },
  '/metrics': (src, send) => {
    src.metrics().then(
      (text) => send(200, text, src.metricsContentType),
      () => send(500, '{"error":"metrics unavailable"}'),
    );
  },
};

export function createOpsHandler(src: OpsSources): RequestListener {
  return (req, res) => {
    req.resume();
    const send: Send = (status, body, type = 'application/json') => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    if (req.method !== 'GET') return send(405, '{"error":"GET only"}');
    const endpoint = ENDPOINTS[req.url ?? ''];
    if (!endpoint) return send(404, '{"error":"not found"}');
    endpoint(src, send);
  };
}
