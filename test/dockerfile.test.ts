/**
 * Structure of the Dockerfile (no Docker engine is available to build it): multi-stage on the same
 * base, native build tools only in the build stage, dev dependencies pruned before the runtime stage
 * copies node_modules, a non-root USER, the WITH_SOFTHSM build argument, and the entry point that
 * package.json and tsconfig.json actually produce.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(__dirname, '..');

/** The fields of package.json and tsconfig.json that these tests read. */
interface PackageJson {
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
  bin: Record<string, string>;
}
interface TsConfig {
  compilerOptions: Record<string, unknown>;
  include: string[];
}

const readJson = <T>(file: string): T => JSON.parse(readFileSync(path.join(root, file), 'utf8')) as T;

interface Instruction {
  op: string;
  args: string;
}

interface Stage {
  from: string;
  name?: string;
  body: Instruction[];
}

/** Instructions with comments dropped and backslash continuations joined. */
function parseDockerfile(text: string): { globalArgs: Map<string, string>; stages: Stage[] } {
  const logical: string[] = [];
  let current = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#') || (line === '' && current === '')) continue;
    if (line.endsWith('\\')) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push((current + line).trim());
    current = '';
  }
  const globalArgs = new Map<string, string>();
  const stages: Stage[] = [];
  for (const l of logical.filter(Boolean)) {
    const m = /^(\S+)\s*(.*)$/.exec(l)!;
    const op = (m[1] as string).toUpperCase();
    const args = m[2] as string;
    if (op === 'FROM') {
      const f = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)!;
      const from = (f[1] as string).replace(/\$\{?(\w+)\}?/g, (_, name: string) => globalArgs.get(name) ?? '');
      stages.push({ from, name: f[2], body: [] });
    } else if (stages.length === 0) {
      if (op === 'ARG') {
        const [name = '', value = ''] = args.split('=');
        globalArgs.set(name, value);
      }
    } else {
      (stages[stages.length - 1] as Stage).body.push({ op, args });
    }
  }
  return { globalArgs, stages };
}

const dockerfile = readFileSync(path.join(root, 'Dockerfile'), 'utf8');
const { stages } = parseDockerfile(dockerfile);
const build = stages[0] as Stage;
const runtime = stages[stages.length - 1] as Stage;
const runs = (s: Stage): string => s.body.filter((i) => i.op === 'RUN').map((i) => i.args).join('\n');
const ops = (s: Stage, op: string): string[] => s.body.filter((i) => i.op === op).map((i) => i.args);

describe('Dockerfile', () => {
  test('is multi-stage, both stages on node:20-bookworm-slim (the native addon needs the same glibc)', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(build.from).toBe('node:20-bookworm-slim');
    expect(runtime.from).toBe(build.from);
    expect(build.name).toBeDefined();
  });

  test('build stage: compiler toolchain, npm ci, build, then prune dev dependencies', () => {
    const r = runs(build);
    expect(r).toMatch(/apt-get install[^\n]*\bpython3\b/);
    expect(r).toMatch(/apt-get install[^\n]*\bmake\b/);
    expect(r).toMatch(/apt-get install[^\n]*\bg\+\+/);
    const order = ['npm ci', 'npm run build', 'npm prune --omit=dev'].map((c) => r.indexOf(c));
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
  });

  test('build stage: pkcs11js is built once, by the postinstall, from the patched source, and checked on SoftHSM2', () => {
    const r = runs(build);
    // npm ci would otherwise run pkcs11js's own build first (the image's npm 10 ignores allowScripts).
    expect(r).toMatch(/npm ci\b[^\n]*--ignore-scripts[^\n]*&& npm run postinstall/);
    expect(r).toMatch(/apt-get install[^\n]*\bsofthsm2\b/);
    const pkg = readJson<PackageJson>('package.json');
    expect(pkg.scripts.postinstall).toBe('patch-package && node scripts/build-pkcs11js.js');
    expect(pkg.dependencies.pkcs11js).toMatch(/^\d+\.\d+\.\d+$/); // exact: the patch is for one version
    expect(existsSync(path.join(root, 'patches', `pkcs11js+${pkg.dependencies.pkcs11js}.patch`))).toBe(true);
    // Both are in place before npm ci's postinstall needs them.
    const copied = ops(build, 'COPY').map((c) => c.split(/\s+/)[0]);
    const npmCi = build.body.findIndex((i) => i.op === 'RUN' && i.args.includes('npm ci'));
    for (const dir of ['patches', 'scripts']) {
      const at = build.body.findIndex((i) => i.op === 'COPY' && i.args.split(/\s+/)[0] === dir);
      expect({ dir, copied: copied.includes(dir), before: at < npmCi }).toEqual({ dir, copied: true, before: true });
    }
  });

  test('runtime stage: no compiler, no npm install, only package.json, node_modules and dist from the build stage', () => {
    const r = runs(runtime);
    expect(r).not.toMatch(/\bg\+\+|\bmake\b|python3/);
    expect(r).not.toMatch(/npm (ci|install|i)\b/);
    const copies = ops(runtime, 'COPY');
    expect(copies.length).toBeGreaterThan(0);
    for (const c of copies) {
      expect(c).toMatch(new RegExp(`^--from=${build.name}\\s`));
      const src = c.replace(/^(--\S+\s+)+/, '').split(/\s+/)[0];
      expect(['/src/package.json', '/src/node_modules', '/src/dist']).toContain(src);
    }
  });

  test('runs as a non-root user (uid 1000, the image\'s node user)', () => {
    const users = ops(runtime, 'USER');
    expect(users.length).toBeGreaterThan(0);
    const last = users[users.length - 1];
    expect(last).toMatch(/^(node|1000)(:(node|1000))?$/);
    // Nothing after USER may need root.
    const after = runtime.body.slice(runtime.body.findIndex((i) => i.op === 'USER'));
    expect(after.filter((i) => i.op === 'RUN')).toEqual([]);
  });

  test('WITH_SOFTHSM=false build argument installs softhsm2 only when true', () => {
    expect(ops(runtime, 'ARG')).toContain('WITH_SOFTHSM=false');
    expect(runs(runtime)).toMatch(/if \[ "\$WITH_SOFTHSM" = "true" \]; then[^]*apt-get install[^]*softhsm2[^]*fi/);
  });

  test('entry point, default config path and ports', () => {
    expect(JSON.parse(ops(runtime, 'ENTRYPOINT')[0] ?? '')).toEqual(['node', 'dist/src/main.js']);
    expect(JSON.parse(ops(runtime, 'CMD')[0] ?? '')).toEqual(['--config', '/etc/xks-proxy/config.yaml']);
    expect(ops(runtime, 'EXPOSE').join(' ').split(/\s+/).sort()).toEqual(['8443', '9090']);
    expect(ops(runtime, 'HEALTHCHECK').join(' ')).toMatch(/\/livez/);
  });

  test('xks-proxy and xks-admin are on PATH, running what the package\'s bin names', () => {
    const pkg = readJson<PackageJson>('package.json');
    const r = runs(runtime);
    for (const [name, target] of Object.entries(pkg.bin)) {
      expect(r).toContain(`exec node /app/${target} "$@"\\n' > /usr/local/bin/${name}`);
      expect(existsSync(path.join(root, target.replace(/^dist\//, '').replace(/\.js$/, '.ts')))).toBe(true);
    }
    expect(r).toMatch(/chmod 755 \/usr\/local\/bin\/xks-proxy \/usr\/local\/bin\/xks-admin/);
  });

  test('dist/src/main.js is what `npm run build` produces', () => {
    const pkg = readJson<PackageJson>('package.json');
    const tsconfig = readJson<TsConfig>('tsconfig.json');
    expect(pkg.scripts.build).toMatch(/^tsc\b/);
    expect(tsconfig.compilerOptions).toMatchObject({ rootDir: '.', outDir: 'dist' });
    // The product only: bench/ and testbed/ build to dist-bench/ (tsconfig.bench.json), test/ runs under jest.
    expect(tsconfig.include).toEqual(['src']);
    const fromContext = ops(build, 'COPY').filter((c) => !c.startsWith('--from')).flatMap((c) => c.split(/\s+/).slice(0, -1));
    expect(fromContext.sort()).toEqual(['package-lock.json', 'package.json', 'patches', 'scripts', 'src', 'tsconfig.json']);
    expect(existsSync(path.join(root, 'src', 'main.ts'))).toBe(true);
    expect(pkg.dependencies).toHaveProperty('pkcs11js');
  });

  test('.dockerignore keeps local builds, tests and demo secrets out of the context, but not what COPY needs', () => {
    const ignored = readFileSync(path.join(root, '.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const p of ['node_modules', 'dist', 'dist-bench', '.git', 'test', 'bench', 'testbed', '.demo']) expect(ignored).toContain(p);
    const contextSources = stages
      .flatMap((s) => ops(s, 'COPY'))
      .filter((c) => !c.startsWith('--from'))
      .flatMap((c) => c.split(/\s+/).slice(0, -1));
    expect(contextSources.length).toBeGreaterThan(0);
    for (const src of contextSources) {
      expect(ignored).not.toContain(src.replace(/^\.\//, ''));
      expect(existsSync(path.join(root, src))).toBe(true);
    }
  });
});
