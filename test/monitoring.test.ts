/**
 * The alert rules with the real promtool (Debian's prometheus package; `bash helm/install-tools.sh`):
 * `promtool check rules`, then `promtool test rules helm/tests/xks-proxy.rules.test.yaml`, where every
 * alert has a case that fires and one that stays quiet; and every alert links its runbook section,
 * which says what the alert means, what to check first and how to fix it.
 */
import { expect } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { requireTools } from './support/tools';

const root = path.resolve(__dirname, '..');
const RULES = path.join(root, 'helm', 'xks-proxy', 'rules', 'xks-proxy.rules.yaml');
const TESTS = path.join(root, 'helm', 'tests', 'xks-proxy.rules.test.yaml');
const RUNBOOK = path.join(root, 'docs', 'runbook.md');

interface Rule {
  alert: string;
  expr: string;
  annotations: Record<string, string>;
}
const rules: Rule[] = (parse(readFileSync(RULES, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

interface PromtoolTest {
  input_series: { series: string; values: string }[];
  alert_rule_test?: { eval_time: string; alertname: string; exp_alerts?: { exp_labels: Record<string, string> }[] }[];
}
const cases: PromtoolTest[] = (parse(readFileSync(TESTS, 'utf8')) as { tests: PromtoolTest[] }).tests;

const { bins } = requireTools('monitoring.test.ts', ['promtool']);
const withPromtool = bins ? test : test.skip;

withPromtool('promtool check rules accepts the rules file', () => {
  const r = spawnSync(bins!.promtool, ['check', 'rules', RULES], { encoding: 'utf8' });
  expect({ status: r.status, out: `${r.stdout}${r.stderr}` }).toEqual({ status: 0, out: expect.stringContaining(`SUCCESS: ${rules.length} rules found`) });
});

withPromtool('promtool test rules: every case passes', () => {
  const r = spawnSync(bins!.promtool, ['test', 'rules', TESTS], { encoding: 'utf8', cwd: path.dirname(TESTS) });
  expect({ status: r.status, out: `${r.stdout}${r.stderr}` }).toEqual({ status: 0, out: expect.stringContaining('SUCCESS') });
});

/** The labels that tell one alerting thing from another in the cases. */
const IDENTITY = ['namespace', 'pod', 'key_store', 'hsm_id'];
const identity = (labels: Record<string, string>): string => IDENTITY.map((k) => labels[k] ?? '').join('/');
const seriesLabels = (series: string): Record<string, string> =>
  Object.fromEntries([...series.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1] as string, m[2] as string]));

test.each(rules.map((r) => r.alert))('%s has a promtool case where it fires and one where it stays quiet', (alert) => {
  const mine = cases.filter((c) => c.alert_rule_test?.some((t) => t.alertname === alert));
  const evals = mine.flatMap((c) => c.alert_rule_test!.filter((t) => t.alertname === alert));
  expect(evals.some((t) => (t.exp_alerts ?? []).length > 0)).toBe(true);
  // Quiet: an evaluation expecting nothing, or input series of something the alert must not name.
  const quiet = mine.some((c) => {
    const expected = new Set(c.alert_rule_test!.filter((t) => t.alertname === alert).flatMap((t) => (t.exp_alerts ?? []).map((a) => identity(a.exp_labels))));
    return expected.size === 0 || c.input_series.some((s) => !expected.has(identity(alertLabels(alert, seriesLabels(s.series)))));
  });
  expect(quiet).toBe(true);
});

/** The identity labels an alert keeps from a series (its `by (...)` clause). */
function alertLabels(alert: string, labels: Record<string, string>): Record<string, string> {
  const expr = rules.find((r) => r.alert === alert)!.expr;
  const by = [...expr.matchAll(/by \(([^)]*)\)/g)].flatMap((m) => (m[1] as string).split(',').map((s) => s.trim()));
  return Object.fromEntries(Object.entries(labels).filter(([k]) => by.includes(k)));
}

describe('runbook', () => {
  const runbook = readFileSync(RUNBOOK, 'utf8');
  const sections = new Map<string, string>();
  for (const part of runbook.split(/^## /m).slice(1)) sections.set(part.slice(0, part.indexOf('\n')).trim(), part);

  test.each(rules.map((r) => r.alert))('%s links its section of docs/runbook.md: meaning, what to check first, how to fix', (alert) => {
    const rule = rules.find((r) => r.alert === alert)!;
    // GitHub's anchor of "## XksProxyFoo" is #xksproxyfoo.
    expect(rule.annotations.runbook_url).toBe(`docs/runbook.md#${alert.toLowerCase()}`);
    const section = sections.get(alert);
    expect(section).toBeDefined();
    for (const part of ['**What it means.**', '**Check first.**', '**Fix.**']) expect(section).toContain(part);
  });

  test('the runbook has no section for an alert that does not exist', () => {
    expect([...sections.keys()].filter((s) => !rules.some((r) => r.alert === s))).toEqual([]);
  });
});
