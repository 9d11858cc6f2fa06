/**
 * Summarises a V8 .cpuprofile (from `npm run bench -- --cpu-prof`, or node --cpu-prof): where the
 * proxy's CPU time goes, by function (self time), by source area, and the inclusive time of the
 * proxy's own functions (dist/src).
 *
 *   node dist-bench/bench/profile-summary.js FILE.cpuprofile [--top 30]
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const file = process.argv[2];
if (!file) {
  console.error('usage: profile-summary FILE.cpuprofile [--top N]');
  process.exit(2);
}
const topIdx = process.argv.indexOf('--top');
const TOP = topIdx > 0 ? Number(process.argv[topIdx + 1]) : 30;
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Self time per node from the sample stream (timeDeltas[i] is the time before sample i).
const self = new Map<number, number>();
for (let i = 0; i < profile.samples.length; i++) {
  const id = profile.samples[i] as number;
  const dt = profile.timeDeltas[i + 1] ?? 0;
  self.set(id, (self.get(id) ?? 0) + dt);
}
const total = [...self.values()].reduce((a, b) => a + b, 0);
const idleIds = new Set(profile.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
const idle = [...idleIds].reduce((a, id) => a + (self.get(id) ?? 0), 0);
const busy = total - idle;

const cwd = process.cwd();
function where(n: Node): string {
  const url = n.callFrame.url.replace(/^file:\/\//, '');
  if (!url) return '';
  return `${url.startsWith('/') ? relative(cwd, url) : url}:${n.callFrame.lineNumber + 1}`;
}
function area(n: Node): string {
  const url = n.callFrame.url;
  const fn = n.callFrame.functionName;
  if (!url) return fn.startsWith('(') ? fn : '(native/builtin)';
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  const nm = url.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
  if (nm) return `npm:${nm[1]}`;
  const src = url.match(/dist\/(src|bench)\/(.+)\.js$/);
  if (src) return `${src[1]}/${src[2]}`;
  return url;
}

const pct = (v: number): string => `${((v / busy) * 100).toFixed(1)}%`.padStart(6);
const msStr = (us: number): string => `${(us / 1000).toFixed(0)} ms`.padStart(9);

const fnSelf = new Map<string, number>();
const areaSelf = new Map<string, number>();
for (const [id, t] of self) {
  if (idleIds.has(id)) continue;
  const n = byId.get(id) as Node;
  const key = `${n.callFrame.functionName || '(anonymous)'}  ${where(n)}`;
  fnSelf.set(key, (fnSelf.get(key) ?? 0) + t);
  const a = area(n);
  areaSelf.set(a, (areaSelf.get(a) ?? 0) + t);
}

// Inclusive time of the proxy's own functions: each sample counts once per distinct function on its stack.
const inclusive = new Map<string, number>();
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i + 1] ?? 0;
  const seen = new Set<string>();
  for (let id: number | undefined = profile.samples[i]; id !== undefined; id = parent.get(id)) {
    const n = byId.get(id) as Node;
    if (!/dist\/src\//.test(n.callFrame.url)) continue;
    const key = `${n.callFrame.functionName || '(anonymous)'}  ${where(n)}`;
    if (seen.has(key)) continue;
    seen.add(key);
    inclusive.set(key, (inclusive.get(key) ?? 0) + dt);
  }
}

const sorted = (m: Map<string, number>): [string, number][] => [...m].sort((a, b) => b[1] - a[1]);
console.log(`${file}\nwall ${msStr(profile.endTime - profile.startTime)}, busy (non-idle) ${msStr(busy)}; percentages are of busy time\n`);
console.log('SELF TIME BY AREA');
for (const [k, v] of sorted(areaSelf).slice(0, 20)) console.log(`${pct(v)} ${msStr(v)}  ${k}`);
console.log(`\nSELF TIME BY FUNCTION (top ${TOP})`);
for (const [k, v] of sorted(fnSelf).slice(0, TOP)) console.log(`${pct(v)} ${msStr(v)}  ${k}`);
console.log(`\nINCLUSIVE TIME OF PROXY FUNCTIONS (dist/src, top ${TOP})`);
for (const [k, v] of sorted(inclusive).slice(0, TOP)) console.log(`${pct(v)} ${msStr(v)}  ${k}`);
