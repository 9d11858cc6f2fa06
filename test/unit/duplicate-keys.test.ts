import fc from 'fast-check';
import { findDuplicateKey } from '../../src/xks/duplicate-keys';

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
  ])('finds the repeated key in %s', (text, key) => {
    JSON.parse(text);
    expect(findDuplicateKey(text)).toBe(key);
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
  ])('finds none in %s', (text) => {
    JSON.parse(text);
    expect(findDuplicateKey(text)).toBeUndefined();
  });

  it('agrees with JSON.parse on any serialised value (no false alarm), and catches an injected repeat', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), fc.string(), (obj, key) => {
        const text = JSON.stringify(obj);
        expect(findDuplicateKey(text)).toBeUndefined();
        const repeated = `{${JSON.stringify(key)}:1,${text.slice(1, -1)}${text === '{}' ? '' : ','}${JSON.stringify(key)}:2}`;
        JSON.parse(repeated);
        expect(findDuplicateKey(repeated)).toBe(key);
      }),
      { numRuns: 300 },
    );
  });
});
