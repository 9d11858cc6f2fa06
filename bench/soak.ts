/**
 * Bounded soak: mixed XKS traffic at a fixed rate against a real proxy process on SoftHSM2, while the
 * configuration reloads, SigV4 credentials rotate, a key is disabled and re-enabled, HSM faults
 * come and go, and one HSM of the proxy's fleet of two is lost and returns (no request may fail for it:
 * the fleet serves from the other). Every response is checked: each successful encrypt is decrypted again and compared,
 * each decrypt of a known ciphertext must return its plaintext. At the end the proxy gets SIGTERM
 * under load, and its audit log must hold exactly one line per answered request.
 *
 * With --hostile SHARE (default 0.1 from the command line; off in the CI test's short run), hostile
 * connections at SHARE x rate run alongside until SIGTERM (bench/lib/hostile.ts: bad signatures, aborted
 * bodies, slow headers, oversized bodies): the valid traffic must come through exactly as without them.
 * Their audit lines name key HOSTILE_KEY_ID and are left out of the one-line-per-answer check.
 *
 *   npm run build:bench && node dist-bench/bench/soak.js --duration 120 --rate 1800 [--hostile 0.1]
 *
 * Loopback only; the run stops by itself. Prints a JSON report; exits 1 on any mismatch or lost answer.
 */
import { execFile, execFileSync, fork, ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import aws4 from 'aws4';
import { parse, stringify } from 'yaml';
import { HOSTILE_KEY_ID, HostileReport, HostileTraffic } from './lib/hostile';
import { localEndpoint, parseCredentialJson } from './lib/workload';
import { benchJs, productJs, ROOT } from './lib/paths';

/** The key of the run's traffic, made on both HSMs of the fleet by xks-admin key create. */
const MAIN_KEY = 'soak-key';
const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};

interface Cred {
  accessKeyId: string;
  secretAccessKey: string;
}

type Window = 'hsm-error' | 'hsm-slow' | 'key-disabled' | 'hsm-lost';

export interface SoakReport {
  durationS: number;
  offeredRate: number;
  sent: number;
  answered: number;
  byOutcome: Record<string, number>;
  verified: number;
  /** Decrypts that returned other bytes than were encrypted: must be zero. */
  mismatches: number;
  /** Ciphertexts whose check was still waiting out a fault when the run stopped. */
  unverified: number;
  unexpected: Record<string, number>;
  /**
   * ThrottlingException outside the fault windows: the proxy refusing what it judged it could not serve in
   * time (a loop turn blocked past half the deadline, e.g. by a reconnect or an admin command's CPU next
   * to it). Nothing is lost or wrong (KMS retries it), but many of them mean shedding too eagerly.
   */
  throttledOutsideFaults: number;
  connectionErrors: number;
  /** Connection errors before SIGTERM: must be zero. */
  connectionErrorsBeforeTerm: number;
  events: string[];
  auditLines: number;
  auditMatchesAnswers: boolean;
  /** Scripted events (admin commands, reloads) that failed. */
  eventFailures: number;
  exitCode: number | null;
  p99Ms: number;
  /** p99 of requests sent and answered while no fault window was open. */
  p99MsOutsideFaults: number;
  /** Per second of the run: [second, answers, p99 ms of those answers]. */
  timeline: [number, number, number][];
  /** The hostile traffic alongside, when on. */
  hostile: HostileReport | null;
  /** Audit lines of hostile requests (not counted in auditLines). */
  hostileAuditLines: number;
}

/** The demo config (softhsm/setup-token.sh) as far as the soak reads and changes it. */
interface DemoConfig {
  server: Record<string, unknown>;
  ops: Record<string, unknown>;
  audit?: Record<string, unknown>;
  limits?: Record<string, unknown>;
  hsm?: { modulePath: string; healthKeyLabel: string; environment?: Record<string, string> };
  hsms?: Record<string, unknown>[];
  groups: { keys: unknown[] }[];
}

export interface SoakOptions {
  /** Hostile connections per second as a share of the rate; 0 (default) for none. */
  hostileShare?: number;
}

export async function soak(durationS: number, rate: number, opts: SoakOptions = {}): Promise<SoakReport> {
  const dir = mkdtempSync(join(tmpdir(), 'xks-soak-'));
  execFileSync('bash', [join(ROOT, 'softhsm', 'setup-token.sh'), dir, '0'], { stdio: 'ignore' });
  const configFile = join(dir, 'config.yaml');
  const config = parse(readFileSync(configFile, 'utf8')) as DemoConfig;
  config.server.port = 0;
  config.ops.port = 0;
  config.audit = { file: join(dir, 'audit.log') };
  config.limits = { deadlineMs: 200, maxQueue: 256 };
  // The slow-HSM window delays calls on the thread pool: inline calls would block the loop instead.
  const hsm = { ...config.hsm!, asyncCalls: true };
  // A fleet of two: a second token next to the demo one, listed first because replication starts on the
  // first HSM and the security officer's step needs its SO PIN (the demo token's is not kept).
  const second = { tokenLabel: 'xks-soak-b', pin: randomBytes(12).toString('hex'), soPin: randomBytes(12).toString('hex') };
  const env = { ...process.env, ...hsm.environment };
  execFileSync('softhsm2-util', ['--init-token', '--free', '--label', second.tokenLabel, '--pin', second.pin, '--so-pin', second.soPin], { env, stdio: 'ignore' });
  writeFileSync(join(dir, 'secrets', 'hsm-b-pin'), second.pin, { mode: 0o600 });
  config.hsms = [
    { ...hsm, id: 'b', tokenLabel: second.tokenLabel, pin: { file: join(dir, 'secrets', 'hsm-b-pin') } },
    { ...hsm, id: 'a' },
  ];
  delete config.hsm;
  // The demo keys live on the demo token only: the run's traffic uses keys made on both HSMs instead.
  config.groups[0]!.keys = [];
  writeFileSync(configFile, stringify(config));
  // Asynchronous, so the load keeps flowing (and its latency stays honest) while the CLI runs.
  const adminWith = (extraEnv: Record<string, string>, ...args: string[]): Promise<string> =>
    new Promise((resolve, reject) =>
      execFile('node', [productJs('tools', 'admin.js'), '--config', configFile, ...args], { encoding: 'utf8', env: { ...process.env, ...extraEnv } }, (e: Error | null, out: string) => (e ? reject(e) : resolve(out))),
    );
  const admin = (...args: string[]): Promise<string> => adminWith({}, ...args);
  await adminWith({ XKS_HSM_PIN: second.pin }, 'hsm', 'generate-key', '--module', hsm.modulePath, '--token', second.tokenLabel, '--label', hsm.healthKeyLabel);
  await adminWith({ XKS_HSM_SO_PIN: second.soPin }, 'hsm', 'trust-replication', '--source', 'b', '--target', 'a');
  await admin('key', 'create', MAIN_KEY, '--group', 'demo-keys');
  await admin('key', 'create', 'soak-victim', '--group', 'demo-keys');

  const child: ChildProcess = fork(benchJs('soak-proxy.js'), ['--config', configFile], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (m: { type: string; port: number }) => (m.type === 'ready' ? resolve(m.port) : reject(new Error('proxy failed'))));
    child.once('exit', () => reject(new Error('proxy exited during start')));
  });
  // Resolves on the proxy's acknowledgement, or at once if the proxy is gone (the run is ending).
  const reload = (): Promise<void> =>
    new Promise((resolve) => {
      const done = (): void => {
        child.off('message', on);
        child.off('exit', done);
        resolve();
      };
      const on = (m: { type: string }): void => {
        if (m.type === 'reloaded') done();
      };
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.on('message', on);
      child.once('exit', done);
      child.kill('SIGHUP');
    });

  let cred: Cred = parseCredentialJson(readFileSync(join(dir, 'secrets', 'primary.json'), 'utf8')).cred;
  // Enough sockets for the slow-HSM window (2600 req/s x 200 ms deadline), so that latency is the proxy's, not the agent queue's.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 });
  /** Fault windows open now; they may overlap in a short run. */
  const active = new Set<Window>();
  const report: SoakReport = {
    durationS, offeredRate: rate, sent: 0, answered: 0, byOutcome: {}, verified: 0, mismatches: 0, unverified: 0, unexpected: {}, throttledOutsideFaults: 0,
    connectionErrors: 0, connectionErrorsBeforeTerm: 0, events: [], eventFailures: 0, auditLines: 0, auditMatchesAnswers: false, exitCode: null, p99Ms: 0, p99MsOutsideFaults: 0, timeline: [],
    hostile: null, hostileAuditLines: 0,
  };
  const calmLatencies: number[] = [];
  /** Latencies by the second they were answered in; all of them together give the overall p99. */
  const perSecond: number[][] = [];
  const known: { sealed: Record<string, string>; aad: Buffer; plaintext: Buffer }[] = [];
  let stopping = false;
  let termSent = false;
  const start = Date.now();

  type Answer = { status: number; json: Record<string, string>; sentIn: Window[] } | null;
  const post = (path: string, body: object): Promise<Answer> => {
    const sentIn = [...active];
    const text = JSON.stringify(body);
    const req = { host: `127.0.0.1:${port}`, path, method: 'POST', service: 'kms-xks-proxy', region: 'us-east-1', body: text, headers: { 'content-type': 'application/json' } };
    aws4.sign(req, cred);
    report.sent++;
    const started = performance.now();
    return new Promise((resolve) => {
      const r = http.request({ host: '127.0.0.1', port, path, method: 'POST', headers: req.headers as http.OutgoingHttpHeaders, agent }, (res) => {
        let data = '';
        res.on('data', (c: Buffer) => (data += c.toString()));
        res.on('end', () => {
          report.answered++;
          const ms = performance.now() - started;
          (perSecond[Math.floor((Date.now() - start) / 1000)] ??= []).push(ms);
          // The first seconds (connections opening, JIT warming) are not steady state either.
          if (sentIn.length === 0 && active.size === 0 && Date.now() - start > 3000) calmLatencies.push(ms);
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(data) as Record<string, string>, sentIn });
        });
      });
      r.on('error', () => {
        report.connectionErrors++;
        if (!termSent) report.connectionErrorsBeforeTerm++;
        resolve(null);
      });
      r.end(text);
    });
  };

  const allowed: Record<Window, string[]> = {
    'hsm-error': ['InternalException', 'ThrottlingException'],
    'hsm-slow': ['DependencyTimeoutException', 'ThrottlingException'],
    'key-disabled': [],
    // The fleet retries on the other HSM and takes the lost one out: nothing may fail for it.
    'hsm-lost': [],
  };
  /** An error is expected if a window open when it was sent or when it arrived allows it. */
  const tally = (res: Answer, victim = false): boolean => {
    if (!res) return false;
    const sentIn = res.sentIn;
    const outcome = res.status === 200 ? 'success' : res.json.errorName ?? `http${res.status}`;
    report.byOutcome[outcome] = (report.byOutcome[outcome] ?? 0) + 1;
    if (res.status === 200) return true;
    const windows = [...sentIn, ...active];
    const ok = windows.some((w) => allowed[w].includes(outcome) || (victim && w === 'key-disabled' && outcome === 'InvalidStateException'));
    if (!ok && outcome === 'ThrottlingException') {
      report.throttledOutsideFaults++;
    } else if (!ok) {
      const key = `${[...active].join('+') || 'none'}:${outcome}@${Math.floor((Date.now() - start) / 1000)}s`;
      report.unexpected[key] = (report.unexpected[key] ?? 0) + 1;
    }
    return false;
  };
  const md = (op: string) => ({
    awsPrincipalArn: 'arn:aws:iam::123456789012:user/Soak',
    kmsKeyArn: 'arn:aws:kms:us-east-1:123456789012:key/soak',
    kmsOperation: op,
    kmsRequestId: randomUUID(),
  });
  const P = '/demo/kms/xks/v1';
  const decryptBody = (s: Record<string, string>, aad: Buffer) => ({
    requestMetadata: md('Decrypt'), encryptionAlgorithm: 'AES_GCM', additionalAuthenticatedData: aad.toString('base64'),
    ciphertext: s.ciphertext, ciphertextMetadata: s.ciphertextMetadata, initializationVector: s.initializationVector, authenticationTag: s.authenticationTag,
  });

  /** Checks one ciphertext until it decrypts: faults may delay the check, never excuse a wrong answer. */
  const verify = async (key: string, s: Record<string, string>, aad: Buffer, plaintext: Buffer): Promise<void> => {
    for (;;) {
      const d = await post(`${P}/keys/${key}/decrypt`, decryptBody(s, aad));
      if (tally(d, key === 'soak-victim') && d) {
        if (Buffer.from(d.json.plaintext as string, 'base64').equals(plaintext)) report.verified++;
        else report.mismatches++;
        return;
      }
      if (stopping || termSent) {
        report.unverified++;
        return;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  const one = async (): Promise<void> => {
    const pick = Math.random();
    if (pick < 0.45 || known.length === 0) {
      const victim = pick > 0.43;
      const key = victim ? 'soak-victim' : MAIN_KEY;
      const plaintext = randomBytes(32);
      const aad = randomBytes(48);
      const e = await post(`${P}/keys/${key}/encrypt`, { requestMetadata: md('GenerateDataKey'), plaintext: plaintext.toString('base64'), encryptionAlgorithm: 'AES_GCM', additionalAuthenticatedData: aad.toString('base64') });
      if (tally(e, victim) && e) {
        if (!victim && known.length < 500) known.push({ sealed: e.json, aad, plaintext });
        await verify(key, e.json, aad, plaintext);
      }
    } else if (pick < 0.9) {
      const k = known[Math.floor(Math.random() * known.length)]!;
      const d = await post(`${P}/keys/${MAIN_KEY}/decrypt`, decryptBody(k.sealed, k.aad));
      if (tally(d) && d) {
        if (Buffer.from(d.json.plaintext as string, 'base64').equals(k.plaintext)) report.verified++;
        else report.mismatches++;
      }
    } else if (pick < 0.97) {
      tally(await post(`${P}/keys/${MAIN_KEY}/metadata`, { requestMetadata: md('DescribeKey') }));
    } else {
      tally(await post(`${P}/health`, { requestMetadata: { kmsRequestId: randomUUID(), kmsOperation: 'KmsHealthCheck' } }));
    }
  };

  // The event script, spread over the run. Events still running at the end (an admin command is slow on
  // a loaded box) are awaited before the directory goes, and their failures are reported, not left to
  // surface in whatever runs next in this process.
  const running = new Set<Promise<void>>();
  const at = (fraction: number, what: string, fn: () => Promise<void> | void): NodeJS.Timeout =>
    setTimeout(() => {
      report.events.push(`${((Date.now() - start) / 1000).toFixed(1)}s ${what}`);
      const p = Promise.resolve()
        .then(fn)
        .catch((e: unknown) => {
          report.eventFailures++;
          report.events.push(`${((Date.now() - start) / 1000).toFixed(1)}s ${what} FAILED: ${(e as Error).message}`);
        })
        .finally(() => running.delete(p));
      running.add(p);
    }, durationS * 1000 * fraction);
  const fault = (fail: Record<string, string>, delayMs = 0): void => void child.send({ type: 'fault', fail, delayMs });
  const timers = [
    at(0.1, 'config reload (unchanged file)', reload),
    at(0.15, 'HSM errors on C_Encrypt/C_Decrypt', () => {
      active.add('hsm-error');
      fault({ C_Encrypt: 'CKR_DEVICE_ERROR', C_Decrypt: 'CKR_DEVICE_ERROR' });
    }),
    at(0.2, 'HSM errors cleared', () => fault({})),
    at(0.35, 'fault window closed (reconnect done)', () => void active.delete('hsm-error')),
    at(0.4, 'credential rotation: add, switch, retire', async () => {
      const added = parseCredentialJson(await admin('credential', 'add', '--key-store', 'demo')).cred;
      await reload();
      const old = cred.accessKeyId;
      cred = added;
      await new Promise((r) => setTimeout(r, 500)); // requests signed with the old one drain
      await admin('credential', 'retire', '--key-store', 'demo', '--access-key-id', old);
      await reload();
    }),
    // One chained event, not timers: the CLI and reload take a few hundred ms, so fixed times could
    // re-enable the key before a single request saw it disabled.
    at(0.5, 'key soak-victim disabled', async () => {
      active.add('key-disabled');
      await admin('key', 'disable', 'soak-victim');
      await reload();
      await new Promise((r) => setTimeout(r, Math.max(1000, durationS * 1000 * 0.05)));
      report.events.push(`${((Date.now() - start) / 1000).toFixed(1)}s key soak-victim enabled`);
      await admin('key', 'enable', 'soak-victim');
      await reload();
      await new Promise((r) => setTimeout(r, 250)); // answers to requests sent before the reload
      active.delete('key-disabled');
    }),
    at(0.65, 'slow HSM (300 ms)', () => {
      active.add('hsm-slow');
      fault({}, 300);
    }),
    at(0.7, 'HSM speed restored', () => fault({}, 0)),
    at(0.8, 'fault window closed', () => void active.delete('hsm-slow')),
    at(0.82, 'HSM b lost (CKR_DEVICE_REMOVED on its slot)', () => {
      active.add('hsm-lost');
      child.send({ type: 'lose', tokenLabel: second.tokenLabel });
    }),
    at(0.92, 'HSM b returns', () => void child.send({ type: 'lose' })),
    at(0.97, 'HSM-loss window closed', () => void active.delete('hsm-lost')),
  ];

  // Fixed-rate scheduler: every 10 ms, the requests due since the last tick.
  let inFlight = 0;
  // The rate ramps up over the first 2 s: a cold process hit by the full rate on a thousand new
  // connections at once throttles for a second, which is a cold-start test, not what this run checks.
  const perTick = rate / 100;
  let carry = 0;
  const ticker = setInterval(() => {
    carry += perTick * Math.min(1, 0.1 + (Date.now() - start) / 2000);
    while (carry >= 1 && inFlight < 2048) {
      carry -= 1;
      inFlight++;
      void one().finally(() => inFlight--);
    }
  }, 10);

  const hostile = opts.hostileShare
    ? new HostileTraffic({ endpoint: localEndpoint(port), basePath: P, keyId: HOSTILE_KEY_ID, credential: () => cred, rate: rate * opts.hostileShare })
    : undefined;
  hostile?.start();

  await new Promise((r) => setTimeout(r, durationS * 1000));
  // Hostile clients stop before the shutdown: the exit code and audit checks are about the valid traffic.
  if (hostile) report.hostile = hostile.stop();
  report.events.push(`${((Date.now() - start) / 1000).toFixed(1)}s SIGTERM under load`);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  termSent = true;
  child.kill('SIGTERM');
  // Keep offering load through the shutdown; stop once the process is gone.
  report.exitCode = await exited;
  stopping = true;
  clearInterval(ticker);
  timers.forEach(clearTimeout);
  await Promise.all(running);
  while (inFlight > 0) await new Promise((r) => setTimeout(r, 20));
  agent.destroy();

  // One key-operation line per processed request, except authentication failures and shed requests beyond
  // the detailed-line rate, which summary lines count instead; follow-ups (answer-not-delivered) are not requests.
  const lines = readFileSync(join(dir, 'audit.log'), 'utf8').trim().split('\n');
  const audit = lines.filter((l) => l.includes('"event":"key-operation"'));
  const summarised = lines
    .filter((l) => l.includes('"event":"auth-failures-suppressed"') || l.includes('"event":"shed-requests-suppressed"'))
    .reduce((n, l) => n + Number((JSON.parse(l) as { suppressed?: number }).suppressed ?? 0), 0);
  const hostileMark = `"keyId":"${HOSTILE_KEY_ID}"`;
  report.hostileAuditLines = audit.filter((l) => l.includes(hostileMark)).length;
  report.auditLines = audit.length - report.hostileAuditLines + summarised;
  // Summaries cannot tell hostile bad signatures from the run's own: with hostile traffic they only add.
  report.auditMatchesAnswers = opts.hostileShare ? report.auditLines >= report.answered : report.auditLines === report.answered;
  const p99 = (list: number[]): number => {
    list.sort((x, y) => x - y);
    return Math.round((list[Math.floor(list.length * 0.99)] ?? 0) * 100) / 100;
  };
  report.p99Ms = p99(perSecond.flat());
  report.p99MsOutsideFaults = p99(calmLatencies);
  report.timeline = [...perSecond.entries()].map(([sec, list]) => [sec, list?.length ?? 0, list ? p99(list) : 0]);
  rmSync(dir, { recursive: true, force: true });
  return report;
}

if (require.main === module) {
  soak(arg('duration', 60), arg('rate', 1800), { hostileShare: arg('hostile', 0.1) }).then(
    (r) => {
      console.log(JSON.stringify(r, null, 2));
      const bad = r.eventFailures > 0 || r.mismatches > 0 || Object.keys(r.unexpected).length > 0 || !r.auditMatchesAnswers || r.exitCode !== 0 || r.connectionErrorsBeforeTerm > 0;
      process.exit(bad ? 1 : 0);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
