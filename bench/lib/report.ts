/** Human tables and a small dependency-free SVG chart of a benchmark run. */
import type { HostileReport } from './hostile';
import type { RunStats } from './load';
import type { KmsCheck } from './target';
import { BAR_MULTIPLE, GOODPUT_BAR, type OverloadStep, type ProbeStats, type RssStats } from './overload';

export interface FixedPoint {
  rate: number;
  proxy: RunStats;
  baseline?: RunStats;
  /** --floor: the must-haves alone (bench/floor-server.ts). */
  floor?: RunStats;
}

export interface MaxResult {
  proxy: RunStats[];
  baseline: RunStats[];
  proxyMaxRps: number;
  proxyMaxAt: number;
  baselineMaxRps: number;
  baselineMaxAt: number;
  /** proxy max req/s / baseline max req/s */
  ratio: number | null;
}

const pad = (s: string | number, n: number): string => String(s).padStart(n);
export const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const x = (a: number, b: number): string => (b > 0 ? `x${(a / b).toFixed(a / b >= 10 ? 0 : 1)}` : '-');

const FIXED_HEAD = `${pad('rate', 6)} ${'target'.padEnd(8)} ${pad('req/s', 6)} ${pad('p50', 6)} ${pad('p90', 6)} ${pad('p99', 6)} ${pad('p99.9', 6)} ${pad('max', 6)} ${pad('non2xx', 6)} ${pad('err', 4)} ${pad('t/o', 4)} ${pad('late', 5)} ${pad('srvCPU', 6)} ${pad('us/req', 6)} ${pad('genCPU', 6)} ${pad('other', 5)} ${pad('in99', 5)} ${pad('stall', 5)} ${pad('psi', 4)}`;

function fixedRow(rate: number | string, s: RunStats): string {
  const l = s.latencyMs;
  const in99 = s.server?.p99AtMostMs != null ? `<=${s.server.p99AtMostMs}` : '';
  const stall = s.server ? ms(s.server.stallMaxMs) : '';
  const psi = s.cpu.pressurePct === null ? '' : `${Math.round(s.cpu.pressurePct)}%`;
  return `${pad(rate, 6)} ${s.label.padEnd(8)} ${pad(s.rps, 6)} ${pad(ms(l.p50), 6)} ${pad(ms(l.p90), 6)} ${pad(ms(l.p99), 6)} ${pad(ms(l.p99_9), 6)} ${pad(ms(l.max), 6)} ${pad(s.non2xx, 6)} ${pad(s.errors, 4)} ${pad(s.timeouts, 4)} ${pad(s.late, 5)} ${pad(`${s.cpu.serverPct}%`, 6)} ${pad(s.cpu.serverUsPerReq, 6)} ${pad(`${s.cpu.loadgenPct}%`, 6)} ${pad(`${s.cpu.otherPct}%`, 5)} ${pad(in99, 5)} ${pad(stall, 5)} ${pad(psi, 4)}`;
}

/** `a` over `b`, column by column: latency percentiles, server CPU share and CPU per request. */
function ratioRow(label: string, a: RunStats, b: RunStats): string {
  const [la, lb] = [a.latencyMs, b.latencyMs];
  return `${pad('', 6)} ${label.padEnd(8)} ${pad('', 6)} ${pad(x(la.p50, lb.p50), 6)} ${pad(x(la.p90, lb.p90), 6)} ${pad(x(la.p99, lb.p99), 6)} ${pad(x(la.p99_9, lb.p99_9), 6)} ${pad(x(la.max, lb.max), 6)} ${pad('', 6)} ${pad('', 4)} ${pad('', 4)} ${pad('', 5)} ${pad(x(a.cpu.serverPct, b.cpu.serverPct), 6)} ${pad(x(a.cpu.serverUsPerReq, b.cpu.serverUsPerReq), 6)}`;
}

export function fixedTable(points: FixedPoint[]): string {
  const lines = [FIXED_HEAD];
  for (const p of points) {
    lines.push(fixedRow(p.rate, p.proxy));
    if (p.baseline) {
      lines.push(fixedRow('', p.baseline));
      lines.push(ratioRow('ratio', p.proxy, p.baseline));
    }
    // The floor's own ratio to bare node:http: the least any proxy doing the must-haves could reach.
    if (p.floor) {
      lines.push(fixedRow('', p.floor));
      if (p.baseline) lines.push(ratioRow('floor/bl', p.floor, p.baseline));
      lines.push(ratioRow('px/floor', p.proxy, p.floor));
    }
    for (const s of [p.proxy, p.baseline, p.floor]) {
      if (s && Object.keys(s.errorNames).length) lines.push(`       ${s.label} non-2xx: ${JSON.stringify(s.errorNames)}  e.g. ${s.errorSamples[0] ?? ''}`);
    }
  }
  return lines.join('\n');
}

export function maxTable(m: MaxResult): string {
  const head = `${pad('conns', 5)}  ${pad('proxy req/s', 11)} ${pad('p50', 6)} ${pad('p99', 6)} ${pad('non2xx', 6)} ${pad('srvCPU', 6)} ${pad('genCPU', 6)}  | ${pad('baseline req/s', 14)} ${pad('p50', 6)} ${pad('p99', 6)} ${pad('srvCPU', 6)} ${pad('genCPU', 6)}`;
  const conns = [...new Set([...m.proxy, ...m.baseline].map((s) => s.connections))].sort((a, b) => a - b);
  const lines = [head];
  for (const c of conns) {
    const p = m.proxy.find((s) => s.connections === c);
    const b = m.baseline.find((s) => s.connections === c);
    const left = p
      ? `${pad(p.rps, 11)} ${pad(ms(p.latencyMs.p50), 6)} ${pad(ms(p.latencyMs.p99), 6)} ${pad(p.non2xx + p.errors, 6)} ${pad(`${p.cpu.serverPct}%`, 6)} ${pad(`${p.cpu.loadgenPct}%`, 6)}`
      : `${pad('-', 11)} ${pad('', 6)} ${pad('', 6)} ${pad('', 6)} ${pad('', 6)} ${pad('', 6)}`;
    const right = b
      ? `${pad(b.rps, 14)} ${pad(ms(b.latencyMs.p50), 6)} ${pad(ms(b.latencyMs.p99), 6)} ${pad(`${b.cpu.serverPct}%`, 6)} ${pad(`${b.cpu.loadgenPct}%`, 6)}`
      : pad('-', 14);
    lines.push(`${pad(c, 5)}  ${left}  | ${right}`);
  }
  lines.push(
    `max: proxy ${m.proxyMaxRps} req/s (${m.proxyMaxAt} conns)` +
      (m.baseline.length ? `, baseline ${m.baselineMaxRps} req/s (${m.baselineMaxAt} conns)` : ', no baseline') +
      (m.ratio !== null ? `; proxy/baseline = ${m.ratio.toFixed(3)}` : ''),
  );
  return lines.join('\n');
}

// ---------------------------------------------------------------- SVG

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const COLORS = { proxy: '#1f5fbf', baseline: '#888888' };

interface Series {
  name: string;
  color: string;
  dash?: string;
  points: [number, number][];
  /** Points drawn hollow: the run fell behind its schedule (saturated). */
  hollow?: boolean[];
}

interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  xTicks: number[];
  xLog2?: boolean;
  yLog?: boolean;
  /** Horizontal reference line. */
  yRef?: { value: number; label: string };
  empty?: string;
  footnote?: string;
}

function niceLinearTicks(max: number): number[] {
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw || 1));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let v = 0; v <= max * 1.0001 + step; v += step) {
    ticks.push(Math.round(v * 1e6) / 1e6);
    if (v >= max) break;
  }
  return ticks;
}

function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    for (const m of [1, 2, 5]) ticks.push(m * 10 ** e);
  }
  const lo = ticks.filter((t) => t <= min).pop() ?? min;
  const hi = ticks.find((t) => t >= max) ?? max;
  return ticks.filter((t) => t >= lo && t <= hi);
}

const fmt = (v: number): string => (v >= 1000 ? `${+(v / 1000).toFixed(1)}k` : String(+v.toPrecision(3)));

function panel(p: Panel, ox: number, oy: number, w: number, h: number): string {
  const m = { l: 58, r: 12, t: 26, b: 78 };
  const pw = w - m.l - m.r;
  const ph = h - m.t - m.b;
  const out: string[] = [`<g transform="translate(${ox},${oy})">`, `<text x="${m.l}" y="16" font-size="13" font-weight="bold">${esc(p.title)}</text>`];
  const all = p.series.flatMap((s) => s.points);
  if (all.length === 0) {
    out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#ccc"/>`);
    out.push(`<text x="${m.l + pw / 2}" y="${m.t + ph / 2}" text-anchor="middle" fill="#999" font-size="12">${esc(p.empty ?? 'not run')}</text></g>`);
    return out.join('\n');
  }
  const xs = [...p.xTicks, ...all.map((q) => q[0])];
  const ys = all.map((q) => q[1]).concat(p.yRef ? [p.yRef.value] : []);
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  const tx = p.xLog2
    ? (v: number): number => m.l + (xMax === xMin ? pw / 2 : ((Math.log2(v) - Math.log2(xMin)) / (Math.log2(xMax) - Math.log2(xMin))) * pw)
    : (v: number): number => m.l + (xMax === xMin ? pw / 2 : ((v - xMin) / (xMax - xMin)) * pw);
  let yTicks: number[];
  let ty: (v: number) => number;
  if (p.yLog) {
    yTicks = logTicks(Math.max(0.01, Math.min(...ys.filter((v) => v > 0))), Math.max(...ys));
    const lo = Math.log10(yTicks[0] as number);
    const hi = Math.log10(yTicks[yTicks.length - 1] as number);
    ty = (v) => m.t + ph - ((Math.log10(Math.max(v, 10 ** lo)) - lo) / (hi - lo || 1)) * ph;
  } else {
    yTicks = niceLinearTicks(Math.max(...ys) * 1.05);
    const hi = yTicks[yTicks.length - 1] as number;
    ty = (v) => m.t + ph - (v / (hi || 1)) * ph;
  }
  out.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="#fafafa" stroke="#bbb"/>`);
  for (const t of yTicks) {
    const y = ty(t).toFixed(1);
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke="#e4e4e4"/><text x="${m.l - 5}" y="${y}" dy="4" text-anchor="end" font-size="10">${fmt(t)}</text>`);
  }
  for (const t of [...new Set(p.xTicks)]) {
    const xx = tx(t).toFixed(1);
    out.push(`<line x1="${xx}" x2="${xx}" y1="${m.t + ph}" y2="${m.t + ph + 4}" stroke="#888"/><text x="${xx}" y="${m.t + ph + 15}" text-anchor="middle" font-size="10">${fmt(t)}</text>`);
  }
  out.push(`<text x="${m.l + pw / 2}" y="${m.t + ph + 32}" text-anchor="middle" font-size="11">${esc(p.xLabel)}</text>`);
  // Legend below the plot, so that it never covers a line: as many entries per row as fit.
  const longest = Math.max(...p.series.map((s) => s.name.length));
  const perRow = Math.max(1, Math.min(4, Math.floor(pw / (30 + longest * 6))));
  const legendAt = (i: number): [number, number] => [m.l + (i % perRow) * Math.floor(pw / perRow), m.t + ph + 52 + Math.floor(i / perRow) * 16];
  out.push(`<text transform="translate(13,${m.t + ph / 2}) rotate(-90)" text-anchor="middle" font-size="11">${esc(p.yLabel)}</text>`);
  if (p.yRef) {
    const y = ty(p.yRef.value).toFixed(1);
    out.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke="#c0392b" stroke-dasharray="2,3"/><text x="${m.l + pw - 4}" y="${y}" dy="-3" text-anchor="end" font-size="10" fill="#c0392b">${esc(p.yRef.label)}</text>`);
  }
  p.series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const pts = s.points.map(([a, b]) => `${tx(a).toFixed(1)},${ty(b).toFixed(1)}`);
    out.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    pts.forEach((q, j) => {
      const [cx, cy] = q.split(',');
      out.push(s.hollow?.[j] ? `<circle cx="${cx}" cy="${cy}" r="4" fill="#fff" stroke="#c0392b" stroke-width="1.5"/>` : `<circle cx="${cx}" cy="${cy}" r="2.5" fill="${s.color}"/>`);
    });
    const [lx, ly] = legendAt(i);
    out.push(`<line x1="${lx}" x2="${lx + 20}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/><text x="${lx + 24}" y="${ly}" font-size="10">${esc(s.name)}</text>`);
  });
  if (p.footnote) {
    const [lx, ly] = legendAt(p.series.length);
    out.push(`<circle cx="${lx + 10}" cy="${ly - 4}" r="4" fill="#fff" stroke="#c0392b" stroke-width="1.5"/><text x="${lx + 24}" y="${ly}" font-size="10">${esc(p.footnote)}</text>`);
  }
  out.push('</g>');
  return out.join('\n');
}

export function chart(title: string, fixed: FixedPoint[], max: MaxResult | undefined): string {
  const W = 920;
  const H = 400;
  const rates = fixed.map((f) => f.rate);
  const behind = (s: RunStats): boolean => s.late > s.requests * 0.001;
  const runs = (pick: (f: FixedPoint) => RunStats | undefined): RunStats[] => fixed.map(pick).filter((s): s is RunStats => s !== undefined);
  const line = (name: string, color: string, pick: (f: FixedPoint) => RunStats | undefined, q: 'p50' | 'p99', dash?: string): Series => ({
    name,
    color,
    dash,
    points: runs(pick).map((s) => [s.offeredRate ?? 0, s.latencyMs[q]]),
    hollow: runs(pick).map(behind),
  });
  const anyBehind = fixed.some((f) => behind(f.proxy) || (f.baseline !== undefined && behind(f.baseline)));
  const left = panel(
    {
      title: 'Latency vs offered rate',
      xLabel: 'offered rate (req/s)',
      yLabel: 'latency (ms, log)',
      yLog: true,
      xTicks: rates,
      series: [
        line('proxy p99', COLORS.proxy, (f) => f.proxy, 'p99', '6,3'),
        line('proxy p50', COLORS.proxy, (f) => f.proxy, 'p50'),
        line('baseline p99', COLORS.baseline, (f) => f.baseline, 'p99', '6,3'),
        line('baseline p50', COLORS.baseline, (f) => f.baseline, 'p50'),
      ],
      empty: 'fixed-rate mode not run',
      footnote: anyBehind ? 'saturated (fell behind)' : undefined,
    },
    0,
    30,
    W / 2,
    H - 30,
  );
  const steps = max ? [...new Set([...max.proxy, ...max.baseline].map((s) => s.connections))] : [];
  const right = panel(
    {
      title: 'Throughput vs connections (no rate cap)',
      xLabel: 'connections (log2)',
      yLabel: 'req/s',
      xLog2: true,
      xTicks: steps,
      yRef: { value: 1800, label: '1800 req/s target' },
      series: max
        ? [
            { name: `proxy (max ${max.proxyMaxRps})`, color: COLORS.proxy, points: max.proxy.map((s) => [s.connections, s.rps]) },
            { name: `baseline (max ${max.baselineMaxRps})`, color: COLORS.baseline, points: max.baseline.map((s) => [s.connections, s.rps]) },
          ]
        : [],
      empty: 'max-throughput mode not run',
    },
    W / 2,
    30,
    W / 2,
    H - 30,
  );
  return svg(title, W, H, [left, right]);
}

function svg(title: string, W: number, H: number, panels: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
    ...panels,
    '</svg>',
    '',
  ].join('\n');
}

/** A run at KMS's rate judged against KMS's limits. */
export function kmsCheckTable(c: KmsCheck): string {
  const s = c.run;
  const l = s.latencyMs;
  return [
    `${pad('offered', 7)} ${pad('req/s', 6)} ${pad('p50', 6)} ${pad('p99', 6)} ${pad('p99.9', 6)} ${pad('max', 6)} ${pad(`<=${c.timeoutMs}ms`, 9)} ${pad('non2xx', 6)} ${pad('err', 4)} ${pad('t/o', 4)}`,
    `${pad(c.rate, 7)} ${pad(s.rps, 6)} ${pad(ms(l.p50), 6)} ${pad(ms(l.p99), 6)} ${pad(ms(l.p99_9), 6)} ${pad(ms(l.max), 6)} ${pad(`${(s.withinKmsTimeout * 100).toFixed(2)}%`, 9)} ${pad(s.non2xx, 6)} ${pad(s.errors, 4)} ${pad(s.timeouts, 4)}`,
    c.withinLimits ? `within KMS's limits (${c.rate} req/s per key store, ${c.timeoutMs} ms per call; network time from KMS's region comes on top)` : `NOT within KMS's limits: ${c.problems.join('; ')}`,
  ].join('\n');
}

// ---------------------------------------------------------------- overload and hostile modes

const share = (v: number | undefined): string => (v === undefined ? '-' : `${Math.round(v * 100)}%`);

export function overloadTable(steps: OverloadStep[]): string {
  const head = `${'payload'.padEnd(7)} ${pad('x', 4)} ${pad('offered', 7)} ${pad('sent', 6)} ${pad('conns', 5)} ${pad('goodput', 7)} ${pad('%cap', 5)} ${pad('ok p99', 7)} ${pad('429', 7)} ${pad('429p50', 6)} ${pad('429p99', 6)} ${pad('503', 6)} ${pad('other', 5)} ${pad('noans', 5)} ${pad('late', 5)} ${pad('readyz', 6)} ${pad('opsHz', 6)} ${pad('xksHz', 6)} ${pad('health', 6)} ${pad('RSS MB', 6)} ${pad('us/429', 6)} ${pad('429cost', 7)} ${pad('genCPU', 6)}`;
  const lines = [head];
  for (const s of steps) {
    const other = Object.values(s.otherStatus).reduce((a, b) => a + b, 0);
    lines.push(
      `${s.payload.padEnd(7)} ${pad(s.multiple, 4)} ${pad(s.offeredRate, 7)} ${pad(s.sentRate, 6)} ${pad(s.connections, 5)} ${pad(s.goodput, 7)} ${pad(share(s.goodputShare), 5)} ${pad(s.ok.n ? ms(s.ok.p99) : '-', 7)} ${pad(s.shed.n, 7)} ${pad(s.shed.n ? ms(s.shed.p50) : '-', 6)} ${pad(s.shed.n ? ms(s.shed.p99) : '-', 6)} ${pad(s.unavailable.n, 6)} ${pad(other, 5)} ${pad(s.errors + s.timeouts, 5)} ${pad(s.late, 5)} ${pad(s.readyz ? share(s.readyz.okShare) : '-', 6)} ${pad(s.opsHealthz ? share(s.opsHealthz.okShare) : '-', 6)} ${pad(s.healthz ? share(s.healthz.okShare) : '-', 6)} ${pad(share(s.health.okShare), 6)} ${pad(s.rss ? s.rss.peakMB : '-', 6)} ${pad(s.refusal?.usPer429 ?? '-', 6)} ${pad(s.refusal?.cost != null ? `${Math.round(s.refusal.cost * 100)}%` : '-', 7)} ${pad(`${s.run.cpu.loadgenPct}%`, 6)}`,
    );
    if (Object.keys(s.errorNames).length) lines.push(`        non-200: ${JSON.stringify(s.errorNames)}`);
  }
  return lines.join('\n');
}

export function overloadChart(title: string, steps: OverloadStep[]): string {
  const W = 920;
  const H = 400;
  const payloads = [...new Set(steps.map((s) => s.payload))];
  const colors: Record<string, string> = { small: COLORS.proxy, large: '#d35400' };
  const of = (p: string): OverloadStep[] => steps.filter((s) => s.payload === p);
  const ticks = [...new Set(steps.map((s) => s.multiple))];
  const left = panel(
    {
      title: 'Goodput (200 within 250 ms) vs offered load',
      xLabel: 'offered load (x measured capacity)',
      yLabel: '% of capacity',
      xTicks: ticks,
      yRef: { value: GOODPUT_BAR * 100, label: `bar: ${GOODPUT_BAR * 100}% at ${BAR_MULTIPLE}x` },
      series: payloads.flatMap((p) => [
        { name: `${p} goodput`, color: colors[p] ?? '#333', points: of(p).map((s): [number, number] => [s.multiple, s.goodputShare * 100]) },
        { name: `${p} sent`, color: colors[p] ?? '#333', dash: '2,3', points: of(p).map((s): [number, number] => [s.multiple, s.capacity ? (s.sentRate / s.capacity) * 100 : 0]) },
      ]),
      empty: 'no steps',
    },
    0,
    30,
    W / 2,
    H - 30,
  );
  const right = panel(
    {
      title: 'Latency of 200s and of 429s',
      xLabel: 'offered load (x measured capacity)',
      yLabel: 'ms (log)',
      yLog: true,
      xTicks: ticks,
      yRef: { value: 250, label: 'KMS timeout 250 ms' },
      series: payloads.flatMap((p) => [
        { name: `${p} 200 p99`, color: colors[p] ?? '#333', points: of(p).filter((s) => s.ok.n).map((s): [number, number] => [s.multiple, s.ok.p99]) },
        { name: `${p} 429 p99`, color: colors[p] ?? '#333', dash: '6,3', points: of(p).filter((s) => s.shed.n).map((s): [number, number] => [s.multiple, s.shed.p99]) },
      ]),
      empty: 'no steps',
    },
    W / 2,
    30,
    W / 2,
    H - 30,
  );
  return svg(title, W, H, [left, right]);
}

export interface HostileResult {
  rate: number;
  hostileShare: number;
  /** The valid load alone, then with hostile traffic on top. */
  calm: RunStats;
  loaded: RunStats;
  /** Valid requests without an answer (socket errors, timeouts) during the hostile step: must be 0. */
  validLost: number;
  hostile: HostileReport;
  rss: RssStats | null;
  /** Growth of the proxy's log and audit files during each step (local proxy only). */
  output: { calm: Growth; loaded: Growth } | null;
  readyz: ProbeStats | null;
  health: ProbeStats;
}

export interface Growth {
  logBytes: number;
  logLines: number;
  /** Lines at level error or fatal: client behaviour should not produce any. */
  logErrorLines: number;
  auditBytes: number | null;
  auditLines: number | null;
}

export function hostileTable(h: HostileResult): string {
  const row = (name: string, s: RunStats, g?: Growth): string =>
    `${name.padEnd(8)} ${pad(s.rps, 6)} ${pad(ms(s.latencyMs.p50), 6)} ${pad(ms(s.latencyMs.p99), 6)} ${pad(ms(s.latencyMs.max), 6)} ${pad(`${(s.withinKmsTimeout * 100).toFixed(2)}%`, 8)} ${pad(s.non2xx, 6)} ${pad(s.errors + s.timeouts, 5)} ${pad(g ? (g.logBytes / 1024).toFixed(0) : '-', 7)} ${pad(g?.auditBytes != null ? (g.auditBytes / 1024).toFixed(0) : '-', 9)} ${pad(g ? g.logErrorLines : '-', 9)}`;
  const lines = [
    `${'valid'.padEnd(8)} ${pad('req/s', 6)} ${pad('p50', 6)} ${pad('p99', 6)} ${pad('max', 6)} ${pad('<=250ms', 8)} ${pad('non2xx', 6)} ${pad('lost', 5)} ${pad('log KiB', 7)} ${pad('audit KiB', 9)} ${pad('ERR lines', 9)}`,
    row('calm', h.calm, h.output?.calm),
    row('hostile', h.loaded, h.output?.loaded),
  ];
  for (const s of [h.calm, h.loaded]) if (Object.keys(s.errorNames).length) lines.push(`         ${s === h.calm ? 'calm' : 'hostile'} non-2xx: ${JSON.stringify(s.errorNames)}`);
  lines.push('', `${'hostile kind'.padEnd(15)} ${pad('sent', 6)} ${pad('answers', 24)} ${pad('ans p99', 7)} ${pad('proxy closed', 12)} ${pad('life p50', 8)} ${pad('life max', 8)} ${pad('open@end', 8)} ${pad('body KiB', 8)}`);
  for (const [kind, k] of Object.entries(h.hostile.kinds)) {
    lines.push(
      `${kind.padEnd(15)} ${pad(k.sent, 6)} ${pad(JSON.stringify(k.answered).replace(/"/g, ''), 24)} ${pad(ms(k.answerMs.p99), 7)} ${pad(k.closedByProxy, 12)} ${pad(ms(k.lifetimeMs.p50), 8)} ${pad(ms(k.lifetimeMs.max), 8)} ${pad(k.openAtEnd, 8)} ${pad((k.bodyBytesWritten / 1024).toFixed(0), 8)}`,
    );
  }
  const p99Ratio = h.calm.latencyMs.p99 > 0 ? h.loaded.latencyMs.p99 / h.calm.latencyMs.p99 : 0;
  lines.push(
    '',
    `valid p99 ${ms(h.calm.latencyMs.p99)} ms calm, ${ms(h.loaded.latencyMs.p99)} ms under hostile traffic (x${p99Ratio.toFixed(2)}); ` +
      `valid requests without an answer: ${h.validLost}${h.validLost === 0 ? ' (none lost)' : ' (LOST)'}; ` +
      `readyz ${h.readyz ? share(h.readyz.okShare) : '-'} OK, health ${share(h.health.okShare)} OK; ` +
      (h.rss ? `proxy RSS ${h.rss.startMB} -> peak ${h.rss.peakMB} MB (${h.rss.endMB} at the end); ` : '') +
      `at most ${h.hostile.maxOpen} hostile connections open at once`,
  );
  return lines.join('\n');
}

/** Per-second p99 of the valid requests, alone and with hostile traffic on top. */
export function hostileChart(title: string, h: HostileResult): string {
  const W = 920;
  const H = 400;
  const secs = [...new Set([...h.calm.timeline, ...h.loaded.timeline].map((p) => p.s))];
  const line = (name: string, color: string, s: RunStats, dash?: string): Series => ({ name, color, dash, points: s.timeline.map((p): [number, number] => [p.s, p.p99]) });
  const p = panel(
    {
      title: `Valid requests' p99 per second (${h.rate} req/s)`,
      xLabel: 'second of the step',
      yLabel: 'p99 (ms, log)',
      yLog: true,
      xTicks: secs,
      yRef: { value: 250, label: 'KMS timeout 250 ms' },
      series: [line('calm', COLORS.baseline, h.calm, '6,3'), line(`with ${Math.round(h.hostileShare * 100)}% hostile`, COLORS.proxy, h.loaded)],
    },
    0,
    30,
    W,
    H - 30,
  );
  return svg(title, W, H, [p]);
}
