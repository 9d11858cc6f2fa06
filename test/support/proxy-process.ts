import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import aws4 from 'aws4';
import { stringify } from 'yaml';
import type { ProxyConfigInput } from '../../src/config/schema';
import { freePort } from '../../testbed/ports';
import { until } from './promises';
import { Credential, get } from './proxy';

const MAIN = join(__dirname, '..', '..', 'dist', 'src', 'main.js');

/** A real proxy process (`node dist/src/main.js`, cluster workers and all) on a config of the test's. */
export interface ProxyProcess {
  port: number;
  opsPort: number;
  dir: string;
  /** Everything the process wrote to stdout so far (its log lines, and audit lines with audit.stdout). */
  output(): string;
  /** Rewrites the config file: each worker's reloader picks the change up. */
  rewrite(config: ProxyConfigInput): void;
  /** The pid of the worker that logged the request with this kmsRequestId (the request log, level info). */
  servedBy(kmsRequestId: string): Promise<number>;
  /** Sends a signal to the process (the primary, in cluster mode). */
  kill(signal: NodeJS.Signals): void;
  /** The exit code, once the process exited and its output ended. */
  exited: Promise<number | null>;
  /** SIGTERM, then waits for the exit and the end of its output; removes the directory. */
  stop(): Promise<void>;
}

export interface ProxyProcessOptions {
  /** Added to the test's environment (which already holds the HSM setup's). */
  env?: NodeJS.ProcessEnv;
  /** The directory for config.yaml (default: a new temporary one); removed by stop(). */
  dir?: string;
}

/** Starts the process on `config` (its ports replaced by free ones) in `dir`/config.yaml and waits for /readyz. */
export async function startProxyProcess(config: ProxyConfigInput, opts: ProxyProcessOptions = {}): Promise<ProxyProcess> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'xks-process-'));
  const [port, opsPort] = [await freePort(), await freePort()];
  const file = join(dir, 'config.yaml');
  const write = (c: ProxyConfigInput): void => writeFileSync(file, stringify({ ...c, server: { ...c.server, port }, ops: { ...c.ops, port: opsPort } }));
  write(config);
  const child = spawn('node', [MAIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, XKS_LOG_LEVEL: 'info', ...opts.env } });
  let output = '';
  let errors = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (errors += c.toString()));
  // 'close', not 'exit': stdout is read to its end first.
  const exited = new Promise<number | null>((r) => child.once('close', (code) => r(code)));
  const stop = async (): Promise<void> => {
    child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  const ready = await until(() => child.exitCode !== null || get(opsPort, '/readyz').then((r) => r.status === 200, () => false), Boolean, 15_000, 100);
  if (!ready || child.exitCode !== null) {
    await stop();
    throw new Error(`proxy did not become ready:\n${output}${errors}`);
  }
  return {
    port,
    opsPort,
    dir,
    output: () => output,
    rewrite: write,
    async servedBy(kmsRequestId) {
      const find = (): number | undefined => {
        const line = output.split('\n').find((l) => l.includes('"msg":"xks request"') && l.includes(`"kmsRequestId":"${kmsRequestId}"`));
        return line ? (JSON.parse(line) as { pid: number }).pid : undefined;
      };
      const pid = await until(find, (p) => p !== undefined, 5_000, 20);
      if (pid === undefined) throw new Error(`no request log line for ${kmsRequestId}`);
      return pid;
    },
    kill: (signal) => void child.kill(signal),
    exited,
    stop,
  };
}

/** One keep-alive connection to the proxy, on which requests are signed (aws4) and sent in order. */
export class KeepAliveConnection {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  /** Local ports of the sockets answers came on: one, as long as the connection stayed the same. */
  readonly sockets = new Set<number>();

  constructor(
    private readonly port: number,
    private readonly credential: Credential,
  ) {}

  post(path: string, payload: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
    const body = JSON.stringify(payload);
    const signed = aws4.sign({ host: `127.0.0.1:${this.port}`, path, method: 'POST', service: 'kms-xks-proxy', region: 'us-east-1', body, headers: { 'content-type': 'application/json' } }, this.credential);
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: this.port, path, method: 'POST', headers: signed.headers, agent: this.agent }, (res) => {
        this.sockets.add(res.socket.localPort ?? 0);
        let text = '';
        res.on('data', (c: Buffer) => (text += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} }));
      });
      req.on('error', reject);
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
