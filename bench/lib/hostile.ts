/**
 * Hostile traffic on top of a valid load: what the internet sends a proxy that KMS also talks to.
 * Four kinds, in equal shares of --rate, each on its own fresh connection (raw sockets, so that the
 * bench controls every byte and sees how the proxy ends the connection):
 *
 *  bad-signature   a complete encrypt request for a real key, signed with the right access key id and
 *                  a wrong secret (a client with a stale secret, or a guesser): expect 401 at once.
 *  aborted-body    headers correctly signed, half of the declared body, then the client resets the
 *                  socket: a client giving up. The proxy cannot answer; it must not count it as its own
 *                  failure (see the issue) nor hold anything for it.
 *  slow-headers    a request line and then one header line per second, never finishing (slowloris):
 *                  how long the proxy lets such a client live is the figure (`lifetimeMs`).
 *  oversized-body  Content-Length far above server.maxBodyBytes, and the body streamed anyway, up to
 *                  OVERSIZED_SEND bytes: expect a quick refusal and the socket closed by the proxy, without
 *                  reading (or 100-continuing) the rest.
 *
 * Requests go to a key path whose id (`keyId`) the caller chooses, so that audit lines of hostile
 * traffic can be told apart from the valid load's.
 */
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Credential, encryptBody, Endpoint, signRequest } from './workload';

/** Hostile requests go to this key id: their audit lines are told apart by it. */
export const HOSTILE_KEY_ID = 'hostile-probe';

const HOSTILE_KINDS = ['bad-signature', 'aborted-body', 'slow-headers', 'oversized-body'] as const;
export type HostileKind = (typeof HOSTILE_KINDS)[number];

export interface HostileSpec {
  endpoint: Endpoint;
  /** XKS base path, ending in /kms/xks/v1. */
  basePath: string;
  /** Key id in the hostile requests' path (need not exist: the requests never get that far). */
  keyId: string;
  /** The current valid credential (it may rotate during a soak): aborted bodies are correctly signed. */
  credential: () => Credential;
  /** Hostile connections opened per second, over all kinds. */
  rate: number;
  /** Connections open at once, at most (the client's file descriptors are finite too). */
  maxOpen?: number;
}

interface KindStats {
  /** Connections opened. */
  sent: number;
  /** HTTP status of the first answer, by status ("100" when the proxy said 100 Continue first). */
  answered: Record<string, number>;
  /** Connections the proxy closed (FIN or reset) while the client still held them. */
  closedByProxy: number;
  /** Connections still open when the run ended (the client closed them). */
  openAtEnd: number;
  /** Time from connect to the first answer, ms. */
  answerMs: { p50: number; p99: number; max: number };
  /** Time from connect to the proxy closing the connection, ms (slow clients: how long they live). */
  lifetimeMs: { p50: number; p99: number; max: number };
  /** Body bytes the proxy accepted before it closed (oversized-body: what it read for nothing). */
  bodyBytesWritten: number;
  connectErrors: number;
}

export interface HostileReport {
  rate: number;
  durationS: number;
  kinds: Record<HostileKind, KindStats>;
  /** Most hostile connections open at once. */
  maxOpen: number;
  /** Ticks where the maxOpen cap held a connection back. */
  capped: number;
}

/** Declared body of an oversized request: far above any allowed server.maxBodyBytes (1 MiB at most). */
const OVERSIZED_DECLARED = 16 * 1024 * 1024;
/** What an oversized client streams before giving up (the issue saw 24 GB read and discarded). */
const OVERSIZED_SEND = 1024 * 1024;
const SLOW_HEADER_EVERY_MS = 1000;

const pct = (list: number[], q: number): number => {
  if (list.length === 0) return 0;
  const s = [...list].sort((a, b) => a - b);
  return Math.round((s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] as number) * 10) / 10;
};

class KindCollector {
  sent = 0;
  answered: Record<string, number> = {};
  closedByProxy = 0;
  openAtEnd = 0;
  bodyBytesWritten = 0;
  connectErrors = 0;
  answerMs: number[] = [];
  lifetimeMs: number[] = [];
  stats(): KindStats {
    const three = (l: number[]) => ({ p50: pct(l, 0.5), p99: pct(l, 0.99), max: pct(l, 1) });
    return {
      sent: this.sent,
      answered: this.answered,
      closedByProxy: this.closedByProxy,
      openAtEnd: this.openAtEnd,
      answerMs: three(this.answerMs),
      lifetimeMs: three(this.lifetimeMs),
      bodyBytesWritten: this.bodyBytesWritten,
      connectErrors: this.connectErrors,
    };
  }
}

export class HostileTraffic {
  private readonly sockets = new Map<net.Socket, HostileKind>();
  private readonly collectors = Object.fromEntries(HOSTILE_KINDS.map((k) => [k, new KindCollector()])) as Record<HostileKind, KindCollector>;
  private running = false;
  private ticker?: NodeJS.Timeout;
  private started = 0;
  private stoppedAt = 0;
  private maxOpen = 0;
  private capped = 0;
  private turn = 0;

  constructor(private readonly spec: HostileSpec) {}

  start(): void {
    this.running = true;
    this.started = performance.now();
    // Every 10 ms, the connections due since the last tick, kinds taking turns.
    const perTick = this.spec.rate / 100;
    let carry = 0;
    this.ticker = setInterval(() => {
      carry += perTick;
      while (carry >= 1) {
        carry -= 1;
        if (this.sockets.size >= (this.spec.maxOpen ?? 4000)) {
          this.capped++;
          continue;
        }
        this.open(HOSTILE_KINDS[this.turn++ % HOSTILE_KINDS.length] as HostileKind);
      }
    }, 10);
  }

  /** Stops opening connections and closes those still open. */
  stop(): HostileReport {
    this.running = false;
    clearInterval(this.ticker);
    this.stoppedAt = performance.now();
    for (const [s, kind] of this.sockets) {
      this.collectors[kind].openAtEnd++;
      s.destroy();
    }
    this.sockets.clear();
    return this.report();
  }

  report(): HostileReport {
    const end = this.stoppedAt || performance.now();
    return {
      rate: this.spec.rate,
      durationS: Math.round((end - this.started) / 100) / 10,
      kinds: Object.fromEntries(HOSTILE_KINDS.map((k) => [k, this.collectors[k].stats()])) as Record<HostileKind, KindStats>,
      maxOpen: this.maxOpen,
      capped: this.capped,
    };
  }

  private connect(): net.Socket {
    const ep = this.spec.endpoint;
    return ep.tls ? tls.connect({ host: ep.host, port: ep.port, ca: ep.tls.ca, cert: ep.tls.cert, key: ep.tls.key, servername: ep.tls.servername }) : net.connect(ep.port, ep.host);
  }

  private open(kind: HostileKind): void {
    const c = this.collectors[kind];
    const path = `${this.spec.basePath}/keys/${this.spec.keyId}/encrypt`;
    const host = this.spec.endpoint.hostHeader;
    const s = this.connect();
    const t0 = performance.now();
    let connected = false;
    let answered = false;
    let clientClosing = false;
    const timers: NodeJS.Timeout[] = [];
    c.sent++;
    this.sockets.set(s, kind);
    this.maxOpen = Math.max(this.maxOpen, this.sockets.size);
    const closeByClient = (): void => {
      clientClosing = true;
      s.destroy();
    };
    s.on(this.spec.endpoint.tls ? 'secureConnect' : 'connect', () => {
      connected = true;
      switch (kind) {
        case 'bad-signature': {
          const body = encryptBody();
          const cred = this.spec.credential();
          const headers = signRequest(host, path, body, { accessKeyId: cred.accessKeyId, secretAccessKey: randomBytes(30).toString('base64') }, this.spec.endpoint.region);
          s.write(head(path, headers) + body);
          break;
        }
        case 'aborted-body': {
          const body = encryptBody();
          const headers = signRequest(host, path, body, this.spec.credential(), this.spec.endpoint.region);
          s.write(head(path, headers) + body.slice(0, body.length >> 1));
          timers.push(setTimeout(() => {
            if (s.destroyed) return;
            clientClosing = true;
            // A TCP reset where there is a TCP handle; over TLS the socket's handle is the TLS layer's.
            try {
              s.resetAndDestroy();
            } catch {
              s.destroy();
            }
          }, 50));
          break;
        }
        case 'slow-headers': {
          s.write(`POST ${path} HTTP/1.1\r\nHost: ${host}\r\n`);
          let n = 0;
          const trickle = (): void => {
            if (s.destroyed || !this.running) return;
            s.write(`X-Slow-${n++}: ${'x'.repeat(20)}\r\n`);
            timers.push(setTimeout(trickle, SLOW_HEADER_EVERY_MS));
          };
          timers.push(setTimeout(trickle, SLOW_HEADER_EVERY_MS));
          break;
        }
        case 'oversized-body': {
          s.write(`POST ${path} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/json\r\nContent-Length: ${OVERSIZED_DECLARED}\r\n\r\n`);
          const chunk = Buffer.alloc(16 * 1024, 0x61);
          let sentBody = 0;
          // Write while the socket takes it; stop at the cap or once the proxy has hung up.
          const pump = (): void => {
            while (!s.destroyed && s.writable && sentBody < OVERSIZED_SEND) {
              sentBody += chunk.length;
              c.bodyBytesWritten += chunk.length;
              if (!s.write(chunk)) {
                s.once('drain', pump);
                return;
              }
            }
          };
          pump();
          break;
        }
      }
    });
    s.on('data', (d: Buffer) => {
      if (answered) return;
      answered = true;
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(d.toString('latin1', 0, 16))?.[1] ?? 'other';
      c.answered[status] = (c.answered[status] ?? 0) + 1;
      c.answerMs.push(performance.now() - t0);
      // A client that got its refusal hangs up after a grace: the proxy should have closed first.
      if (kind === 'bad-signature') timers.push(setTimeout(closeByClient, 2000));
    });
    s.on('error', () => {
      if (!connected) c.connectErrors++;
    });
    s.on('close', () => {
      timers.forEach(clearTimeout);
      this.sockets.delete(s);
      // Counted as open at the end by stop(), or closed by this client on purpose.
      if (!connected || clientClosing || !this.running) return;
      c.closedByProxy++;
      c.lifetimeMs.push(performance.now() - t0);
    });
    // A connection's end seen by the proxy as a half-close would leave the socket open: end our side too.
    s.on('end', () => s.end());
  }
}

function head(path: string, headers: Record<string, string>): string {
  return `POST ${path} HTTP/1.1\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`;
}
