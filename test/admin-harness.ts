import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { ProxyApp } from '../src/app';
import { loadConfigFile } from '../src/config/load';
import { ConfigReloader } from '../src/config/reloader';
import type { ProxyConfigInput } from '../src/config/schema';
import { silentLogger } from '../src/log';
import { Credential, newCredential, testConfig } from './support/proxy';

const exec = promisify(execFile);
const ADMIN = join(__dirname, '..', 'dist', 'src', 'tools', 'admin.js');
export const PREFIX = '/ks/kms/xks/v1';

export interface AdminResult {
  code: number;
  out: Record<string, unknown>;
  err: string;
}

/**
 * A config store in a temp dir with one key store `ks` reaching group `g` (allow-all), driven through the
 * built xks-admin, and (start) a proxy on it whose reloader the test calls in place of a file poll.
 */
export class StoreHarness {
  readonly dir = mkdtempSync(join(tmpdir(), 'xks-admin-'));
  readonly configFile = join(this.dir, 'config.yaml');
  readonly cred: Credential = newCredential();
  /** Extra environment for the CLI (XKS_GOVERNANCE_TRUST). */
  env: NodeJS.ProcessEnv = {};
  app!: ProxyApp;
  reloader!: ConfigReloader;

  async init(extra: Partial<ProxyConfigInput> = {}): Promise<this> {
    const base = testConfig([]);
    base.keyStores = [{ name: 'ks', pathPrefix: '/ks', credentials: [{ accessKeyId: this.cred.accessKeyId, secretAccessKey: { value: this.cred.secretAccessKey } }], groups: [] }];
    base.groups = [];
    base.audit = { file: join(this.dir, 'audit.log') };
    writeFileSync(this.configFile, stringify({ ...base, ...extra }));
    await this.ok('group', 'create', 'g', '--allow-all');
    await this.ok('group', 'assign', 'g', '--key-store', 'ks');
    return this;
  }

  async start(): Promise<void> {
    const runtime = loadConfigFile(this.configFile);
    this.app = await ProxyApp.start({ runtime, logger: silentLogger });
    this.reloader = new ConfigReloader(this.configFile, runtime, (next) => this.app.setRuntime(next), silentLogger, this.app.events);
  }

  async stop(): Promise<void> {
    this.reloader?.dispose();
    await this.app?.stop(1000);
    rmSync(this.dir, { recursive: true, force: true });
  }

  async admin(...args: string[]): Promise<AdminResult> {
    try {
      const { stdout, stderr } = await exec('node', [ADMIN, '--config', this.configFile, ...args], { env: { ...process.env, ...this.env } });
      return { code: 0, out: stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : {}, err: stderr };
    } catch (e) {
      const x = e as { code: number; stderr: string };
      return { code: x.code, out: {}, err: x.stderr };
    }
  }

  /** A command that must succeed; its JSON output. */
  async ok(...args: string[]): Promise<Record<string, unknown>> {
    const r = await this.admin(...args);
    expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: '' });
    return r.out;
  }
}
