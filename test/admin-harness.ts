import { execFile } from 'node:child_process';
import { createDecipheriv } from 'node:crypto';
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
import { hsmAad } from '../src/xks/ciphertext-format';
import { b64, Credential, keyMetadata, newCredential, send, testConfig } from './support/proxy';

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

  /** The customer's side of BYOK with openssl, exactly as the README tells them; returns the wrapped file. */
  async opensslWrap(publicPem: string, material: Buffer, name: string, hash: 'sha1' | 'sha256'): Promise<string> {
    const inFile = join(this.dir, `${name}.bin`);
    const out = join(this.dir, `${name}.wrapped`);
    writeFileSync(inFile, material, { mode: 0o600 });
    await exec('openssl', ['pkeyutl', '-encrypt', '-pubin', '-inkey', publicPem, '-in', inFile, '-out', out, '-pkeyopt', 'rsa_padding_mode:oaep', '-pkeyopt', `rsa_oaep_md:${hash}`, '-pkeyopt', `rsa_mgf1_md:${hash}`]);
    return out;
  }

  /** Encrypts through the proxy and opens the result with node:crypto under the key value the test knows (BYOK). */
  async expectEncryptsWith(keyId: string, material: Buffer): Promise<void> {
    const aad = Buffer.from('byok-aad');
    const r = await send(this.app.port, `${PREFIX}/keys/${keyId}/encrypt`, { requestMetadata: keyMetadata('Encrypt'), plaintext: b64(Buffer.from('customer key works')), encryptionAlgorithm: 'AES_GCM', additionalAuthenticatedData: b64(aad) }, this.cred);
    expect(r.status).toBe(200);
    const s = r.body as Record<string, string>;
    const d = createDecipheriv('aes-256-gcm', material, Buffer.from(s.initializationVector!, 'base64'));
    d.setAAD(hsmAad(aad, Buffer.from(s.ciphertextMetadata!, 'base64')));
    d.setAuthTag(Buffer.from(s.authenticationTag!, 'base64'));
    expect(Buffer.concat([d.update(Buffer.from(s.ciphertext!, 'base64')), d.final()]).toString()).toBe('customer key works');
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
