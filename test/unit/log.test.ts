import pino from 'pino';
import { createLogger, infoLine, REDACTED_KEYS } from '../../src/log';
import { requestSummary } from '../../src/http/outcome';

/** A logger as the proxy makes it, writing into an array. */
function capture(level = 'info'): { lines: string[]; logger: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, logger: createLogger(level, { write: (s: string) => void lines.push(s) }) };
}

const fields = {
  keyStore: 'ks',
  operation: 'Encrypt',
  keyId: 'k-1',
  keyVersion: 3,
  group: 'g',
  decision: 'allow',
  policyRule: 'r',
  awsPrincipalArn: 'arn:aws:iam::123456789012:user/Al"ice\\é\u0001',
  awsSourceVpc: undefined,
  kmsRequestId: 'id',
  status: 200,
  outcome: 'success',
  errorMessage: undefined,
  ms: 0.41,
  delivered: true,
};

describe('infoLine', () => {
  test('writes the line pino writes for logger.info(fields, msg): same fields, order and escaping; only the time differs', () => {
    const a = capture();
    a.logger.info(fields, 'xks request');
    infoLine(a.logger, 'xks request')(fields);
    const [viaPino, fast] = a.lines;
    const strip = (l: string | undefined): string => (l ?? '').replace(/"time":"[^"]+"/, '"time":"T"');
    expect(strip(fast)).toBe(strip(viaPino));
    expect(fast).toMatch(/^\{"level":30,"time":"\d{4}-\d\d-\d\dT[^"]+Z","service":"xks-proxy","pid":\d+,"keyStore":"ks",.*,"msg":"xks request"\}\n$/);
  });

  test("follows the logger's level and a child's bindings", () => {
    const a = capture('warn');
    infoLine(a.logger, 'm')(fields);
    expect(a.lines).toEqual([]);
    const b = capture();
    const child = b.logger.child({ worker: 2 });
    child.info(fields, 'm');
    infoLine(child, 'm')(fields);
    expect(JSON.parse(b.lines[1] as string)).toEqual({ ...(JSON.parse(b.lines[0] as string) as object), time: expect.any(String) as unknown });
    expect(JSON.parse(b.lines[1] as string)).toMatchObject({ worker: 2 });
  });

  test('falls back to logger.info for a logger it cannot see into', () => {
    const seen: unknown[] = [];
    const fake = { info: (...args: unknown[]) => void seen.push(args), isLevelEnabled: () => true, levels: pino.levels } as unknown as pino.Logger;
    infoLine(fake, 'm')({ a: 1 });
    expect(seen).toEqual([[{ a: 1 }, 'm']]);
  });

  test('the request summary never carries a key the redact list names (the fast line skips redaction)', () => {
    const keys = Object.keys(
      requestSummary({
        routed: { keyStore: { name: 'ks' }, route: { kind: 'xks', pathPrefix: '', operation: 'Encrypt', keyId: 'k' } },
        reached: { stage: 'routed' },
        outcome: { status: 401, error: undefined, seconds: 0, clientAborted: undefined, delivered: undefined, suppressed: false },
        summary: undefined,
      } as never),
    );
    expect(keys.length).toBeGreaterThan(10);
    for (const k of REDACTED_KEYS) expect(keys).not.toContain(k);
  });
});
