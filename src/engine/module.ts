import * as pkcs11js from 'pkcs11js';
import type { ProxyConfig } from '../config/schema';
import { ckrName } from './pkcs11-errors';

export type Pkcs11Module = pkcs11js.PKCS11;
export type HsmConfig = ProxyConfig['hsm'];
/** What it takes to reach one token; the admin tool has no full hsm section. */
export type ModuleTarget = Pick<HsmConfig, 'modulePath' | 'tokenLabel'> & Partial<Pick<HsmConfig, 'environment' | 'libraryParameters'>>;

/**
 * The one place a module's environment is set. PKCS#11 modules read where their configuration lives
 * from environment variables when they are loaded or initialised (SOFTHSM2_CONF, ChrystokiConfigurationPath,
 * CKNFAST_HOME, ...), and a dlopen'ed library sees only the process environment, so this has to write
 * process.env. Limitation: every module in the process shares one environment. A fleet of modules from
 * different vendors works (their variables differ); two modules that read the same variable with different
 * values cannot live in one process, so that is refused here rather than silently re-pointing the first.
 */
const applied = new Map<string, string>();

export function applyModuleEnvironment(environment: Readonly<Record<string, string>> = {}): void {
  for (const [name, value] of Object.entries(environment)) {
    const earlier = applied.get(name);
    if (earlier !== undefined && earlier !== value) {
      throw new Error(`hsm.environment.${name} differs from the value another PKCS#11 module in this process uses; run them in separate processes`);
    }
  }
  for (const [name, value] of Object.entries(environment)) {
    applied.set(name, value);
    process.env[name] = value;
  }
}

/** Sets the module's environment, then loads it (the order matters: some modules read it at load). */
export function loadModule(target: ModuleTarget, create: () => Pkcs11Module = () => new pkcs11js.PKCS11()): Pkcs11Module {
  applyModuleEnvironment(target.environment);
  const mod = create();
  mod.load(target.modulePath);
  return mod;
}

/**
 * A PKCS#11 library is process-wide: dlopen returns the same library for the same path, and C_Initialize /
 * C_Finalize act on all of its users at once. So a fleet with two tokens of one module (or two proxies in one
 * test process) shares one loaded library, and C_Finalize, which closes every session of every user, is only
 * called when no other user of the library may be calling into it: at the last close, or when a reconnect
 * finds every other user lost and between attempts (a network module whose server went away needs the
 * fresh C_Initialize). A reconnect while another user is connected, or connecting, only closes and reopens
 * its own sessions.
 */
interface Library {
  leases: Set<ModuleLease>;
  /** One pkcs11js object per `create` function (the fault-injecting test wrapper is a different object). */
  objects: Map<() => Pkcs11Module, Pkcs11Module>;
}
const libraries = new Map<string, Library>();
const realModule = (): Pkcs11Module => new pkcs11js.PKCS11();

export class ModuleLease {
  /**
   * Kept up to date by the owner: whether it may be calling into the module (connected, connecting, or
   * not yet done closing a lost connection). C_Finalize from another user would pull the library from
   * under those calls, which run on other threads than the finalize.
   */
  inUse = false;
  private released = false;

  constructor(
    readonly mod: Pkcs11Module,
    private readonly library: Library,
    private readonly path: string,
  ) {}

  /**
   * True when no other user of the library has a working connection, so C_Finalize harms nobody: before a
   * reconnect, a fresh C_Initialize only when it hurts no other user (see above).
   */
  alone(): boolean {
    return [...this.library.leases].every((l) => l === this || !l.inUse);
  }

  /** At close: true when this was the library's last user, so the caller finalizes it. */
  detach(): boolean {
    if (this.released) return false;
    this.released = true;
    this.inUse = false;
    this.library.leases.delete(this);
    if (this.library.leases.size > 0) return false;
    libraries.delete(this.path);
    return true;
  }

  /** At close, for callers on the main thread (administration): C_Finalize when this was the last user. */
  release(): void {
    if (this.detach()) safeFinalize(this.mod);
  }
}

function safeFinalize(mod: Pkcs11Module): void {
  try {
    mod.C_Finalize();
  } catch {
    /* not initialised, or already finalized */
  }
}

/** Loads the module once per path (and per `create`), sets its environment first, and counts its users. */
export function leaseModule(target: ModuleTarget, create: () => Pkcs11Module = realModule): ModuleLease {
  let library = libraries.get(target.modulePath);
  if (!library) libraries.set(target.modulePath, (library = { leases: new Set(), objects: new Map() }));
  let mod = library.objects.get(create);
  if (!mod) {
    mod = loadModule(target, create);
    library.objects.set(create, mod);
  } else {
    applyModuleEnvironment(target.environment);
  }
  const lease = new ModuleLease(mod, library, target.modulePath);
  library.leases.add(lease);
  return lease;
}

/**
 * pkcs11js (up to 2.1.7 at least) copies `libraryParameters` into a buffer one byte short, so the string
 * loses its last character; a trailing space is what it drops, and module parsers (NSS) ignore it.
 * test/engine-nss.test.ts fails when the binding is fixed, so this can go then.
 */
export function libraryParametersForBinding(parameters: string): string {
  return `${parameters} `;
}

/** C_Initialize's arguments: OS locking (modules can crash under concurrent calls without it) and the module's own parameters. */
export function initializeArgs(target: ModuleTarget): pkcs11js.InitializationOptions {
  const args: pkcs11js.InitializationOptions = { flags: pkcs11js.CKF_OS_LOCKING_OK };
  if (target.libraryParameters !== undefined) args.libraryParameters = libraryParametersForBinding(target.libraryParameters);
  return args;
}

/** Another user of the library (or its control thread) initialised it first: that is success. */
export function unlessAlreadyInitialized(e: unknown): void {
  if (ckrName(e) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw e;
}

export function initializeModule(mod: Pkcs11Module, target: ModuleTarget): void {
  try {
    mod.C_Initialize(initializeArgs(target));
  } catch (e) {
    unlessAlreadyInitialized(e);
  }
}

/** PKCS#11 pads fixed-width text fields with spaces, and some modules with NULs. */
export const fieldText = (s: string): string => s.replace(/\0/g, '').trim();

/** The slot holding the token with this label, or undefined. */
export function findTokenSlot(mod: Pkcs11Module, tokenLabel: string): pkcs11js.Handle | undefined {
  return mod.C_GetSlotList(true).find((s) => fieldText(mod.C_GetTokenInfo(s).label) === tokenLabel);
}
