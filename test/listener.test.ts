import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { buildRuntimeConfig, ConfigError } from '../src/config/load';
import { createListener, Listener, ListenerOptions } from '../src/http/listener';
import { silentLogger } from '../src/log';
import { ProxyEvents } from '../src/events';
import { makePki } from './support/pki';
import { until } from './support/promises';

/** Reads the whole body before answering, as the XKS handler does. */
const echoLength: http.RequestListener = (req, res) => {
  let n = 0;
  req.on('data', (c: Buffer) => (n += c.length));
  req.on('end', () => res.end(String(n)));
};

async function start(opts: Partial<ListenerOptions>): Promise<{ listener: Listener; port: number }> {
  const listener = createListener(echoLength, { keepAliveTimeoutMs: 5000, logger: silentLogger, ...opts });
  await new Promise<void>((r) => listener.server.listen(0, '127.0.0.1', r));
  return { listener, port: (listener.server.address() as AddressInfo).port };
}

async function stop(l: Listener): Promise<void> {
  l.dispose();
  l.server.closeAllConnections();
  await new Promise((r) => l.server.close(r));
}

interface Watched {
  socket: net.Socket;
  received: () => string;
  /** Milliseconds from connect to close. */
  closed: Promise<number>;
}

function connect(port: number): Promise<Watched> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    let data = '';
    const socket = net.connect(port, '127.0.0.1');
    const closed = new Promise<number>((r) => socket.once('close', () => r(Date.now() - t0)));
    socket.on('data', (d) => (data += d.toString('latin1')));
    socket.on('error', () => undefined);
    socket.once('connect', () => resolve({ socket, received: () => data, closed }));
    socket.once('error', reject);
  });
}

/** One keep-alive request on an open connection; resolves with the status line once the answer's head arrived. */
function request(w: Watched, body = 'x'): Promise<string> {
  const before = w.received().length;
  const answer = new Promise<string>((resolve, reject) => {
    const onData = (): void => {
      const got = w.received().slice(before);
      if (!got.includes('\r\n\r\n')) return;
      w.socket.off('data', onData);
      resolve(got.split('\r\n')[0] as string);
    };
    // After connect()'s own listener, which appends to what was received.
    w.socket.on('data', onData);
    void w.closed.then(() => reject(new Error('connection closed before the answer')));
  });
  w.socket.write(`POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  return answer;
}

const SLACK_MS = 1500;

// Real time throughout: these bounds are node:http's own timers on real sockets, which no fake clock reaches.
describe('connection bounds', () => {
  let listener: Listener;
  let port: number;
  beforeAll(async () => ({ listener, port } = await start({ headersTimeoutMs: 1000, requestTimeoutMs: 2500, maxConnections: 1000 })));
  afterAll(() => stop(listener));

  it('closes a slowloris client (headers trickled) once the header timeout passes', async () => {
    const c = await connect(port);
    c.socket.write('POST / HTTP/1.1\r\nHost: x\r\n');
    const drip = setInterval(() => c.socket.writable && c.socket.write('X-Drip: 1\r\n'), 200);
    const ms = await c.closed;
    clearInterval(drip);
    expect(ms).toBeGreaterThanOrEqual(900);
    expect(ms).toBeLessThanOrEqual(1000 + SLACK_MS);
    expect(c.received()).toMatch(/^(HTTP\/1\.1 408|$)/);
  });

  it('closes a client that sends its headers and part of the body, then stalls, once the request timeout passes', async () => {
    const c = await connect(port);
    c.socket.write(`POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65536\r\n\r\n${'a'.repeat(65535)}`);
    const ms = await c.closed;
    // Past the header timeout (the headers were complete), within the request timeout.
    expect(ms).toBeGreaterThanOrEqual(2400);
    expect(ms).toBeLessThanOrEqual(2500 + SLACK_MS);
    expect(c.received()).toMatch(/^(HTTP\/1\.1 408|$)/);
  });

  it('closes a connection that never sends a byte once the header timeout passes', async () => {
    const c = await connect(port);
    const ms = await c.closed;
    expect(ms).toBeLessThanOrEqual(1000 + SLACK_MS);
  });

  it('leaves an idle keep-alive connection to the keep-alive timeout, not the header timeout', async () => {
    const c = await connect(port);
    expect(await request(c)).toBe('HTTP/1.1 200 OK');
    // Idle twice the header timeout (a real wait: node:http's connection checks run on real time).
    await new Promise((r) => setTimeout(r, 2000));
    expect(await request(c, 'abc')).toBe('HTTP/1.1 200 OK');
    c.socket.destroy();
  });
});

describe('connection cap', () => {
  it('closes connections beyond maxConnections at once while the open ones keep working', async () => {
    let drops = 0;
    const events = new ProxyEvents();
    events.subscribe('connection.dropped', () => drops++);
    const { listener, port } = await start({ maxConnections: 3, events });
    try {
      const open = await Promise.all([connect(port), connect(port), connect(port)]);
      for (const c of open) expect(await request(c)).toBe('HTTP/1.1 200 OK');
      const extra = await connect(port);
      extra.socket.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx');
      expect(await extra.closed).toBeLessThan(500);
      expect(extra.received()).toBe('');
      expect(drops).toBe(1);
      for (const c of open) expect(await request(c)).toBe('HTTP/1.1 200 OK');
      // A freed slot is usable again.
      open[0]?.socket.destroy();
      await open[0]?.closed;
      // Once the server has seen that close too.
      const connections = (): Promise<number> => new Promise((resolve, reject) => listener.server.getConnections((e, n) => (e ? reject(e) : resolve(n))));
      expect(await until(connections, (n) => n < 3)).toBe(2);
      const next = await connect(port);
      expect(await request(next)).toBe('HTTP/1.1 200 OK');
      for (const c of [...open, next]) c.socket.destroy();
    } finally {
      await stop(listener);
    }
  });
});

// Real time, as above: the handshake bound is node:tls's and node:http's own timer.
describe('TLS handshake timeout', () => {
  it('closes a TLS connection whose handshake never starts once the header timeout passes', async () => {
    const pki = makePki();
    const { listener, port } = await start({ headersTimeoutMs: 1000, tls: { certFile: pki.serverCert, keyFile: pki.serverKey, allowedClientSubjects: [], minVersion: 'TLSv1.2' } });
    try {
      const c = await connect(port);
      c.socket.write(Buffer.from([0x16, 0x03, 0x01])); // the start of a ClientHello, then nothing
      const ms = await c.closed;
      expect(ms).toBeGreaterThanOrEqual(900);
      expect(ms).toBeLessThanOrEqual(1000 + SLACK_MS);
    } finally {
      await stop(listener);
    }
  });
});

describe('server bounds in the config', () => {
  const doc = (server: Record<string, unknown>) => ({
    server: { insecurePlainHttp: true, ...server },
    hsm: { modulePath: '/x.so', tokenLabel: 't', pin: { value: '1234' } },
    keyStores: [
      {
        name: 'a',
        pathPrefix: '/a',
        credentials: [{ accessKeyId: 'AAAAAAAAAAAAAAAAAAAAAAAAAA', secretAccessKey: { value: 'FYtE5EFA5FT0mCc3DrGUe2sti527BitkQ0Zr9MO9fvE' } }],
      },
    ],
  });

  it('defaults to a few seconds and a few thousand connections', () => {
    const s = buildRuntimeConfig(doc({}), {}).config.server;
    expect([s.maxConnections, s.headersTimeoutMs, s.requestTimeoutMs]).toEqual([1024, 5000, 10_000]);
  });

  it('refuses a request timeout shorter than the header timeout', () => {
    expect(() => buildRuntimeConfig(doc({ headersTimeoutMs: 8000, requestTimeoutMs: 4000 }), {})).toThrow(ConfigError);
    expect(() => buildRuntimeConfig(doc({ headersTimeoutMs: 8000, requestTimeoutMs: 4000 }), {})).toThrow(/requestTimeoutMs/);
    expect(() => buildRuntimeConfig(doc({ maxConnections: 0 }), {})).toThrow(/maxConnections/);
  });
});
