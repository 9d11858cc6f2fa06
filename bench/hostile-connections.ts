/**
 * Hostile connections: what unauthenticated clients that send most of a body and then stall cost
 * the proxy in memory, optionally under a real cgroup memory limit.
 *
 *   npm run build:bench && node dist-bench/bench/hostile-connections.js --connections 10000 --cgroup 512M
 *
 * Starts the proxy (dist/src/main.js of --root, default this checkout) on a fresh SoftHSM2 demo
 * token, opens --connections plain-HTTP connections to an XKS path, each sending headers with
 * Content-Length --declared (65536) and --send (65535) bytes of body and nothing more, holds them
 * for --hold s (clients whose connection the proxy closes reconnect, as an attacker would, unless
 * --no-reconnect), closes them all, then waits --after s. The proxy's RSS (its process tree) is
 * sampled every second. Prints one JSON line: peak RSS, RSS --after s after the close, connections
 * opened / refused by the proxy at once / answered (408 etc.), and, with --cgroup, the cgroup's peak
 * usage and whether the proxy was killed. --tls serves TLS (a throwaway self-signed P-256 certificate,
 * as production would terminate TLS in the proxy): each connection then also holds its TLS state.
 *
 * --cgroup puts the proxy in a memory cgroup (v2 or v1 memory controller) created under this
 * process's own cgroup, with that limit; the client stays outside. Needs write access to the
 * cgroup filesystem (root in a container usually has it). The client needs `ulimit -n` above
 * --connections + 100.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { parse, stringify } from 'yaml';
import { httpStatus, installCleanup, startChild, stopAll, treeRssBytes, waitFor } from './lib/processes';
import { freePortPair } from '../testbed/ports';
import { ROOT } from './lib/paths';

interface Options {
  root: string;
  connections: number;
  declared: number;
  send: number;
  holdS: number;
  afterS: number;
  reconnect: boolean;
  tls: boolean;
  cgroup?: string;
  sets: [string, unknown][];
}

function parseArgs(argv: string[]): Options {
  const o: Options = { root: ROOT, connections: 10_000, declared: 65_536, send: 65_535, holdS: 20, afterS: 10, reconnect: true, tls: false, sets: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const v = (): string => argv[++i] ?? '';
    if (a === '--root') o.root = resolve(v());
    else if (a === '--connections') o.connections = Number(v());
    else if (a === '--declared') o.declared = Number(v());
    else if (a === '--send') o.send = Number(v());
    else if (a === '--hold') o.holdS = Number(v());
    else if (a === '--after') o.afterS = Number(v());
    else if (a === '--no-reconnect') o.reconnect = false;
    else if (a === '--tls') o.tls = true;
    else if (a === '--cgroup') o.cgroup = v();
    else if (a === '--set') {
      const [path, value] = v().split(/=(.*)/s) as [string, string];
      o.sets.push([path, parse(value)]);
    } else throw new Error(`unknown option ${a} (see the comment at the top of bench/hostile-connections.ts)`);
  }
  return o;
}

const note = (s: string): void => void process.stderr.write(`hostile: ${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A memory cgroup below our own, v2 or v1. */
class MemoryCgroup {
  private constructor(
    readonly dir: string,
    private readonly v2: boolean,
  ) {}

  static create(limit: string): MemoryCgroup {
    const bytes = parseSize(limit);
    const lines = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n');
    const v1 = lines.find((l) => l.split(':')[1]?.split(',').includes('memory'));
    const name = `xks-hostile-${process.pid}`;
    if (v1 && existsSync('/sys/fs/cgroup/memory')) {
      const dir = join('/sys/fs/cgroup/memory', v1.split(':')[2] as string, name);
      mkdirSync(dir);
      writeFileSync(join(dir, 'memory.limit_in_bytes'), String(bytes));
      return new MemoryCgroup(dir, false);
    }
    const unified = lines.find((l) => l.startsWith('0::'));
    if (!unified) throw new Error('no memory cgroup controller found in /proc/self/cgroup');
    const dir = join('/sys/fs/cgroup', unified.slice(3), name);
    mkdirSync(dir);
    writeFileSync(join(dir, 'memory.max'), String(bytes));
    writeFileSync(join(dir, 'memory.swap.max'), '0');
    return new MemoryCgroup(dir, true);
  }

  add(pid: number): void {
    writeFileSync(join(this.dir, 'cgroup.procs'), String(pid));
  }

  peak(): number | undefined {
    const f = join(this.dir, this.v2 ? 'memory.peak' : 'memory.max_usage_in_bytes');
    return existsSync(f) ? Number(readFileSync(f, 'utf8').trim()) : undefined;
  }

  oomKills(): number {
    const f = join(this.dir, this.v2 ? 'memory.events' : 'memory.oom_control');
    const m = /oom_kill (\d+)/.exec(existsSync(f) ? readFileSync(f, 'utf8') : '');
    return m ? Number(m[1]) : 0;
  }

  /** The kernel refuses while the last task is still being torn down: retry for a second. */
  async remove(): Promise<void> {
    for (let i = 0; i < 20; i++) {
      try {
        rmdirSync(this.dir);
        return;
      } catch {
        await sleep(50);
      }
    }
    note(`could not remove ${this.dir}`);
  }
}

function parseSize(s: string): number {
  const m = /^(\d+)([KMG]i?)?$/i.exec(s);
  if (!m) throw new Error(`--cgroup: bad size ${s} (e.g. 512M)`);
  const unit = (m[2] ?? '').toUpperCase()[0];
  return Number(m[1]) * (unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : 1);
}

interface Counts {
  opened: number;
  refused: number;
  answered: Record<string, number>;
  failed: number;
}

const RECONNECT_DELAY_MS = 100;

/** The attackers: each connection sends its headers and all but the last bytes of the body, then waits. */
class Attack {
  readonly counts: Counts = { opened: 0, refused: 0, answered: {}, failed: 0 };
  private readonly sockets = new Set<net.Socket>();
  private running = true;
  private readonly payload: Buffer;

  constructor(
    private readonly port: number,
    path: string,
    declared: number,
    send: number,
    private readonly reconnect: boolean,
    private readonly useTls: boolean,
  ) {
    const head = `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${declared}\r\n\r\n`;
    this.payload = Buffer.concat([Buffer.from(head, 'latin1'), Buffer.alloc(send, 0x61)]);
  }

  /** Opens `n` connections, at most `burst` connecting at a time. */
  async open(n: number, burst = 200): Promise<void> {
    let started = 0;
    const one = (): Promise<void> =>
      new Promise((resolve) => {
        const s = this.useTls ? tls.connect({ port: this.port, host: '127.0.0.1', rejectUnauthorized: false }) : net.connect(this.port, '127.0.0.1');
        let status = '';
        let tcp = false;
        s.once('connect', () => (tcp = true));
        s.on(this.useTls ? 'secureConnect' : 'connect', () => {
          if (!this.running) {
            s.destroy();
            resolve();
            return;
          }
          this.counts.opened++;
          this.sockets.add(s);
          s.write(this.payload);
          resolve();
        });
        s.on('data', (d: Buffer) => {
          if (!status) status = /^HTTP\/1\.1 (\d{3})/.exec(d.toString('latin1'))?.[1] ?? 'other';
        });
        s.on('error', () => undefined);
        s.on('close', () => {
          this.sockets.delete(s);
          resolve();
          if (!tcp) this.counts.failed++;
          else if (status) this.counts.answered[status] = (this.counts.answered[status] ?? 0) + 1;
          // Closed before any answer: by the connection cap (with TLS, before the handshake could finish).
          else if (this.running) this.counts.refused++;
          // An attacker comes back, a little later (an immediate retry loop would measure the client's CPU).
          if (this.running && tcp && this.reconnect) setTimeout(() => this.running && void one(), RECONNECT_DELAY_MS);
        });
      });
    const workers = Array.from({ length: Math.min(burst, n) }, async () => {
      while (started < n && this.running) {
        started++;
        await one();
      }
    });
    await Promise.all(workers);
  }

  get live(): number {
    return this.sockets.size;
  }

  close(): void {
    this.running = false;
    for (const s of this.sockets) s.destroy();
  }
}

async function main(): Promise<void> {
  const opt = parseArgs(process.argv.slice(2));
  const mainJs = join(opt.root, 'dist', 'src', 'main.js');
  const adminJs = join(opt.root, 'dist', 'src', 'tools', 'admin.js');
  if (!existsSync(mainJs) || !existsSync(adminJs)) throw new Error(`run "npm run build" in ${opt.root} first`);
  const dir = mkdtempSync(join(os.tmpdir(), 'xks-hostile-'));
  let cgroup: MemoryCgroup | undefined;
  const cleanup = async (): Promise<void> => {
    await stopAll(5000);
    await cgroup?.remove();
    rmSync(dir, { recursive: true, force: true });
  };
  installCleanup(cleanup);
  try {
    const port = await freePortPair();
    execFileSync('bash', [join(opt.root, 'softhsm', 'setup-token.sh'), dir, String(port)], { stdio: ['ignore', 'ignore', 'inherit'] });
    const config = parse(readFileSync(join(dir, 'config.yaml'), 'utf8')) as Record<string, Record<string, unknown>>;
    config.server = { ...config.server, host: '127.0.0.1', port };
    if (opt.tls) {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', 'tls.key', '-out', 'tls.pem'], { cwd: dir, stdio: 'ignore' });
      config.server = { ...config.server, insecurePlainHttp: false, tls: { certFile: join(dir, 'tls.pem'), keyFile: join(dir, 'tls.key') } };
    }
    for (const [path, v] of opt.sets) {
      const parts = path.split('.');
      let node = config as Record<string, unknown>;
      for (const part of parts.slice(0, -1)) node = (node[part] ??= {}) as Record<string, unknown>;
      node[parts[parts.length - 1] as string] = v;
    }
    const configFile = join(dir, 'hostile-config.yaml');
    writeFileSync(configFile, stringify(config), { mode: 0o600 });
    // XksProxyUriPath already ends in /kms/xks/v1.
    const base = (JSON.parse(readFileSync(join(dir, 'secrets', 'primary.json'), 'utf8')) as { XksProxyUriPath: string }).XksProxyUriPath;
    const target = `${base}/keys/x/encrypt`;

    if (opt.cgroup) cgroup = MemoryCgroup.create(opt.cgroup);
    const proxy = startChild([mainJs, '--config', configFile], { stdout: 'ignore', env: { ...process.env, XKS_LOG_LEVEL: 'error' } });
    const pid = proxy.pid as number;
    if (cgroup) {
      // At once, before the proxy has loaded much: what it touched earlier stays charged to our own cgroup (v1).
      cgroup.add(pid);
      note(`proxy pid ${pid} in ${cgroup.dir} (limit ${opt.cgroup})`);
    }
    await waitFor('proxy', proxy, async () => (await httpStatus(port + 1, '/readyz')) === 200);
    let killed: string | undefined;
    let attack: Attack | undefined;
    let finished = false;
    proxy.once('exit', (code, signal) => {
      if (finished) return;
      killed = `exit ${code ?? ''}${signal ?? ''}`;
      note(`proxy died (${killed})`);
      attack?.close();
    });

    const samples: { t: number; rss: number; live: number }[] = [];
    const t0 = Date.now();
    const sampler = setInterval(() => samples.push({ t: (Date.now() - t0) / 1000, rss: treeRssBytes(pid), live: attack?.live ?? 0 }), 1000);
    const idleRss = treeRssBytes(pid);
    note(`idle RSS ${mb(idleRss)} MB; opening ${opt.connections} connections to ${target}`);

    attack = new Attack(port, target, opt.declared, opt.send, opt.reconnect, opt.tls);
    await attack.open(opt.connections);
    note(`all opened after ${((Date.now() - t0) / 1000).toFixed(1)} s; ${attack.live} live; holding ${opt.holdS} s`);
    await sleep(opt.holdS * 1000);
    const closedAt = (Date.now() - t0) / 1000;
    attack.close();
    note(`closed; waiting ${opt.afterS} s`);
    await sleep(opt.afterS * 1000);
    clearInterval(sampler);
    const afterRss = killed ? 0 : treeRssBytes(pid);
    const readyAfter = killed ? 0 : await httpStatus(port + 1, '/readyz');

    const peak = samples.reduce((m, s) => (s.rss > m.rss ? s : m), { t: 0, rss: 0, live: 0 });
    const maxLive = samples.reduce((m, s) => Math.max(m, s.live), 0);
    const result = {
      root: opt.root,
      connections: opt.connections,
      declaredBytes: opt.declared,
      sentBytes: opt.send,
      reconnect: opt.reconnect,
      tls: opt.tls,
      holdS: opt.holdS,
      overrides: Object.fromEntries(opt.sets),
      idleRssMB: mb(idleRss),
      peakRssMB: mb(peak.rss),
      peakAtS: peak.t,
      rssAfterCloseMB: mb(afterRss),
      afterS: opt.afterS,
      maxLiveClientConnections: maxLive,
      counts: attack.counts,
      readyzAfter: readyAfter,
      proxyDied: killed ?? null,
      cgroup: cgroup ? { limit: opt.cgroup, peakMB: mb(cgroup.peak() ?? 0), oomKills: cgroup.oomKills() } : null,
      closedAtS: closedAt,
      rssSeriesMB: samples.map((s) => [Math.round(s.t), mb(s.rss), s.live]),
    };
    finished = true;
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await cleanup();
  }
}

const mb = (b: number): number => Math.round(b / 1024 / 102.4) / 10;

void main().catch((e) => {
  process.stderr.write(`hostile: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
