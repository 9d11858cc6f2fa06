import { EventEmitter } from 'node:events';
import type tls from 'node:tls';
import { serverTrafficSecret, TlsAlerts } from '../../src/http/tls-alert';

/**
 * What src/http/tls-alert.ts keeps of the TLS secrets Node's 'keylog' event hands out: only the
 * server's application traffic secret, decoded straight into a Buffer, zeroed at the verdict or the
 * close; every keylog line (all of them carry secrets) is zeroed once read. Connections and the alert
 * itself are tested end to end in test/mtls.test.ts.
 */
const RANDOM = 'ab'.repeat(32);
const SECRET_HEX = '0123456789abcdefABCDEF'.repeat(2) + 'a1b2';
const line = (label: string, hex = SECRET_HEX): Buffer => Buffer.from(`${label} ${RANDOM} ${hex}\n`, 'latin1');
const zeroed = (b: Buffer): boolean => b.every((x) => x === 0);

describe('serverTrafficSecret', () => {
  it('decodes the secret of a SERVER_TRAFFIC_SECRET_0 line', () => {
    expect(serverTrafficSecret(line('SERVER_TRAFFIC_SECRET_0'))).toEqual(Buffer.from(SECRET_HEX, 'hex'));
  });

  it.each(['CLIENT_TRAFFIC_SECRET_0', 'SERVER_HANDSHAKE_TRAFFIC_SECRET', 'EXPORTER_SECRET', 'CLIENT_RANDOM', 'SERVER_TRAFFIC_SECRET_1'])('ignores %s', (label) => {
    expect(serverTrafficSecret(line(label))).toBeUndefined();
  });

  it.each([
    ['odd length', `${SECRET_HEX}0`],
    ['not hex', `${SECRET_HEX.slice(2)}zz`],
    ['empty', ''],
  ])('refuses a malformed secret (%s)', (_what, hex) => {
    expect(serverTrafficSecret(line('SERVER_TRAFFIC_SECRET_0', hex))).toBeUndefined();
  });
});

describe('TlsAlerts', () => {
  /** A stand-in server and socket: only the events TlsAlerts listens to. */
  function setup(): { server: EventEmitter; socket: EventEmitter; alerts: TlsAlerts; kept: () => Buffer[] } {
    const server = new EventEmitter();
    const alerts = new TlsAlerts(server as unknown as tls.Server);
    const socket = new EventEmitter();
    const allocs: Buffer[] = [];
    const alloc = jest.spyOn(Buffer, 'alloc').mockImplementation((...args: Parameters<typeof Buffer.alloc>) => {
      alloc.mockRestore();
      const b = Buffer.alloc(...args);
      allocs.push(b);
      return b;
    });
    return { server, socket, alerts, kept: () => allocs };
  }

  it('zeroes every keylog line once read, whatever its label', () => {
    const { server, socket } = setup();
    jest.restoreAllMocks();
    for (const label of ['CLIENT_HANDSHAKE_TRAFFIC_SECRET', 'SERVER_TRAFFIC_SECRET_0', 'EXPORTER_SECRET', 'CLIENT_RANDOM']) {
      const l = line(label);
      server.emit('keylog', l, socket);
      expect(zeroed(l)).toBe(true);
    }
  });

  it('zeroes the secret it kept when the verdict accepts the client', () => {
    const { server, socket, alerts, kept } = setup();
    server.emit('keylog', line('SERVER_TRAFFIC_SECRET_0'), socket);
    expect(kept()).toHaveLength(1);
    expect(kept()[0]).toEqual(Buffer.from(SECRET_HEX, 'hex'));
    alerts.accept(socket as unknown as tls.TLSSocket);
    expect(zeroed(kept()[0] as Buffer)).toBe(true);
  });

  it('zeroes the secret of a connection that closes before any verdict', () => {
    const { server, socket, kept } = setup();
    server.emit('keylog', line('SERVER_TRAFFIC_SECRET_0'), socket);
    socket.emit('close');
    expect(zeroed(kept()[0] as Buffer)).toBe(true);
  });
});
