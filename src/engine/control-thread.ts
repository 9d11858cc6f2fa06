import { Worker } from 'node:worker_threads';
import * as pkcs11js from 'pkcs11js';
import { libraryLock } from './library-lock';
import { type Pkcs11Module, unlessAlreadyInitialized } from './module';
import { ckrName } from './pkcs11-errors';

/**
 * The PKCS#11 calls of connecting, reconnecting and replacing sessions. pkcs11js has no asynchronous form
 * of any of them, and on a network HSM each can take seconds (a login to an HA group, C_Initialize
 * reaching every member): made on the event loop they would stall every request and probe of the process.
 */
export type ControlMethod =
  | 'C_Initialize'
  | 'C_Finalize'
  | 'C_GetSlotList'
  | 'C_GetTokenInfo'
  | 'C_GetMechanismList'
  | 'C_GetMechanismInfo'
  | 'C_OpenSession'
  | 'C_CloseSession'
  | 'C_CloseAllSessions'
  | 'C_GetSessionInfo'
  | 'C_Login';

/**
 * A test module that injects faults (testbed/faulty-module.ts) answers this key with a gate that sees
 * each off-thread call before it is sent, and throws the failure it injects.
 */
export const OFF_THREAD_GATE = Symbol('xks-proxy.offThreadGate');
export type OffThreadGate = (method: string, args: unknown[]) => void;

interface Reply {
  id: number;
  result?: unknown;
  error?: { message: string; code?: number; method: string; pkcs11: boolean };
}

/** Calls that act on the whole library: no other control call of it may run meanwhile (src/engine/library-lock.ts). */
const LIBRARY_WIDE: ReadonlySet<ControlMethod> = new Set(['C_Initialize', 'C_Finalize']);

/** A worker thread with no calls for this long ends; the next call starts another (about 40 ms). */
const IDLE_MS = 10_000;

/**
 * Runs the control calls on a worker thread with its own pkcs11js object loaded from the same library
 * path. dlopen returns the library the main thread already holds (its state is process-wide), so a
 * session the worker opens and logs in is a handle the main thread's object uses for AES-GCM, and the
 * main thread never blocks on a slow login. One call at a time, in order, per thread; across the threads of
 * one library, C_Initialize and C_Finalize run alone (src/engine/library-lock.ts).
 *
 * A module whose C_GetFunctionList gives each caller an instance of its own (p11-kit's client module
 * does) cannot share sessions that way: initialize() finds out, and from then on the calls run inline on
 * the main thread, as they must.
 */
export class ControlThread {
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private idle: NodeJS.Timeout | undefined;
  private inline = false;

  constructor(
    private readonly modulePath: string,
    /** The main thread's module object: a fault-injecting one carries a gate (OFF_THREAD_GATE). */
    private readonly main: Pkcs11Module,
    /** Told once when the module turns out not to share its state with the thread (the calls go inline). */
    private readonly onInline: () => void = () => undefined,
  ) {}

  /** C_Initialize, then the check that the main thread's object sees the module initialised (see above). */
  async initialize(args: pkcs11js.InitializationOptions): Promise<void> {
    await this.call('C_Initialize', args).catch(unlessAlreadyInitialized);
    if (this.inline || sharesState(this.main)) return;
    await this.call('C_Finalize').catch(() => undefined);
    await this.close();
    this.inline = true;
    this.onInline();
    await this.call('C_Initialize', args).catch(unlessAlreadyInitialized);
  }

  call<K extends ControlMethod>(method: K, ...args: Parameters<Pkcs11Module[K]>): Promise<ReturnType<Pkcs11Module[K]>> {
    return libraryLock(this.modulePath).run(LIBRARY_WIDE.has(method), () => this.send(method, args));
  }

  private send<K extends ControlMethod>(method: K, args: Parameters<Pkcs11Module[K]>): Promise<ReturnType<Pkcs11Module[K]>> {
    if (this.inline) {
      return new Promise((resolve) => resolve((this.main[method] as (...a: unknown[]) => ReturnType<Pkcs11Module[K]>)(...args)));
    }
    try {
      (this.main as unknown as Partial<Record<typeof OFF_THREAD_GATE, OffThreadGate>>)[OFF_THREAD_GATE]?.(method, args);
    } catch (e) {
      return Promise.reject(e);
    }
    const worker = this.thread();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.postMessage({ id, method, args });
    });
  }

  /** Ends the thread; a call still running in the module is left to finish (it cannot be interrupted). */
  async close(): Promise<void> {
    clearTimeout(this.idle);
    const worker = this.worker;
    this.worker = undefined;
    if (worker) await Promise.race([worker.terminate(), new Promise((r) => setTimeout(r, 1000).unref())]);
  }

  private thread(): Worker {
    clearTimeout(this.idle);
    if (this.worker) {
      this.worker.ref();
      return this.worker;
    }
    const worker = new Worker(`(${controlWorker.toString()})()`, {
      eval: true,
      workerData: { binding: require.resolve('pkcs11js'), modulePath: this.modulePath },
    });
    worker.on('message', (reply: Reply) => this.settle(reply));
    worker.on('error', (e) => this.fail(worker, e));
    worker.on('exit', () => this.fail(worker, new Error('the PKCS#11 control thread exited')));
    this.worker = worker;
    return worker;
  }

  private settle({ id, result, error }: Reply): void {
    const waiter = this.pending.get(id);
    this.pending.delete(id);
    if (this.pending.size === 0 && this.worker) {
      // Idle: the thread must not keep the process alive, and ends after a while.
      this.worker.unref();
      const worker = this.worker;
      this.idle = setTimeout(() => {
        if (this.worker === worker && this.pending.size === 0) void this.close();
      }, IDLE_MS);
      this.idle.unref();
    }
    if (!waiter) return;
    if (error) waiter.reject(rebuildError(error));
    else waiter.resolve(revive(result));
  }

  private fail(worker: Worker, e: Error): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    for (const waiter of this.pending.values()) waiter.reject(e);
    this.pending.clear();
  }
}

/** False when the module, initialised by the thread, is not initialised for the main thread's object. */
function sharesState(main: Pkcs11Module): boolean {
  try {
    main.C_GetInfo();
    return true;
  } catch (e) {
    return ckrName(e) !== 'CKR_CRYPTOKI_NOT_INITIALIZED';
  }
}

/** Structured cloning turns Buffers into Uint8Arrays; pkcs11js handles must be Buffers again. */
function revive(v: unknown): unknown {
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  if (Array.isArray(v)) return v.map(revive);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, revive(x)]));
  return v;
}

/** The error the call would have thrown on the main thread: a Pkcs11Error keeps its CKR_ name, code and method. */
function rebuildError(e: NonNullable<Reply['error']>): Error {
  if (e.pkcs11) {
    const Pkcs11Error = (pkcs11js as unknown as { Pkcs11Error: new (message: string, code: number, method: string) => Error }).Pkcs11Error;
    return new Pkcs11Error(`${e.message}:${e.code ?? 0}`, e.code ?? 0, e.method);
  }
  return Object.assign(new Error(e.message), { method: e.method });
}

/**
 * The worker's script. Its source text is what the worker runs (eval), so it refers to nothing outside
 * itself and works alike from dist/ and under ts-jest.
 */
function controlWorker(): void {
  /* eslint-disable @typescript-eslint/no-require-imports -- the worker runs this function's source text: it loads its modules itself */
  const threads = require('node:worker_threads') as typeof import('node:worker_threads');
  const data = threads.workerData as { binding: string; modulePath: string };
  const binding = require(data.binding) as typeof pkcs11js & { Pkcs11Error: abstract new () => Error };
  /* eslint-enable @typescript-eslint/no-require-imports */
  const port = threads.parentPort as import('node:worker_threads').MessagePort;
  const mod = new binding.PKCS11();
  mod.load(data.modulePath);
  const calls = mod as unknown as Record<string, (...args: unknown[]) => unknown>;
  const asBuffers = (v: unknown): unknown => {
    if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    if (Array.isArray(v)) return v.map(asBuffers);
    return v;
  };
  port.on('message', ({ id, method, args }: { id: number; method: string; args: unknown[] }) => {
    try {
      port.postMessage({ id, result: (calls[method] as (...args: unknown[]) => unknown)(...args.map(asBuffers)) });
    } catch (e) {
      const err = e as { message?: unknown; code?: number; method?: string };
      port.postMessage({ id, error: { message: String(err.message), code: err.code, method: err.method || method, pkcs11: e instanceof binding.Pkcs11Error } });
    }
  });
}
