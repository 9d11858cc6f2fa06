import fc from 'fast-check';
import { findDuplicateKey, hasDuplicateKey } from '../../src/xks/duplicate-keys';

describe('findDuplicateKey', () => {
  it.each([
    ['{"a":1,"a":2}', 'a'],
    ['{"a":1,"b":{"c":1,"c":2}}', 'c'],
    ['{"requestMetadata":{"kmsRequestId":"x","kmsRequestId":"y"}}', 'kmsRequestId'],
    ['{"x":[{"k":1},{"k":2,"k":3}]}', 'k'],
    // The same key once escaped: JSON.parse sees them as one.
    ['{"a":1,"\\u0061":2}', 'a'],
    ['{"a\\"b":1,"a\\u0022b":2}', 'a"b'],
    ['{ "a" : 1 ,\n "a"\t: 2 }', 'a'],
    // The overwritten value held keys of its own: they are gone from the parse too.
    ['{"a":{"b":1,"c":2},"a":{"b":1}}', 'a'],
    ['{"a":[{"x":1}],"z":0,"a":2}', 'a'],
  ])('finds the repeated key in %s', (text, key) => {
    expect(findDuplicateKey(text)).toBe(key);
    expect(hasDuplicateKey(text, JSON.parse(text))).toBe(true);
  });

  it.each([
    '{"a":1,"b":2}',
    // Equal keys in different objects, or a key name that is also a value, are not repeats.
    '{"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]}',
    '{"a":"a","b":"a:"}',
    // Quotes, backslashes, colons and braces inside strings must not confuse the scan.
    '{"a":"x\\"}:{\\"a\\":","b":"\\\\","c":"{\\"c\\":1}","d":"\\\\\\""}',
    '{"a\\\\":1,"a":2}',
    '[{"a":1},{"a":1}]',
    '{}',
    '{"__proto__":{"a":1},"a":2}',
    '{"a":' + '['.repeat(20_000) + ']'.repeat(20_000) + '}',
  ])('finds none in %s', (text) => {
    expect(findDuplicateKey(text)).toBeUndefined();
    expect(hasDuplicateKey(text, JSON.parse(text))).toBe(false);
  });

  it('agrees with JSON.parse on any serialised value (no false alarm), and catches an injected repeat', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), fc.string(), (obj, key) => {
        const text = JSON.stringify(obj);
        expect(findDuplicateKey(text)).toBeUndefined();
        expect(hasDuplicateKey(text, JSON.parse(text))).toBe(false);
        const repeated = `{${JSON.stringify(key)}:1,${text.slice(1, -1)}${text === '{}' ? '' : ','}${JSON.stringify(key)}:2}`;
        expect(findDuplicateKey(repeated)).toBe(key);
        expect(hasDuplicateKey(repeated, JSON.parse(repeated))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('hasDuplicateKey says there is a repeat exactly when findDuplicateKey finds one, also deep inside and in overwritten values', () => {
    type Node = { obj: [string, Node][] } | { arr: Node[] } | { leaf: unknown };
    const tree = fc.letrec<{ node: Node; obj: Node }>((tie) => ({
      node: fc.oneof({ depthSize: 'small' }, fc.jsonValue({ maxDepth: 0 }).map((leaf) => ({ leaf })), tie('obj'), fc.array(tie('node'), { maxLength: 3 }).map((arr) => ({ arr }))),
      // Keys from a small set (two spellings of several among them, and names JSON.parse or Object.prototype
      // treat specially), so that repeats are common.
      obj: fc
        .array(fc.tuple(fc.constantFrom('a', 'b', '\\u0061', 'a\\"', 'a\\u0022', ' ', '', '__proto__', '__pr\\u006fto__', 'constructor', '\\/', '/', '\\ud800', '\\uD800'), tie('node')), { maxLength: 4 })
        .map((obj) => ({ obj })),
    }));
    const render = (n: Node): string =>
      'obj' in n ? `{${n.obj.map(([k, v]) => `"${k}":${render(v)}`).join(',')}}` : 'arr' in n ? `[${n.arr.map(render).join(',')}]` : JSON.stringify(n.leaf);
    let repeats = 0;
    fc.assert(
      fc.property(tree.obj, (root) => {
        const text = render(root);
        const found = findDuplicateKey(text) !== undefined;
        if (found) repeats++;
        expect(hasDuplicateKey(text, JSON.parse(text))).toBe(found);
      }),
      { numRuns: 500 },
    );
    expect(repeats).toBeGreaterThan(50);
  });

  it('hasDuplicateKey counts only the keys JSON.parse made: an enumerable property inherited from Object.prototype is no repeat', () => {
    // A prototype polluted by some dependency must not turn every body into a "duplicate" (findDuplicateKey,
    // reading the text alone, never saw it either).
    Object.defineProperty(Object.prototype, 'polluted', { value: 1, enumerable: true, configurable: true, writable: true });
    try {
      for (const text of ['{"a":1}', '{"a":{"b":[{"c":2}]}}', '{"__proto__":{"a":1},"a":2}']) {
        expect(hasDuplicateKey(text, JSON.parse(text))).toBe(false);
      }
      expect(hasDuplicateKey('{"a":1,"a":2}', JSON.parse('{"a":1,"a":2}'))).toBe(true);
    } finally {
      delete (Object.prototype as Record<string, unknown>).polluted;
    }
  });
});
