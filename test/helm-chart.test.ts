/**
 * The Helm chart in helm/xks-proxy: static checks that always run (Chart.yaml, every value documented
 * and used, every .Values reference defined), then `helm template` / `helm lint` with several value
 * sets and assertions on the rendered manifests.
 *
 * The real Helm 3.17.1 and kubectl 1.30 (`bash helm/install-tools.sh`, test/support/tools.ts). Schema
 * validation of the manifests uses the npm package kubernetes-models (a dev dependency). Outside CI,
 * render tests are skipped, saying why, only when Helm is missing.
 */
import { expect } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parser as promqlParser } from '@prometheus-io/lezer-promql';
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1/Deployment';
import { StatefulSet, type IStatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { HorizontalPodAutoscaler, type IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { CronJob, type ICronJob } from 'kubernetes-models/batch/v1/CronJob';
import { PodDisruptionBudget, type IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { ConfigMap, type IConfigMap } from 'kubernetes-models/v1/ConfigMap';
import type { IPodSpec } from 'kubernetes-models/v1/PodSpec';
import { Service, type IService } from 'kubernetes-models/v1/Service';
import type { IVolumeMount } from 'kubernetes-models/v1/VolumeMount';
import { isMap, isPair, isScalar, isSeq, parse, parseAllDocuments, parseDocument, stringify } from 'yaml';
import type { ProxyApp } from '../src/app';
import { CHART_FILES } from '../helm/chart-files';
import { configSchema, type ProxyConfigInput } from '../src/config/schema';
import { UsageRecorder } from '../src/governance/usage';
import { makePki, Pki } from './support/pki';
import { get, keyStoreWithKeys, newCredential, startProxy, testConfig } from './support/proxy';
import { requireTools } from './support/tools';

const root = path.resolve(__dirname, '..');
const chartDir = path.join(root, 'helm', 'xks-proxy');
const templatesDir = path.join(chartDir, 'templates');
const valuesText = readFileSync(path.join(chartDir, 'values.yaml'), 'utf8');
const values = parse(valuesText) as Record<string, unknown>;
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };

/** What every rendered object carries. */
type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string> } };

/** The Prometheus operator's CRDs (no kubernetes-models types): the fields these tests read. */
type AlertRule = { alert: string; expr: string; for: string; labels: Record<string, string>; annotations: Record<string, string> };
type ServiceMonitor = { spec: { selector: { matchLabels: Record<string, string> }; endpoints: object[] } };
type PrometheusRule = { spec: { groups: { rules: AlertRule[] }[] } };

/** The kinds the chart renders, each typed as the Kubernetes API defines it (kubernetes-models). */
interface Kinds {
  ConfigMap: IConfigMap;
  Service: IService;
  Deployment: IDeployment;
  StatefulSet: IStatefulSet;
  PodDisruptionBudget: IPodDisruptionBudget;
  HorizontalPodAutoscaler: IHorizontalPodAutoscaler;
  CronJob: ICronJob;
  ServiceMonitor: ServiceMonitor;
  PrometheusRule: PrometheusRule;
}
type Rendered<K extends keyof Kinds> = Kinds[K] & Manifest;

/**
 * Kubernetes OpenAPI validation (types, required fields, enums) by kubernetes-models, of every kind the
 * chart renders but the Prometheus operator's: a kind missing here fails the test that meets it.
 */
const MODELS: Record<string, new (data: Manifest) => { validate(): void }> = {
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/Deployment': Deployment,
  'apps/v1/StatefulSet': StatefulSet,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'batch/v1/CronJob': CronJob,
};

/** Throws what is wrong with a rendered object, per the Kubernetes API schema. */
function validateManifest(m: Manifest): void {
  if (m.apiVersion === 'monitoring.coreos.com/v1') return; // a CRD: its fields are checked by the tests
  const Model = MODELS[`${m.apiVersion}/${m.kind}`];
  if (!Model) throw new Error(`no kubernetes-models model for ${m.apiVersion} ${m.kind} in MODELS`);
  new Model(m).validate();
}

// ---------------------------------------------------------------- the real Helm

const { bins } = requireTools('helm-chart.test.ts', ['helm', 'kubectl']);
const renderer = bins ? { name: 'helm 3.17.1', bin: bins.helm } : undefined;

let workDir: string | undefined;
afterAll(() => {
  if (workDir) rmSync(workDir, { recursive: true, force: true });
});

function valuesFile(v: object): string {
  workDir ??= mkdtempSync(path.join(tmpdir(), 'xks-helm-'));
  const file = path.join(workDir, `values-${createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 8)}.yaml`);
  writeFileSync(file, stringify(v));
  return file;
}

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(renderer!.bin, args, { encoding: 'utf8', cwd: root });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The chart has no default PKCS#11 library (it is the operator's HSM's): the tests name one. */
const BASE = { config: { hsm: { modulePath: '/opt/vendor/lib/libpkcs11.so' } } };

function valueArgs(v?: object, sets: string[] = []): string[] {
  return ['-f', valuesFile(BASE), ...(v ? ['-f', valuesFile(v)] : []), ...sets.flatMap((s) => ['--set', s])];
}

function render(v?: object, sets: string[] = [], chart = chartDir): Manifest[] {
  const r = run(['template', 'xks', chart, '--namespace', 'kms', ...valueArgs(v, sets)]);
  if (r.status !== 0) throw new Error(`helm template failed: ${r.stderr}`);
  return manifests(r.stdout);
}

/** The objects of `helm template`'s output (empty documents dropped). */
function manifests(yaml: string): Manifest[] {
  const out: Manifest[] = [];
  for (const d of parseAllDocuments(yaml)) {
    if (d.errors.length > 0) throw new Error(`rendered YAML does not parse: ${d.errors.map((e) => e.message).join('; ')}`);
    const m = d.toJS() as Manifest | null;
    if (m) out.push(m);
  }
  return out;
}

function renderError(v?: object, sets: string[] = []): string {
  const r = run(['template', 'xks', chartDir, ...valueArgs(v, sets)]);
  expect(r.status).not.toBe(0);
  return r.stderr;
}

function all<K extends keyof Kinds>(ms: Manifest[], kind: K): Rendered<K>[] {
  return ms.filter((m): m is Rendered<K> => m.kind === kind);
}

function one<K extends keyof Kinds>(ms: Manifest[], kind: K, name?: string): Rendered<K> {
  const found = all(ms, kind).filter((m) => name === undefined || m.metadata.name === name);
  expect(found).toHaveLength(1);
  return found[0] as Rendered<K>;
}

const podTemplate = (ms: Manifest[]) => one(ms, 'Deployment').spec!.template;
const podSpec = (ms: Manifest[]) => podTemplate(ms).spec!;
const container = (ms: Manifest[]) => podSpec(ms).containers[0]!;

/** A ConfigMap key the chart must render. */
function entry(cm: Rendered<'ConfigMap'>, key: string): string {
  const text = cm.data?.[key];
  if (text === undefined) throw new Error(`ConfigMap ${cm.metadata.name} has no ${key}`);
  return text;
}

/** The proxy's config.yaml as rendered: the proxy's input, before its schema fills defaults. */
function proxyConfig(ms: Manifest[]): ProxyConfigInput {
  return parse(entry(one(ms, 'ConfigMap'), 'config.yaml')) as ProxyConfigInput;
}

const describeRender = renderer ? describe : describe.skip;

// ---------------------------------------------------------------- static checks

describe('helm chart files', () => {
  test('Chart.yaml is a v2 application chart whose appVersion is the package version', () => {
    const chart = parse(readFileSync(path.join(chartDir, 'Chart.yaml'), 'utf8')) as Record<string, unknown>;
    expect(chart).toMatchObject({ apiVersion: 'v2', name: 'xks-proxy', type: 'application', appVersion: pkg.version });
    expect(chart.version).toMatch(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
  });

  /** Paths of values.yaml's leaves (scalars, lists, empty maps), each with whether it is documented. */
  function valueLeaves(): { path: string; documented: boolean }[] {
    const out: { path: string; documented: boolean }[] = [];
    const doc = parseDocument(valuesText);
    const walk = (node: unknown, prefix: string, ancestorDoc: boolean): void => {
      if (!isMap(node)) return;
      const own = node.items.map((pair, i) => {
        if (!isPair(pair) || !isScalar(pair.key)) return false;
        const valueComment = isScalar(pair.value) || isSeq(pair.value) || isMap(pair.value) ? pair.value.comment : undefined;
        return Boolean(pair.key.commentBefore || valueComment || (i === 0 && node.commentBefore));
      });
      // In a map where some keys carry their own comment, every key must: that is a group of
      // settings. A map with no commented key is one value documented as a whole by its parent.
      const group = own.some(Boolean);
      node.items.forEach((pair, i) => {
        const key = String((pair.key as { value: unknown }).value);
        const p = prefix ? `${prefix}.${key}` : key;
        // The `config` comment does not document its children: they are the proxy's settings.
        const documented = own[i] || (!group && ancestorDoc);
        if (isMap(pair.value) && pair.value.items.length > 0) walk(pair.value, p, documented && p !== 'config');
        else out.push({ path: p, documented });
      });
    };
    walk(doc.contents, '', false);
    return out;
  }

  test('every value in values.yaml is documented by a comment', () => {
    const undocumented = valueLeaves().filter((l) => !l.documented).map((l) => l.path);
    expect(undocumented).toEqual([]);
  });

  const templateFiles = readdirSync(templatesDir).map((f) => path.join(templatesDir, f));
  const references = new Set<string>();
  for (const f of templateFiles) {
    for (const m of readFileSync(f, 'utf8').matchAll(/\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)/g)) references.add((m[1] as string).slice(1));
  }

  test('every .Values reference in the templates is defined in values.yaml', () => {
    const missing = [...references].filter((ref) => {
      let node: unknown = values;
      for (const k of ref.split('.')) {
        if (node === null || typeof node !== 'object' || !(k in node)) return true;
        node = (node as Record<string, unknown>)[k];
      }
      return false;
    });
    expect(missing).toEqual([]);
  });

  test('every value outside config is used by a template', () => {
    const refs = [...references];
    const unused = valueLeaves()
      .map((l) => l.path)
      .filter((p) => !p.startsWith('config.'))
      .filter((p) => !refs.some((r) => p === r || p.startsWith(`${r}.`) || r.startsWith(`${p}.`)));
    expect(unused).toEqual([]);
  });

  test('values.schema.json and reload-rules.json are generated from the proxy config schema, and up to date', () => {
    const stale: string[] = [];
    for (const [name, make] of Object.entries(CHART_FILES)) {
      const file = path.join(chartDir, name);
      const want = `${JSON.stringify(make(), null, 2)}\n`;
      if (process.env.XKS_WRITE_CHART_FILES === '1') writeFileSync(file, want);
      else if (readFileSync(file, 'utf8') !== want) stale.push(name);
    }
    // Rewrite them with: XKS_WRITE_CHART_FILES=1 npx jest test/helm-chart.test.ts -t 'generated from'
    expect(stale).toEqual([]);
  });
});

// ---------------------------------------------------------------- rendered manifests

const fullValues = {
  replicaCount: 3,
  autoscaling: { enabled: true, minReplicas: 2, maxReplicas: 5, targetCPUUtilizationPercentage: 70 },
  metrics: { serviceMonitor: { enabled: true, labels: { release: 'prom' } } },
  tls: { clientCa: { enabled: true, existingSecret: 'kms-client-ca', key: 'bundle.pem' } },
  config: { server: { tls: { allowedClientSubjects: ['cks.kms.us-east-1.amazonaws.com'] } } },
  extraVolumes: [{ name: 'hsm-lib', hostPath: { path: '/opt/vendor', type: 'Directory' } }],
  extraVolumeMounts: [{ name: 'hsm-lib', mountPath: '/opt/vendor', readOnly: true }],
};

describeRender(`helm chart rendered by ${renderer?.name ?? '(no renderer installed)'}`, () => {
  let defaults: Manifest[];
  let full: Manifest[];
  beforeAll(() => {
    defaults = render();
    full = render(fullValues);
  });

  test('defaults render a ConfigMap, Deployment, two Services and a PDB; no HPA or ServiceMonitor', () => {
    expect(defaults.map((m) => `${m.apiVersion} ${m.kind}`).sort()).toEqual(
      ['apps/v1 Deployment', 'policy/v1 PodDisruptionBudget', 'v1 ConfigMap', 'v1 Service', 'v1 Service'].sort(),
    );
  });

  test('pod and container run hardened: non-root 1000, read-only root, no privilege escalation, no capabilities', () => {
    const pod = podSpec(defaults);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, fsGroup: 1000, seccompProfile: { type: 'RuntimeDefault' } });
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(container(defaults).securityContext).toEqual({
      readOnlyRootFilesystem: true,
      runAsNonRoot: true,
      runAsUser: 1000,
      runAsGroup: 1000,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'RuntimeDefault' },
    });
    const tmp = pod.volumes!.find((v) => v.name === 'tmp');
    expect(tmp!.emptyDir).toBeDefined();
    expect(container(defaults).volumeMounts).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
  });

  test('probes: liveness /livez and readiness /readyz on the ops port', () => {
    const c = container(defaults);
    const opsPort = c.ports!.find((p) => p.name === 'ops');
    expect(opsPort!.containerPort).toBe(proxyConfig(defaults).ops!.port);
    expect(c.livenessProbe!.httpGet).toEqual({ path: '/livez', port: 'ops' });
    expect(c.readinessProbe!.httpGet).toEqual({ path: '/readyz', port: 'ops' });
    expect(c.startupProbe!.httpGet).toEqual({ path: '/livez', port: 'ops' });
  });

  test('resources, graceful termination, image and arguments', () => {
    const c = container(defaults);
    expect(c.resources!.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
    expect(c.resources!.limits!.memory).toBeDefined();
    expect(podSpec(defaults).terminationGracePeriodSeconds).toBe(30);
    expect(c.lifecycle!.preStop!.exec!.command).toEqual(['sleep', '5']);
    expect(c.image).toBe(`xks-proxy:${pkg.version}`);
    expect(c.args).toEqual(['--config', '/etc/xks-proxy/config/config.yaml']);
    expect(Object.keys(podTemplate(defaults).metadata!.annotations!)).toEqual(['checksum/restart-settings']);
  });

  test('the ConfigMap is mounted as a directory (not subPath) so updates reach the running pod', () => {
    const c = container(defaults);
    const mount = c.volumeMounts!.find((m) => m.name === 'config');
    expect(mount).toEqual({ name: 'config', mountPath: '/etc/xks-proxy/config', readOnly: true });
    const vol = podSpec(defaults).volumes!.find((v) => v.name === 'config');
    expect(vol!.configMap!.name).toBe(one(defaults, 'ConfigMap').metadata.name);
  });

  test('the rendered config.yaml passes the proxy\'s own config schema', () => {
    // The values examples (helm/examples/, one per vendor) are checked the same way below.
    for (const ms of [defaults, full]) {
      const r = configSchema.safeParse(proxyConfig(ms));
      expect(r.success ? 'valid' : r.error.issues).toBe('valid');
    }
  });

  test('secrets are only referenced: PIN env from a secret key, SigV4 files, TLS files', () => {
    expect(defaults.some((m) => m.kind === 'Secret')).toBe(false);
    const c = container(defaults);
    const cfg = proxyConfig(defaults);
    expect(c.env).toContainEqual({ name: 'XKS_HSM_PIN', valueFrom: { secretKeyRef: { name: 'xks-proxy-hsm-pin', key: 'pin' } } });
    expect(cfg.hsm!.pin).toEqual({ env: 'XKS_HSM_PIN' });

    const vols = podSpec(defaults).volumes!;
    expect(vols.find((v) => v.name === 'sigv4')!.secret!.secretName).toBe('xks-proxy-sigv4');
    expect(c.volumeMounts).toContainEqual({ name: 'sigv4', mountPath: '/etc/xks-proxy/secrets', readOnly: true });
    expect(cfg.keyStores[0]!.credentials[0]!.secretAccessKey).toMatchObject({ file: expect.stringMatching(/^\/etc\/xks-proxy\/secrets\//) });

    const tls = vols.find((v) => v.name === 'tls')!.projected!.sources;
    expect(tls).toEqual([{ secret: { name: 'xks-proxy-tls', items: [{ key: 'tls.crt', path: 'tls.crt' }, { key: 'tls.key', path: 'tls.key' }] } }]);
    expect(c.volumeMounts).toContainEqual({ name: 'tls', mountPath: '/etc/xks-proxy/tls', readOnly: true });
    expect(cfg.server!.tls).toMatchObject({ certFile: '/etc/xks-proxy/tls/tls.crt', keyFile: '/etc/xks-proxy/tls/tls.key' });
    expect(cfg.server!.tls!.clientCaFile).toBeUndefined();
  });

  test('Service 443 -> the XKS port; metrics on a separate ClusterIP Service -> the ops port', () => {
    const svc = one(defaults, 'Service', 'xks-xks-proxy');
    expect(svc.spec!.ports).toEqual([{ name: 'https', port: 443, targetPort: 'https', protocol: 'TCP' }]);
    expect(container(defaults).ports).toContainEqual({ name: 'https', containerPort: 8443, protocol: 'TCP' });
    const metrics = one(defaults, 'Service', 'xks-xks-proxy-metrics');
    expect(metrics.spec!.type).toBe('ClusterIP');
    expect(metrics.spec!.ports).toEqual([{ name: 'metrics', port: 9090, targetPort: 'ops', protocol: 'TCP' }]);
    const podLabels = podTemplate(defaults).metadata!.labels;
    for (const s of [svc, metrics]) expect(podLabels).toMatchObject(s.spec!.selector!);
  });

  test('proxy.fleetSize equals the replica count', () => {
    expect(one(defaults, 'Deployment').spec!.replicas).toBe(2);
    expect(proxyConfig(defaults).proxy!.fleetSize).toBe(2);
    const three = render(undefined, ['replicaCount=3']);
    expect(one(three, 'Deployment').spec!.replicas).toBe(3);
    expect(proxyConfig(three).proxy!.fleetSize).toBe(3);
  });

  test('PDB (policy/v1) selects the pods and allows one down', () => {
    const pdb = one(defaults, 'PodDisruptionBudget');
    expect(pdb.spec!.maxUnavailable).toBe(1);
    expect(podTemplate(defaults).metadata!.labels).toMatchObject(pdb.spec!.selector!.matchLabels!);
    const min = one(render(undefined, ['podDisruptionBudget.minAvailable=2']), 'PodDisruptionBudget');
    expect(min.spec).toMatchObject({ minAvailable: 2 });
    expect(min.spec!.maxUnavailable).toBeUndefined();
  });

  test('HPA (autoscaling/v2) replaces replicas, and fleetSize is its maxReplicas', () => {
    const hpa = one(full, 'HorizontalPodAutoscaler');
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec).toMatchObject({
      scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: one(full, 'Deployment').metadata.name },
      minReplicas: 2,
      maxReplicas: 5,
      metrics: [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 70 } } }],
    });
    expect(one(full, 'Deployment').spec!.replicas).toBeUndefined();
    expect(proxyConfig(full).proxy!.fleetSize).toBe(5);
  });

  test('ServiceMonitor scrapes the metrics Service only', () => {
    const sm = one(full, 'ServiceMonitor');
    expect(sm.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(sm.metadata.labels).toMatchObject({ release: 'prom' });
    expect(sm.spec.endpoints).toEqual([{ port: 'metrics', path: '/metrics', interval: '30s', scrapeTimeout: '10s' }]);
    const selected = all(full, 'Service').filter((m) => Object.entries(sm.spec.selector.matchLabels).every(([k, v]) => m.metadata.labels?.[k] === v));
    expect(selected.map((s) => s.metadata.name)).toEqual(['xks-xks-proxy-metrics']);
  });

  test('mTLS: the client CA Secret joins the TLS directory and the config names it', () => {
    const tls = podSpec(full).volumes!.find((v) => v.name === 'tls')!.projected!.sources!;
    expect(tls[1]).toEqual({ secret: { name: 'kms-client-ca', items: [{ key: 'bundle.pem', path: 'client-ca.pem' }] } });
    expect(proxyConfig(full).server!.tls).toMatchObject({
      clientCaFile: '/etc/xks-proxy/tls/client-ca.pem',
      allowedClientSubjects: ['cks.kms.us-east-1.amazonaws.com'],
    });
  });

  test('a vendor PKCS#11 library can be mounted with extraVolumes/extraVolumeMounts', () => {
    expect(podSpec(full).volumes).toContainEqual(fullValues.extraVolumes[0]);
    expect(container(full).volumeMounts).toContainEqual(fullValues.extraVolumeMounts[0]);
  });

  test('ports follow the proxy config', () => {
    const ms = render({ config: { server: { port: 9443 }, ops: { port: 9100 } } });
    expect(container(ms).ports!.map((p) => p.containerPort)).toEqual([9443, 9100]);
  });

  test('TLS upstream: tls.enabled=false drops the TLS volume and needs insecurePlainHttp', () => {
    expect(renderError(undefined, ['tls.enabled=false'])).toMatch(/insecurePlainHttp/);
    const ms = render({ tls: { enabled: false }, config: { server: { insecurePlainHttp: true } } });
    expect(proxyConfig(ms).server!.tls).toBeUndefined();
    expect(podSpec(ms).volumes!.map((v) => v.name)).not.toContain('tls');
    expect(configSchema.safeParse(proxyConfig(ms)).success).toBe(true);
  });

  test('a fleet: config.hsms replaces hsm, the Secret PIN fills members without one, and the proxy accepts it', () => {
    const member = { modulePath: '/opt/hsm/lib/libvendor.so', sessionPoolSize: 4, healthKeyLabel: 'xks-health-check' };
    const ms = render({
      config: {
        hsms: [
          { ...member, id: 'site-a', tokenLabel: 'xks-a' },
          { ...member, id: 'site-b', tokenLabel: 'xks-b', pin: { file: '/etc/xks-proxy/hsm-b/pin' } },
        ],
      },
    });
    const cfg = proxyConfig(ms);
    expect(cfg.hsm).toBeUndefined();
    expect(cfg.hsms!.map((h) => [h.id, h.pin])).toEqual([
      ['site-a', { env: 'XKS_HSM_PIN' }],
      ['site-b', { file: '/etc/xks-proxy/hsm-b/pin' }],
    ]);
    const r = configSchema.safeParse(cfg);
    expect(r.success ? r.data.hsms.map((h) => h.id) : r.error.issues).toEqual(['site-a', 'site-b']);
    // The default (no fleet) keeps the single hsm and renders no empty hsms the proxy would refuse.
    expect(Object.keys(proxyConfig(defaults))).not.toContain('hsms');
  });

  test('refuses settings the proxy would reject or that break the probes', () => {
    expect(renderError({ config: { server: { tls: { allowedClientSubjects: ['x'] } } } })).toMatch(/clientCa/);
    expect(renderError(undefined, ['config.ops.enabled=false'])).toMatch(/ops\.enabled/);
  });

  test('lint passes for the defaults and for every optional feature', () => {
    for (const args of [[], valueArgs(fullValues)]) {
      const r = run(['lint', chartDir, '--strict', ...args]);
      expect(`${r.stdout}${r.stderr}`).toMatch(/0 chart\(s\) failed/);
      expect(r.status).toBe(0);
    }
  });

  test('every manifest is valid against the Kubernetes API schema', () => {
    const errors: string[] = [];
    for (const m of [...defaults, ...full]) {
      try {
        validateManifest(m);
      } catch (e) {
        errors.push(`${m.kind}/${m.metadata.name}: ${(e as Error).message}`);
      }
    }
    expect(errors).toEqual([]);
  });
});

// ---------------------------------------------------------------- upgrades, validation, labels, examples

/** JSON with sorted keys, as Go's encoding/json writes a map (the chart's toJson). */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

const restartPaths = (JSON.parse(readFileSync(path.join(chartDir, 'reload-rules.json'), 'utf8')) as { restart: string[] }).restart;

describeRender('helm chart: upgrades roll the pods for restart-only settings and only for them', () => {
  const checksum = (ms: Manifest[]): string | undefined => podTemplate(ms).metadata!.annotations!['checksum/restart-settings'];
  let base: string | undefined;
  beforeAll(() => {
    base = checksum(render());
  });

  test('the annotation is the SHA-256 of exactly the restart-only settings of the rendered config', () => {
    for (const v of [undefined, fullValues]) {
      const ms = render(v);
      const cfg = proxyConfig(ms);
      const picked: Record<string, unknown> = {};
      for (const p of restartPaths) picked[p] = p.split('.').reduce<unknown>((o, k) => (o !== null && typeof o === 'object' ? ((o as Record<string, unknown>)[k] ?? '') : ''), cfg);
      expect(checksum(ms)).toBe(createHash('sha256').update(canonicalJson(picked)).digest('hex'));
    }
    expect(restartPaths).toEqual(expect.arrayContaining(['server.port', 'limits', 'hsm', 'hsms', 'audit']));
    expect(restartPaths).not.toContain('keyStores');
  });

  test.each([
    ['a key store and a group', { config: { groups: [{ name: 'g', policy: { rules: [] } }], keyStores: [{ name: 'ks2', pathPrefix: '/ks2', credentials: [{ accessKeyId: 'ABCDEFGHIJKLMNOPQRSTUVWXY2', secretAccessKey: { file: '/etc/xks-proxy/secrets/ks2' } }], groups: ['g'] }] } }],
    ['server.clockSkewSeconds', { config: { server: { clockSkewSeconds: 120 } } }],
    ['server.maxBodyBytes', { config: { server: { maxBodyBytes: 32768 } } }],
    ['the replica count (proxy.fleetSize)', { replicaCount: 4 }],
    ['proxy.vendor', { config: { proxy: { vendor: 'acme' } } }],
    ['governance administrators', { config: { governance: { administrators: [{ name: 'alice', role: 'administrator', publicKey: 'MCowBQYDK2VwAyEA'.padEnd(60, 'A') }] } } }],
  ])('a live setting does not roll the pods: %s', (_what, v) => {
    expect(checksum(render(v))).toBe(base);
  });

  test.each([
    ['server.port', { config: { server: { port: 9443 } } }],
    ['server.maxConnections', { config: { server: { maxConnections: 2048 } } }],
    ['limits.deadlineMs', { config: { limits: { deadlineMs: 150 } } }],
    ['hsm.sessionPoolSize', { config: { hsm: { sessionPoolSize: 16 } } }],
    ['ops.port', { config: { ops: { port: 9191 } } }],
    ['audit.destination', { audit: { destination: 'none' } }],
    ['governance.usageDir', { config: { governance: { usageDir: '/var/lib/usage' } } }],
    ['mTLS on (server.tls.clientCaFile)', { tls: { clientCa: { enabled: true } } }],
  ])('a restart-only setting rolls the pods: %s', (_what, v) => {
    expect(checksum(render(v))).not.toBe(base);
  });

  /** NOTES.txt as `helm install` prints it (install needs a cluster, so a copy of the chart renders it through tpl). */
  function notes(v?: object): string {
    const copy = mkdtempSync(path.join(tmpdir(), 'xks-chart-notes-'));
    try {
      cpSync(chartDir, copy, { recursive: true });
      cpSync(path.join(copy, 'templates', 'NOTES.txt'), path.join(copy, 'notes.txt'));
      writeFileSync(path.join(copy, 'templates', 'notes.yaml'), 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}\n');
      return entry(one(render(v, [], copy), 'ConfigMap', 'notes'), 'notes');
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  }

  test('NOTES.txt says which changes reload live and which roll the pods', () => {
    const text = notes();
    expect(text).toMatch(/reload live/);
    expect(text).toMatch(/rolls the pods/);
    expect(text).not.toMatch(/reloaded by the running pods without a restart/);
    expect(notes({ rotation: { cronJob: { enabled: true, configVolume: { emptyDir: {} } } } })).toMatch(/seeded once/);
  });
});

describeRender('helm chart: values.schema.json refuses what the proxy would refuse', () => {
  test.each([
    [['config.hsm.sessionPoolSize=0'], /config\.hsm\.sessionPoolSize: Must be greater than or equal to 1/],
    [['config.limits.deadlineMs=5'], /config\.limits\.deadlineMs: Must be greater than or equal to 10/],
    [['config.server.prot=8443'], /config\.server: Additional property prot is not allowed/],
    [['config.limits.maxPlaintextBytes=100'], /maxPlaintextBytes/],
    [['config.hsm.gcmParams=v2'], /gcmParams/],
    [['config.server.tls.minVersion=TLSv1.1'], /minVersion/],
    [['audit.destination=syslog'], /audit\.destination/],
  ])('helm template --set %s fails before any pod would crash-loop', (sets, message) => {
    const err = renderError(undefined, sets);
    expect(err).toMatch(/values don't meet the specifications of the schema/);
    expect(err).toMatch(message);
  });

  test('without a PKCS#11 library the chart says what to set (the image has none)', () => {
    const r = run(['template', 'xks', chartDir]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/config\.hsm\.modulePath is required: the path of your HSM vendor's PKCS#11 library/);
  });

  test('a fleet member without a pin needs hsmPin.existingSecret', () => {
    const member = { id: 'a', modulePath: '/opt/l.so', tokenLabel: 't' };
    expect(renderError({ config: { hsms: [member] }, hsmPin: { existingSecret: '' } })).toMatch(/config\.hsms a: give it a pin/);
  });
});

describeRender('helm chart: labels, the rotation CronJob and the values examples', () => {
  test('a chart version bump alone leaves the pod template as it was; the pods carry no chart label', () => {
    const copy = mkdtempSync(path.join(tmpdir(), 'xks-chart-bump-'));
    try {
      cpSync(chartDir, copy, { recursive: true });
      const chartFile = path.join(copy, 'Chart.yaml');
      writeFileSync(chartFile, readFileSync(chartFile, 'utf8').replace(/^version: .*$/m, 'version: 9.9.9'));
      const before = render();
      const after = render(undefined, [], copy);
      expect(one(after, 'Deployment').metadata.labels?.['helm.sh/chart']).toBe('xks-proxy-9.9.9');
      expect(podTemplate(after)).toEqual(podTemplate(before));
      expect(Object.keys(podTemplate(before).metadata!.labels!)).not.toContain('helm.sh/chart');
      // The version label is the image's: it changes only with what the pod runs.
      expect(podTemplate(render(undefined, ['image.tag=1.2.3'])).metadata!.labels!['app.kubernetes.io/version']).toBe('1.2.3');
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  test('the topology spread selects this release\'s proxy pods: the workload selector, instance included', () => {
    const d = one(render(), 'Deployment');
    const spread = d.spec!.template.spec!.topologySpreadConstraints!;
    expect(spread.map((c) => c.topologyKey)).toEqual(['kubernetes.io/hostname', 'topology.kubernetes.io/zone']);
    for (const c of spread) expect(c.labelSelector!.matchLabels).toEqual(d.spec!.selector.matchLabels);
    expect(d.spec!.selector.matchLabels).toEqual({ 'app.kubernetes.io/name': 'xks-proxy', 'app.kubernetes.io/instance': 'xks' });
  });

  const rotation = { rotation: { cronJob: { enabled: true, configVolume: { persistentVolumeClaim: { claimName: 'xks-config' } }, configFile: 'proxy.yaml' } } };

  test('with the rotation CronJob, the proxies read the config the CronJob edits, seeded once from the ConfigMap', () => {
    const ms = render(rotation);
    const c = container(ms);
    const cron = one(ms, 'CronJob').spec!.jobTemplate.spec!.template.spec!;
    const cronCommand = cron.containers[0]!.command!;
    const edited = cronCommand[cronCommand.indexOf('--config') + 1];
    expect(edited).toBe('/var/lib/xks-proxy/config/proxy.yaml');
    expect(c.args).toEqual(['--config', edited]);
    expect(c.env).toContainEqual({ name: 'XKS_CONFIG', value: edited });
    const onVolume = (spec: IPodSpec, mounts: IVolumeMount[]) =>
      spec.volumes!.find((v) => v.name === mounts.find((m) => m.mountPath === '/var/lib/xks-proxy/config')?.name);
    expect(onVolume(podSpec(ms), c.volumeMounts!)).toMatchObject({ persistentVolumeClaim: { claimName: 'xks-config' } });
    expect(onVolume(cron, cron.containers[0]!.volumeMounts!)).toMatchObject({ persistentVolumeClaim: { claimName: 'xks-config' } });
    const seed = podSpec(ms).initContainers!.find((i) => i.name === 'seed-config')!;
    expect(seed.command!.slice(-2)).toEqual(['/etc/xks-proxy/config/config.yaml', edited]);
    expect(seed.command![2]).toMatch(/\[ -e "\$2" \] \|\| cp/); // never overwrites the edited file
    expect(cronCommand[0]).toBe('xks-admin');
    // The Deployment differs from the default one (it did not before).
    expect(podTemplate(ms)).not.toEqual(podTemplate(render()));
  });

  test('the CronJob\'s pods match no proxy selector: Services, PDB, topology spread, `kubectl logs -l`', () => {
    const ms = render({ ...rotation, ...fullValues });
    const cronPod = one(ms, 'CronJob').spec!.jobTemplate.spec!.template.metadata!.labels!;
    const selects = (sel: Record<string, string>) => Object.entries(sel).every(([k, v]) => cronPod[k] === v);
    const selectors = [
      ...all(ms, 'Service').map((m) => m.spec!.selector!),
      one(ms, 'PodDisruptionBudget').spec!.selector!.matchLabels!,
      one(ms, 'Deployment').spec!.selector.matchLabels!,
      ...podSpec(ms).topologySpreadConstraints!.map((c) => c.labelSelector!.matchLabels!),
      { 'app.kubernetes.io/name': 'xks-proxy' }, // README's kubectl logs -l
    ];
    expect(selectors.filter(selects)).toEqual([]);
  });

  const examples = readdirSync(path.join(root, 'helm', 'examples')).filter((f) => f.endsWith('.yaml'));
  test.each(examples)('example helm/examples/%s lints (--strict), renders, and its config passes the proxy schema', (file) => {
    const args = ['-f', path.join(root, 'helm', 'examples', file)];
    const lint = run(['lint', chartDir, '--strict', ...args]);
    expect(`${lint.stdout}${lint.stderr}`).toMatch(/0 chart\(s\) failed/);
    const r = run(['template', 'xks', chartDir, ...args]);
    expect(r.stderr).toBe('');
    const cm = all(manifests(r.stdout), 'ConfigMap').find((m) => m.data?.['config.yaml']);
    const parsed = configSchema.safeParse(parse(entry(cm!, 'config.yaml')));
    expect(parsed.success ? 'valid' : parsed.error.issues).toBe('valid');
  });

  test('every object of every example is valid against the Kubernetes API schema (kubernetes-models)', () => {
    const errors: string[] = [];
    for (const file of examples) {
      const r = run(['template', 'xks', chartDir, '-f', path.join(root, 'helm', 'examples', file)]);
      for (const m of manifests(r.stdout)) {
        try {
          validateManifest(m);
        } catch (e) {
          errors.push(`${file}: ${m.kind}/${m.metadata.name}: ${(e as Error).message}`);
        }
      }
    }
    expect(errors).toEqual([]);
  });

  test('README\'s `kubectl logs -l` commands read every line, not the 10 kubectl keeps with a selector', () => {
    // kubectl's own help says it: --tail defaults to 10 when a selector is given.
    const help = spawnSync(bins!.kubectl, ['logs', '--help'], { encoding: 'utf8' }).stdout;
    expect(help).toMatch(/otherwise 10, if a selector is provided/);
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
    const commands = [...readme.matchAll(/kubectl logs[^\n`]*/g)].map((m) => m[0]);
    const withSelector = commands.filter((c) => / -l |--selector/.test(c));
    expect(withSelector.length).toBeGreaterThan(0);
    expect(withSelector.filter((c) => !/--tail=-1/.test(c))).toEqual([]);
  });
});

// ---------------------------------------------------------------- audit, dashboard, alert rules

describeRender('helm chart: audit destination', () => {
  test('default: audit lines on stdout, each pod names its chain (POD_NAME from the downward API)', () => {
    const ms = render();
    expect(proxyConfig(ms).audit).toEqual({ stdout: true });
    expect(container(ms).env).toContainEqual({ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
  });

  test('destination file: a StatefulSet with one audit volume per pod, and the HPA follows it', () => {
    const ms = render({ audit: { destination: 'file', persistence: { size: '5Gi', storageClassName: 'gp3' } }, autoscaling: { enabled: true } });
    expect(ms.some((m) => m.kind === 'Deployment')).toBe(false);
    const sts = one(ms, 'StatefulSet');
    expect(sts.spec!.serviceName).toBe('xks-xks-proxy');
    expect(sts.spec).not.toHaveProperty('strategy'); // the Deployment's, which a StatefulSet does not have
    expect(sts.spec!.volumeClaimTemplates).toEqual([
      { metadata: { name: 'audit' }, spec: { accessModes: ['ReadWriteOnce'], storageClassName: 'gp3', resources: { requests: { storage: '5Gi' } } } },
    ]);
    const c = sts.spec!.template.spec!.containers[0]!;
    expect(c.volumeMounts).toContainEqual({ name: 'audit', mountPath: '/var/lib/xks-proxy/audit' });
    const cfg = proxyConfig(ms);
    expect(cfg.audit).toEqual({ file: '/var/lib/xks-proxy/audit/audit.log' });
    expect(configSchema.safeParse(cfg).success).toBe(true);
    expect(one(ms, 'HorizontalPodAutoscaler').spec!.scaleTargetRef).toMatchObject({ kind: 'StatefulSet', name: sts.metadata.name });
  });

  test('lint passes and the StatefulSet is a valid Kubernetes object', () => {
    const v = { audit: { destination: 'file' }, metrics: { dashboard: { enabled: true }, prometheusRule: { enabled: true } } };
    const r = run(['lint', chartDir, '--strict', ...valueArgs(v)]);
    expect(`${r.stdout}${r.stderr}`).toMatch(/0 chart\(s\) failed/);
    expect(() => validateManifest(one(render(v), 'StatefulSet'))).not.toThrow();
  });

  test('destination none keeps config.audit as given; anything else is refused', () => {
    expect(proxyConfig(render({ audit: { destination: 'none' } })).audit).toEqual({});
    expect(renderError(undefined, ['audit.destination=syslog'])).toMatch(/audit\.destination/);
  });
});

/** PromQL of a Grafana target with its template variables replaced by something PromQL accepts. */
const promql = (expr: string): string => expr.replace(/\$__rate_interval/g, '5m').replace(/\$[A-Za-z_]\w*/g, 'x');

/** Names that look like metrics: every metric the proxy exports carries one of these prefixes. */
const metricNames = (expr: string): string[] => [...expr.matchAll(/\b(?:xks|nodejs|process)_[a-z0-9_]+\b/g)].map((m) => m[0]);

/** Brackets and quotes pair up (a cheap syntax check that holds even without a PromQL parser). */
function balanced(expr: string): boolean {
  const stack: string[] = [];
  const pairs: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
  let quote: string | undefined;
  for (let i = 0; i < expr.length; i++) {
    const ch = expr[i] as string;
    if (quote) {
      if (ch === '\\') i++;
      else if (ch === quote) quote = undefined;
    } else if (ch === '"' || ch === "'") quote = ch;
    else if ('([{'.includes(ch)) stack.push(ch);
    else if (ch in pairs && stack.pop() !== pairs[ch]) return false;
  }
  return stack.length === 0 && quote === undefined;
}

/** Syntax errors and the metric names of vector selectors, per the Prometheus project's own PromQL grammar. */
function parsePromql(expr: string): { errors: number; selectors: string[] } {
  const tree = promqlParser.parse(expr);
  let errors = 0;
  const selectors: string[] = [];
  tree.iterate({
    enter: (n) => {
      if (n.type.isError) errors++;
      if (n.name === 'Identifier' && n.node.parent?.name === 'VectorSelector') selectors.push(expr.slice(n.from, n.to));
    },
  });
  return { errors, selectors };
}

describeRender('helm chart: Grafana dashboard and PrometheusRule', () => {
  let ms: Manifest[];
  type Dashboard = { panels: { title: string; type: string; targets: { expr: string }[] }[] };
  let dashboard: Dashboard;
  let rules: AlertRule[];
  let pki: Pki;
  let app: ProxyApp;
  let usage: UsageRecorder | undefined;
  let usageDir: string | undefined;
  /** Metric names the running proxy exposes (histograms expanded to _bucket, _sum, _count). */
  const exported = new Set<string>();

  beforeAll(async () => {
    ms = render({ metrics: { dashboard: { enabled: true }, prometheusRule: { enabled: true, labels: { release: 'prom' } } } });
    dashboard = JSON.parse(entry(one(ms, 'ConfigMap', 'xks-xks-proxy-dashboard'), 'xks-proxy.json')) as Dashboard;
    rules = one(ms, 'PrometheusRule').spec.groups.flatMap((g) => g.rules);

    // xks_tls_certificate_expiry_days has a value only when the proxy serves TLS.
    pki = makePki();
    const cred = newCredential();
    app = await startProxy(
      testConfig([keyStoreWithKeys('dash', '/dash', [cred], [{ id: 'k', label: 'test-key-1' }])], {
        server: { insecurePlainHttp: false, tls: { certFile: pki.serverCert, keyFile: pki.serverKey } },
      }),
    );
    // xks_key_version_usage_ratio_max exists where governance.usageDir is set (README "Rotation policies").
    usageDir = mkdtempSync(path.join(tmpdir(), 'xks-usage-'));
    usage = new UsageRecorder(app.events, () => app.runtime, { dir: usageDir, registry: app.metrics.registry, flushMs: 60_000 });
    usage.flush();
    const text = (await get(app.opsPort as number, '/metrics')).text;
    for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      const [, name, type] = m as unknown as [string, string, string];
      exported.add(name);
      if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(name + s);
      if (type === 'summary') for (const s of ['_sum', '_count']) exported.add(name + s);
    }
    expect(text).toMatch(/^xks_tls_certificate_expiry_days \d/m);
  });
  afterAll(async () => {
    usage?.dispose();
    await app?.stop(1000);
    if (pki) rmSync(pki.dir, { recursive: true, force: true });
    if (usageDir) rmSync(usageDir, { recursive: true, force: true });
  });

  test('both are off by default', () => {
    const kinds = render().map((m) => `${m.kind}/${m.metadata.name}`);
    expect(kinds).not.toContain('ConfigMap/xks-xks-proxy-dashboard');
    expect(kinds.some((k) => k.startsWith('PrometheusRule/'))).toBe(false);
  });

  test('the dashboard ConfigMap carries the sidecar label and the panels operators need', () => {
    const cm = one(ms, 'ConfigMap', 'xks-xks-proxy-dashboard');
    expect(cm.metadata.labels).toMatchObject({ grafana_dashboard: '1' });
    const titles = dashboard.panels.map((p) => p.title).join('\n');
    for (const want of [/Requests per second by operation/, /Latency p99 by operation.*250 ms/, /^Retryable errors/m, /^Non-retryable errors/m, /EKM health/, /HSM sessions and waiting queue/, /credential age/i, /certificate days to expiry/i, /Config reloads/, /^Shed requests/m, /^Authentication failures/m, /^HSM connection state/m, /circuit breaker open/, /^Client aborts/m, /restart pending/, /Key version usage/, /^Governance refusals/m]) {
      expect(titles).toMatch(want);
    }
    const latency = dashboard.panels.find((p) => /Latency p99/.test(p.title)) as unknown as { fieldConfig: { defaults: { thresholds: { steps: { value: number | null }[] } } } };
    expect(latency.fieldConfig.defaults.thresholds.steps.map((s) => s.value)).toContain(0.25);
  });

  test('every alert of README "Monitoring" is a rule with expr, for, severity, summary and description', () => {
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('**Monitoring**'), readme.indexOf('Labels are bounded'));
    const tableMetrics = new Set([...table.matchAll(/`((?:xks|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1] as string));
    expect(tableMetrics.size).toBeGreaterThanOrEqual(8);
    // A histogram is alerted on through its buckets.
    const base = (n: string): string => n.replace(/_bucket$/, '');
    const ruleMetrics = new Set(rules.flatMap((r) => metricNames(r.expr)).map(base));
    // xks_hsm_operation_duration_seconds shares its row with the queue; the queue is the alert.
    expect([...tableMetrics].filter((t) => !ruleMetrics.has(t) && t !== 'xks_hsm_operation_duration_seconds')).toEqual([]);
    for (const r of rules) {
      expect(r.alert).toMatch(/^XksProxy[A-Za-z]+$/);
      expect(r.expr.trim()).not.toBe('');
      expect(r.for).toMatch(/^\d+[smh]$/);
      expect(r.labels.severity).toMatch(/^(critical|warning|info)$/);
      expect(r.annotations.summary).toBeTruthy();
      expect(r.annotations.description).toBeTruthy();
    }
    expect(new Set(rules.map((r) => r.alert)).size).toBe(rules.length);
    expect(one(ms, 'PrometheusRule').metadata.labels).toMatchObject({ release: 'prom' });
  });

  test('every query parses and names only metrics a running proxy exports', () => {
    const queries = [
      ...dashboard.panels.flatMap((p) => p.targets.map((t) => ({ where: `panel "${p.title}"`, expr: promql(t.expr) }))),
      ...rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })),
    ];
    expect(queries.length).toBeGreaterThanOrEqual(20);
    const problems: string[] = [];
    for (const q of queries) {
      if (!balanced(q.expr)) problems.push(`${q.where}: unbalanced brackets or quotes`);
      const names = metricNames(q.expr);
      if (names.length === 0) problems.push(`${q.where}: names no metric`);
      for (const n of names) if (!exported.has(n)) problems.push(`${q.where}: ${n} is not exported`);
      const parsed = parsePromql(q.expr);
      if (parsed.errors > 0) problems.push(`${q.where}: PromQL syntax error`);
      for (const n of parsed.selectors) if (!exported.has(n)) problems.push(`${q.where}: selector ${n} is not exported`);
    }
    expect(problems).toEqual([]);
  });

  test('the checks can fail: a misspelt metric and a broken expression are caught', () => {
    expect(exported.has('xks_request_duration_second_bucket')).toBe(false);
    expect(balanced('sum(rate(xks_requests_total[5m])')).toBe(false);
    expect(parsePromql('sum by (le (rate(xks_requests_total[5m]))').errors).toBeGreaterThan(0);
  });
});
