import { isDeepStrictEqual } from 'node:util';
import { configSchema, ProxyConfig } from './schema';

type ReloadRule = 'live' | 'restart';

/** A setting (or a whole section) and how its changes reach a running proxy. */
export interface ReloadEntry {
  path: readonly string[];
  rule: ReloadRule;
}

/** What the walk needs of a Zod 4 schema: its definition and its .meta() (src/config/schema.ts, LIVE/RESTART). */
interface Walkable {
  def: { type: string; innerType?: Walkable; in?: Walkable; shape?: Record<string, Walkable> };
  meta(): { reload?: ReloadRule } | undefined;
}

/** The object under wrappers (optional, default, prefault, a transform's input), and the outermost rule declared on the way. */
function unwrap(schema: Walkable): { inner: Walkable; rule?: ReloadRule } {
  let s = schema;
  let rule: ReloadRule | undefined;
  for (;;) {
    rule ??= s.meta()?.reload;
    const next = s.def.innerType ?? (s.def.type === 'pipe' ? s.def.in : undefined);
    if (!next) return { inner: s, rule };
    s = next;
  }
}

/**
 * The config's settings at the depth where their rule is decided: a section whose fields all share its
 * rule is one entry; a section with fields that declare another rule is split into its fields. Every
 * top-level section must declare a rule (a test checks it): there is no default to fall back on.
 */
export function reloadRules(schema: unknown = configSchema): ReloadEntry[] {
  const out: ReloadEntry[] = [];
  const walk = (s: Walkable, path: string[], inherited: ReloadRule | undefined): void => {
    const { inner, rule: own } = unwrap(s);
    const rule = own ?? inherited;
    const shape = inner.def.type === 'object' ? inner.def.shape : undefined;
    const split = shape !== undefined && Object.values(shape).some((child) => declaresOther(child, rule));
    if (split) for (const [key, child] of Object.entries(shape)) walk(child, [...path, key], rule);
    else if (rule) out.push({ path, rule });
    else throw new Error(`config setting ${path.join('.')} declares no reload rule (.meta(LIVE) or .meta(RESTART) in src/config/schema.ts)`);
  };
  const root = unwrap(schema as Walkable).inner;
  for (const [key, child] of Object.entries(root.def.shape ?? {})) walk(child, [key], undefined);
  return out;
}

/** Whether a field, or a field below it, declares a rule other than `rule`. */
function declaresOther(schema: Walkable, rule: ReloadRule | undefined): boolean {
  const { inner, rule: own } = unwrap(schema);
  if (own !== undefined && own !== rule) return true;
  const shape = inner.def.type === 'object' ? inner.def.shape : undefined;
  return shape !== undefined && Object.values(shape).some((child) => declaresOther(child, own ?? rule));
}

const RULES = reloadRules();

const at = (config: unknown, path: readonly string[]): unknown =>
  path.reduce<unknown>((v, k) => (v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined), config);

/** The dotted names of the restart-only settings that differ between two validated configurations. */
export function restartChanges(running: ProxyConfig, next: ProxyConfig): string[] {
  return RULES.filter((r) => r.rule === 'restart' && !isDeepStrictEqual(at(running, r.path), at(next, r.path))).map((r) => r.path.join('.'));
}
