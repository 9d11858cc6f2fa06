/**
 * Requests through a node:http server inside this process, without the kernel: each connection is a
 * Duplex stream handed to the server's 'connection' event, whose written bytes are parsed back into
 * responses here. What is left is node:http's own parse and answer plus whatever the request listener
 * does, so CPU and instruction counts of many requests divide cleanly by their number (bench/stage-costs.ts).
 */
import { Duplex } from 'node:stream';
import type { Server } from 'node:http';

/** One request as bytes on the wire (request line, headers, body). */
export function wireBytes(method: string, path: string, headers: Readonly<Record<string, string>>, body: string): Buffer {
  let head = `${method} ${path} HTTP/1.1\r\n`;
  let length = false;
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() === 'content-length') length = true;
    head += `${k}: ${v}\r\n`;
  }
  if (!length) head += `content-length: ${Buffer.byteLength(body)}\r\n`;
  return Buffer.concat([Buffer.from(head + '\r\n'), Buffer.from(body)]);
}

const HEAD_END = Buffer.from('\r\n\r\n');

/** A client's end of an in-process connection: sends one request at a time and resolves with its status. */
class Connection extends Duplex {
  readonly remoteAddress = '127.0.0.1';
  readonly remotePort = 40000;
  readonly localAddress = '127.0.0.1';
  readonly localPort = 8000;
  readonly encrypted = false;
  private received: Buffer = Buffer.alloc(0);
  private waiting: ((status: number) => void) | undefined;
  /** Answers seen, by HTTP status. */
  readonly statuses = new Map<number, number>();
  /** write calls made by the server on this connection (each would be one write/writev system call). */
  writes = 0;

  setTimeout(): this {
    return this;
  }
  setNoDelay(): this {
    return this;
  }
  setKeepAlive(): this {
    return this;
  }
  override _read(): void {
    // Requests are pushed by send().
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (error?: Error | null) => void): void {
    this.writes++;
    this.collect(chunk);
    cb();
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (error?: Error | null) => void): void {
    this.writes++;
    for (const c of chunks) this.collect(c.chunk);
    cb();
  }

  override _final(cb: () => void): void {
    cb();
  }

  send(request: Buffer): Promise<number> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.push(request);
    });
  }

  private collect(chunk: Buffer): void {
    this.received = this.received.length === 0 ? chunk : Buffer.concat([this.received, chunk]);
    const end = this.received.indexOf(HEAD_END);
    if (end < 0) return;
    const head = this.received.subarray(0, end).toString('latin1');
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
    if (this.received.length < end + 4 + length) return;
    const status = Number(head.slice(9, 12));
    this.received = this.received.subarray(end + 4 + length);
    this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
    const w = this.waiting;
    this.waiting = undefined;
    w?.(status);
  }
}

export interface DriveResult {
  requests: number;
  statuses: Record<number, number>;
  /** Server write calls per request. */
  writesPerRequest: number;
}

/**
 * Sends `count` requests, taken round-robin from `requests`, over `connections` keep-alive connections
 * that each wait for an answer before sending their next request.
 */
export async function drive(server: Server, requests: readonly Buffer[], count: number, connections = 1): Promise<DriveResult> {
  const conns = Array.from({ length: connections }, () => {
    const c = new Connection();
    server.emit('connection', c);
    return c;
  });
  let next = 0;
  await Promise.all(
    conns.map(async (c) => {
      while (next < count) {
        const r = requests[next++ % requests.length] as Buffer;
        // Each request in a loop turn of its own, as from a socket: timers (the deadline's, the
        // overload guard's sampler) run between requests as they would.
        await new Promise(setImmediate);
        await c.send(r);
      }
    }),
  );
  const statuses: Record<number, number> = {};
  let writes = 0;
  for (const c of conns) {
    for (const [s, n] of c.statuses) statuses[s] = (statuses[s] ?? 0) + n;
    writes += c.writes;
    c.destroy();
  }
  return { requests: count, statuses, writesPerRequest: writes / count };
}
