/**
 * Child processes of the benchmark (proxy, baseline): start, readiness, CPU accounting,
 * and a stop that always runs (normal end, error, SIGINT/SIGTERM, process exit).
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';

const children = new Set<ChildProcess>();

/**
 * Starts a process in its own process group, so that stopping it also stops its cluster workers.
 * `cpus` (a taskset list): it runs on those CPUs only; taskset execs node, so the pid is node's.
 */
export function startChild(args: string[], opts: { env?: NodeJS.ProcessEnv; stdout: number | 'ignore' | 'inherit'; cpus?: string }): ChildProcess {
  const [cmd, argv] = opts.cpus ? ['taskset', ['-c', opts.cpus, process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(cmd, argv, {
    detached: true,
    stdio: ['ignore', opts.stdout, opts.stdout],
    env: opts.env ?? process.env,
  });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

const alive = (c: ChildProcess): boolean => c.exitCode === null && c.signalCode === null;

function signalGroup(c: ChildProcess, signal: NodeJS.Signals): void {
  if (c.pid === undefined) return;
  try {
    process.kill(-c.pid, signal);
  } catch {
    try {
      c.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

/** SIGTERM (graceful: the proxy writes its --cpu-prof profiles on exit), SIGKILL to the group after `graceMs`. */
export async function stopChild(c: ChildProcess, graceMs = 10_000): Promise<void> {
  if (!alive(c)) return;
  const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
  // The leader only: a cluster primary forwards SIGTERM to its workers itself (a second SIGTERM
  // from a group signal would hit a worker after its once-handler and kill it mid-stop).
  c.kill('SIGTERM');
  const timer = setTimeout(() => signalGroup(c, 'SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
  // Cluster workers leave with their primary; make sure of it.
  signalGroup(c, 'SIGKILL');
}

export async function stopAll(graceMs?: number): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c, graceMs)));
}

let installed = false;
/** Children die with the benchmark, whatever ends it. */
export function installCleanup(onSignal: () => Promise<void>): void {
  if (installed) return;
  installed = true;
  process.on('exit', () => {
    for (const c of children) signalGroup(c, 'SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\nbench: ${sig}, stopping children\n`);
      void onSignal()
        .catch(() => undefined)
        .finally(() => process.exit(130));
    });
  }
}

export function httpStatus(port: number, path: string, method = 'GET'): Promise<number> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
    req.end();
  });
}

/** Polls until `check` is true; fails early if the child exits. */
export async function waitFor(what: string, child: ChildProcess, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (!alive(child)) throw new Error(`${what}: process exited (code ${child.exitCode}, signal ${child.signalCode}) before it was ready`);
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not ready after ${timeoutMs} ms`);
}

const TICKS = 100; // USER_HZ on Linux

const PAGE_BYTES = 4096; // x86-64 and arm64 Linux defaults; /proc/<pid>/stat counts RSS in pages

/** The fields of a /proc/.../stat line the bench uses. */
function statFields(stat: string): { ppid: number; ticks: number; rssPages: number } {
  // Fields after "(comm)": state ppid ... utime(14) stime(15) ... rss(24), numbered from 1 at pid.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ppid: Number(rest[1]), ticks: Number(rest[11]) + Number(rest[12]), rssPages: Number(rest[21]) };
}

/** CPU seconds (user + system) of the calling thread alone (Linux /proc/thread-self); null where there is none. */
export function threadCpuSeconds(): number | null {
  try {
    return statFields(readFileSync('/proc/thread-self/stat', 'utf8')).ticks / TICKS;
  } catch {
    return null;
  }
}

/** CPU ticks and resident pages of a process and all its descendants (cluster workers). Linux /proc. */
function treeStat(rootPid: number): { ticks: number; rssPages: number; pids: number[] } {
  const parent = new Map<number, number>();
  const own = new Map<number, { ticks: number; rssPages: number }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    const f = statFields(stat);
    parent.set(Number(name), f.ppid);
    own.set(Number(name), { ticks: f.ticks, rssPages: f.rssPages });
  }
  const total = { ticks: 0, rssPages: 0, pids: [] as number[] };
  for (const [pid, v] of own) {
    for (let p: number | undefined = pid; p !== undefined && p > 1; p = parent.get(p)) {
      if (p === rootPid) {
        total.ticks += v.ticks;
        total.rssPages += v.rssPages;
        total.pids.push(pid);
        break;
      }
    }
  }
  return total;
}

/** CPU seconds (user + system, all threads) of a process and all its descendants. */
export function treeCpuSeconds(rootPid: number): number {
  return treeStat(rootPid).ticks / TICKS;
}

/** Resident memory of a process and all its descendants, bytes (shared pages counted once per process). */
export function treeRssBytes(rootPid: number): number {
  return treeStat(rootPid).rssPages * PAGE_BYTES;
}

/** Busy and total jiffies of the whole machine (/proc/stat), for box utilisation. */
export function boxCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] as string;
  // user nice system idle iowait irq softirq steal (guest time is already in user).
  const v = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** Cumulative µs in which some runnable task waited for a CPU (PSI, /proc/pressure/cpu), if the kernel has it. */
export function cpuPressureUs(): number | undefined {
  try {
    const m = /^some .*total=(\d+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** CPUs this process may run on (a taskset list such as "0-3" or "0,2"). */
export function ownCpus(): string {
  return taskset(['-c', '-p', String(process.pid)]).replace(/^.*:\s*/s, '').trim();
}

/** Pins every thread of `pid` to `cpus`; threads it starts later inherit the mask. */
export function pinProcess(pid: number, cpus: string): void {
  taskset(['-a', '-c', '-p', cpus, String(pid)]);
}

function taskset(args: string[]): string {
  try {
    return execFileSync('taskset', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT') throw new Error('--pin needs taskset (util-linux; apt-get install util-linux), which is not on the PATH', { cause: e });
    throw new Error(`taskset ${args.join(' ')}: ${(err.stderr ?? err.message).trim()}`, { cause: e });
  }
}

/** Expands a taskset list ("0-2,5") into CPU numbers. */
export function cpuList(list: string): number[] {
  const out: number[] = [];
  for (const part of list.split(',')) {
    const [a, b] = part.split('-').map(Number) as [number, number | undefined];
    for (let c = a; c <= (b ?? a); c++) out.push(c);
  }
  return out;
}

/** Distinct Cpus_allowed_list of every thread of one process. */
export function threadAffinity(pid: number): string[] {
  const seen = new Set<string>();
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  for (const tid of tasks) {
    try {
      const m = /^Cpus_allowed_list:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'));
      if (m) seen.add(m[1] as string);
    } catch {
      /* thread gone */
    }
  }
  return [...seen];
}

/** Distinct Cpus_allowed_list of every thread of a process and its descendants: one entry when pinning held. */
export function treeAffinity(rootPid: number): string[] {
  return [...new Set(treeStat(rootPid).pids.flatMap(threadAffinity))];
}
