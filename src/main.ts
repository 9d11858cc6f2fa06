#!/usr/bin/env node
import cluster from 'node:cluster';
import http from 'node:http';
import os from 'node:os';
import { AggregatorRegistry } from 'prom-client';
import type { ProxyApp } from './app';
import { ConfigError, loadConfigFile, RuntimeConfig } from './config/load';
import { auditRefusalAtStart } from './governance/refusal';
import { createLogger, Logger } from './log';
import { QuotaLedger } from './http/quota';
import { answerLease, isLeaseGrant, isLeaseRequest, LeasedQuotas } from './http/quota-lease';
import { createOpsHandler } from './ops';
import { runProcess } from './process';

const USAGE = `usage: xks-proxy [--config FILE]

Starts the AWS KMS XKS proxy. The config file (YAML or JSON) may also be named by XKS_CONFIG.
Signals: SIGHUP reloads the configuration; SIGTERM/SIGINT stop gracefully.`;

function configPath(argv: string[]): string {
  const i = argv.indexOf('--config');
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    process.exit(0);
  }
  const file = i >= 0 ? argv[i + 1] : process.env.XKS_CONFIG;
  if (!file) {
    console.error(USAGE);
    process.exit(2);
  }
  return file;
}

function loadOrExit(file: string, log: Logger): RuntimeConfig {
  try {
    return loadConfigFile(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      log.fatal({ err: e.message }, 'refusing to start: invalid configuration');
      if (e.governance) auditRefusalAtStart(file, { ...e.governance, message: e.message });
      process.exit(78); // EX_CONFIG
    }
    throw e;
  }
}

function workerCount(runtime: RuntimeConfig): number {
  const w = runtime.config.server.workers;
  return w === 'auto' ? Math.max(1, os.availableParallelism()) : w;
}

/** A cluster worker reports its readiness to the primary and answers the primary's metric scrapes. */
function joinCluster(app: ProxyApp): void {
  // Constructing one installs prom-client's IPC listener that answers the primary's scrapes.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([app.metrics.registry]);
  const report = (): void => void process.send?.({ xks: 'ready', ready: app.ready() });
  report();
  setInterval(report, 1000).unref();
}

/** A cluster worker's quotas: leased from the primary's ledger over the cluster's IPC channel. */
function leaseFromPrimary(): LeasedQuotas {
  const quotas = new LeasedQuotas((request) => {
    if (!process.connected || !process.send) return false;
    process.send(request);
    return true;
  });
  process.on('message', (m: unknown) => {
    if (isLeaseGrant(m)) quotas.granted(m);
  });
  return quotas;
}

/**
 * Cluster primary: forks workers, restarts crashed ones, serves aggregated metrics and readiness, and
 * holds every key store's quota for all its workers (src/http/quota-lease.ts).
 */
async function runPrimary(runtime: RuntimeConfig, log: Logger, workers: number): Promise<void> {
  // Workers accept from the shared socket themselves. Node's default on Linux (round robin) has the
  // primary accept and hand each connection to a worker, one at a time per worker, each hand-off
  // waiting for the worker's event loop to take it: a saturated worker (100 ms loop turns) then takes
  // about 10 connections a second, and a burst of new connections waits seconds in the primary before
  // its first request is read (bench --mode overload: 71% of capacity at 1x with 800 new connections,
  // GetHealthStatus answered 10% of the time; 94% and 100% this way). A busy worker also accepts less,
  // which is the balance wanted under load. NODE_CLUSTER_SCHED_POLICY still overrides.
  if (!process.env.NODE_CLUSTER_SCHED_POLICY) {
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    // libuv accepts every pending connection in one go; with this, a worker yields after each, so
    // that one worker waking first does not take a whole burst of long-lived connections.
    process.env.UV_TCP_SINGLE_ACCEPT ??= '1';
  }
  const ready = new Map<number, boolean>();
  const quotas = new QuotaLedger();
  let stopping = false;
  const fork = (): void => {
    const w = cluster.fork();
    w.on('message', (m: { xks?: string; ready?: boolean }) => {
      if (isLeaseRequest(m)) {
        const grant = answerLease(quotas, m);
        if (grant && w.isConnected()) w.send(grant);
      } else if (m?.xks === 'ready') ready.set(w.id, m.ready === true);
    });
  };
  cluster.on('exit', (w, code, signal) => {
    ready.delete(w.id);
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(0);
      return;
    }
    log.error({ worker: w.id, code, signal }, 'worker exited; starting a new one');
    setTimeout(fork, 1000);
  });
  for (let i = 0; i < workers; i++) fork();

  const cfg = runtime.config.ops;
  if (cfg.enabled) {
    const aggregator = new AggregatorRegistry();
    const allReady = (): boolean => ready.size === workers && [...ready.values()].every(Boolean);
    http
      .createServer(
        createOpsHandler({
          readiness: () => ({ ready: allReady() && !stopping, workersReady: [...ready.values()].filter(Boolean).length, workers }),
          metrics: () => aggregator.clusterMetrics(),
          metricsContentType: aggregator.contentType,
        }),
      )
      .listen(cfg.port, cfg.host);
  }
  process.on('SIGHUP', () => Object.values(cluster.workers ?? {}).forEach((w) => w?.process.kill('SIGHUP')));
  const stop = (): void => {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    setTimeout(() => process.exit(1), 30_000).unref();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

async function main(): Promise<void> {
  const log = createLogger();
  const file = configPath(process.argv.slice(2));
  const runtime = loadOrExit(file, log);
  const workers = workerCount(runtime);
  // PKCS#11 async calls run on libuv's pool: give every HSM session a thread, the reserved health-check
  // session of each HSM included, so that the deep check never queues behind customer calls (before the pool starts).
  if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = String(Math.max(4, runtime.config.hsms.reduce((n, h) => n + h.sessionPoolSize + 1, 0)));
  if (workers > 1 && cluster.isPrimary) return runPrimary(runtime, log, workers);
  const { app } = await runProcess({
    file,
    runtime,
    logger: log,
    quotas: cluster.isWorker ? leaseFromPrimary() : undefined,
    opsServer: !cluster.isWorker,
    auditSuffix: cluster.isWorker ? `.worker${cluster.worker?.id ?? 0}` : undefined,
  });
  if (cluster.isWorker) joinCluster(app);
}

main().catch((e) => {
  console.error(JSON.stringify({ level: 60, msg: 'fatal', err: (e as Error).message }));
  process.exit(1);
});
