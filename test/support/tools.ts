/**
 * The real Helm, kubectl, promtool and Prometheus binaries the chart and monitoring suites run.
 * `bash helm/install-tools.sh` (test/run.sh runs it) installs them: Helm and kubectl into the cache
 * directory below, Prometheus and promtool from Debian. A suite whose tool is missing fails in CI and is
 * skipped elsewhere, saying which tool and how to install it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';

type Tool = 'helm' | 'kubectl' | 'promtool' | 'prometheus';

/** Where helm/install-tools.sh puts Helm and kubectl (keep the two in step). */
function cacheDir(): string {
  const base = process.env.XKS_TOOLS_DIR ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), '.cache'), 'xks-proxy', 'tools');
  return path.join(base, 'kubectl-v30-2.0.4');
}

function onPath(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** The binary's path, or undefined when it is not installed. */
function findTool(tool: Tool): string | undefined {
  if (tool === 'helm' || tool === 'kubectl') {
    const cached = path.join(cacheDir(), tool);
    if (existsSync(cached)) return cached;
  }
  return onPath(tool);
}

/**
 * The binaries, or a reason to skip: in CI (and wherever XKS_REQUIRE_TOOLS=1) a missing tool is a broken
 * install, so this throws instead.
 */
export function requireTools<T extends Tool>(suite: string, tools: readonly T[]): { bins?: Record<T, string>; why?: string } {
  const bins = {} as Record<T, string>;
  const missing: T[] = [];
  for (const t of tools) {
    const bin = findTool(t);
    if (bin) bins[t] = bin;
    else missing.push(t);
  }
  if (missing.length === 0) return { bins };
  const why = `${missing.join(', ')} not installed: run \`bash helm/install-tools.sh\``;
  if (process.env.CI || process.env.XKS_REQUIRE_TOOLS === '1') throw new Error(`${suite}: ${why}`);
  console.warn(`${suite}: SKIPPED: ${why}`);
  return { why };
}
