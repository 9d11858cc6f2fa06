import { dirname, join } from 'node:path';
import { AuditLog } from '../audit/log';
import { resolveSecret } from '../config/load';
import { openTokenSession, TokenSession } from '../engine/token';
import type { Making } from './made';
import { GovernedStore } from './staged-store';

/** What an admin command works on: the store file, the HSM it names, and the admin audit trail. */
export class AdminContext {
  readonly store: GovernedStore;
  /** How commands make HSM keys, check values and secrets: at once, or for a proposal (src/admin/made.ts). */
  making: Making = { kind: 'direct' };

  constructor(
    readonly configFile: string,
    readonly now: () => Date = () => new Date(),
  ) {
    this.store = new GovernedStore(configFile, () => this.now());
  }

  get secretsDir(): string {
    return join(dirname(this.configFile), 'secrets');
  }

  /** Runs fn with a logged-in HSM session from the config's hsm section. */
  withToken<T>(fn: (t: TokenSession) => T): T {
    const { hsm } = this.store.read();
    const t = openTokenSession(hsm, resolveSecret(hsm.pin, process.env, 'hsm.pin'));
    try {
      return fn(t);
    } finally {
      t.close();
    }
  }

  /** Administrative changes get their own hash chain beside the proxy's (<audit.file>.admin). */
  audit(event: Record<string, string | number | boolean | undefined>): void {
    const file = this.store.read().audit.file;
    if (!file) return;
    const log = AuditLog.open(`${file}.admin`);
    try {
      log.append({ event: 'admin', user: process.env.SUDO_USER ?? process.env.USER ?? 'unknown', ...event });
    } finally {
      log.close();
    }
  }
}
