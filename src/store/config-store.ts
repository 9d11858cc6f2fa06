import { closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { Document, parseDocument } from 'yaml';
import { buildRuntimeConfig, ConfigError, RuntimeConfig } from '../config/load';
import type { ProxyConfig } from '../config/schema';

/** What a change's commit step may return: an edit of the document with what it learnt in the HSM. */
export type Amendment = (doc: Document) => void;
export type Commit = () => Amendment | void;

/**
 * The embedded key/group store: the proxy's own YAML config file, edited in place.
 * Every change is applied to a copy, validated whole (schema, references, secrets), and only then
 * written atomically (temp file + fsync + rename), so a refused or interrupted change leaves the
 * previous file, and the running proxies keep serving it. Comments and layout are preserved.
 */
export class ConfigStore {
  constructor(readonly file: string) {}

  /** The current document as plain data (validated). */
  read(): ProxyConfig {
    return this.runtimeOf(this.load()).config;
  }

  private load(): Document {
    const doc = parseDocument(readFileSync(this.file, 'utf8'));
    if (doc.errors.length > 0) throw new ConfigError(`${this.file}: ${doc.errors[0]?.message ?? 'invalid YAML'}`);
    return doc;
  }

  private runtimeOf(doc: Document): RuntimeConfig {
    return buildRuntimeConfig(doc.toJS());
  }

  /**
   * Applies `change` to the document (`config` is a plain snapshot for lookups), validates the
   * result and writes it. Throws without touching the file when the result is invalid.
   * `commit` runs between validation and the write (e.g. generating the HSM key the change names);
   * if it throws, nothing is written. It may return an amendment of what it learnt (the new key's
   * check value), applied and validated again before the write.
   */
  update(change: (doc: Document, config: ProxyConfig) => void, commit?: Commit): RuntimeConfig {
    const lock = this.lock();
    try {
      const doc = this.load();
      const before = this.runtimeOf(doc).config;
      change(doc, before);
      let next: RuntimeConfig;
      try {
        next = this.runtimeOf(doc);
      } catch (e) {
        throw new ConfigError(`change refused, nothing written: ${(e as Error).message}`);
      }
      const amend = commit?.();
      if (amend) {
        amend(doc);
        try {
          next = this.runtimeOf(doc);
        } catch (e) {
          throw new ConfigError(`change refused, nothing written: ${(e as Error).message}`);
        }
      }
      this.writeAtomically(doc.toString());
      return next;
    } finally {
      lock();
    }
  }

  private writeAtomically(text: string): void {
    const tmp = join(dirname(this.file), `.${basename(this.file)}.${process.pid}.tmp`);
    let mode = 0o640;
    try {
      mode = statSync(this.file).mode & 0o777;
    } catch {
      /* new file */
    }
    let fd: number;
    try {
      fd = openSync(tmp, 'w', mode);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EROFS' || code === 'EACCES') {
        throw new ConfigError(`${this.file} is read-only here (a mounted ConfigMap?): change its source instead`);
      }
      throw e;
    }
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
    // Make the rename itself durable.
    const dir = openSync(dirname(this.file), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  }

  /** An exclusive lock file so that two admin commands cannot interleave their read-modify-write. */
  private lock(): () => void {
    const path = `${this.file}.lock`;
    for (let attempt = 0; ; attempt++) {
      try {
        closeSync(openSync(path, 'wx'));
        return () => unlinkSync(path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        // The holder may release it between our open and this stat: then simply try again.
        const age = lockAge(path);
        if (age === undefined) continue;
        if (age > 30_000) unlinkSync(path); // left by a crashed command
        else if (attempt > 50) throw new ConfigError(`${path} is held by another command`);
        else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
      }
    }
  }
}

function lockAge(path: string): number | undefined {
  try {
    return Date.now() - statSync(path).mtimeMs;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** Index helpers over the plain snapshot, for building Document paths. */
export function groupIndex(config: ProxyConfig, name: string): number {
  const i = config.groups.findIndex((g) => g.name === name);
  if (i < 0) throw new ConfigError(`no group named "${name}"`);
  return i;
}

export function keyStoreIndex(config: ProxyConfig, name: string): number {
  const i = config.keyStores.findIndex((k) => k.name === name);
  if (i < 0) throw new ConfigError(`no key store named "${name}"`);
  return i;
}

export function keyPath(config: ProxyConfig, keyId: string): { group: number; key: number } {
  const found: { group: number; key: number }[] = [];
  config.groups.forEach((g, gi) =>
    g.keys.forEach((k, ki) => {
      if (k.id === keyId) found.push({ group: gi, key: ki });
    }),
  );
  if (found.length === 0) throw new ConfigError(`no key with id "${keyId}"`);
  if (found.length > 1) throw new ConfigError(`key id "${keyId}" is in several groups; rename one first`);
  return found[0] as { group: number; key: number };
}
