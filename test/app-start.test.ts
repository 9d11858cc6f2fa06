import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProxyApp } from '../src/app';
import { buildRuntimeConfig } from '../src/config/load';
import { silentLogger } from '../src/log';
import { faultyModule } from '../testbed/faulty-module';
import { keyStoreWithKeys, newCredential, testConfig } from './support/proxy';

/**
 * A start that fails once the HSM is open leaves nothing behind: the sessions and the library are closed
 * (an embedding or a supervisor that retries would otherwise pile up HSM sessions and logins, which
 * network HSMs count against a partition's limit), and a retry on a free port starts cleanly.
 */
describe('ProxyApp.start failing after the HSM opened', () => {
  const cred = newCredential();
  const dir = mkdtempSync(join(tmpdir(), 'xks-start-'));
  let taken: net.Server;
  let port: number;

  beforeAll(async () => {
    taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    port = (taken.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => taken.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  });

  const config = (serverPort: number) =>
    testConfig([keyStoreWithKeys('s', '/s', [cred], [{ id: 'k', label: 'test-key-1' }])], { server: { port: serverPort }, audit: { file: join(dir, 'audit.log') } });

  it('closes every HSM session and the library when the port is in use, and a retry on a free port starts', async () => {
    const { faults, create } = faultyModule();
    await expect(ProxyApp.start({ runtime: buildRuntimeConfig(config(port)), logger: silentLogger, createModule: create })).rejects.toThrow(/EADDRINUSE/);
    const opened = faults.calls.C_OpenSession ?? 0;
    expect(opened).toBeGreaterThan(0);
    // Each session closed one by one, or all at once, and the library finalized.
    expect((faults.calls.C_CloseSession ?? 0) >= opened || (faults.calls.C_CloseAllSessions ?? 0) > 0).toBe(true);
    expect(faults.calls.C_Finalize ?? 0).toBeGreaterThan(0);

    const app = await ProxyApp.start({ runtime: buildRuntimeConfig(config(0)), logger: silentLogger, createModule: faultyModule().create });
    try {
      expect(app.ready()).toBe(true);
    } finally {
      await app.stop(1000);
    }
  });
});
