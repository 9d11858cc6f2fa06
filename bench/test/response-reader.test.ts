import { expect } from '@jest/globals';
import { Answer, ResponseError, ResponseReader } from '../lib/response-reader';

/** The open-loop generator's HTTP/1.1 answer reader (bench/lib/response-reader.ts), fed as a socket would: in any split. */

const ok = 'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: 15\r\n\r\n{"status":"ok"}';
const shed = 'HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\ncontent-length: 54\r\n\r\n{"errorName":"ThrottlingException","errorMessage":"x"}';
const chunked = 'HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{"er\r\n1b\r\nrorName":"DependencyTimeout\r\n0\r\nx-trailer: 1\r\n\r\n';

function read(text: string, split: number[] = [], keepBody?: number): { status: number; close: boolean; body: string | null }[] {
  const r = new ResponseReader(keepBody);
  const out: Answer[] = [];
  const bytes = Buffer.from(text, 'latin1');
  let from = 0;
  for (const at of [...split, bytes.length]) {
    r.feed(bytes.subarray(from, at), (a) => out.push(a));
    from = at;
  }
  r.end((a) => out.push(a));
  return out.map((a) => ({ status: a.status, close: a.close, body: a.body && a.body.toString('latin1') }));
}

test('reads status, close and error bodies of consecutive answers, whatever the chunk boundaries', () => {
  const stream = ok + shed + chunked;
  const whole = read(stream);
  expect(whole).toEqual([
    { status: 200, close: false, body: null },
    { status: 429, close: true, body: '{"errorName":"ThrottlingException","errorMessage":"x"}' },
    { status: 503, close: false, body: '{"errorName":"DependencyTimeout' },
  ]);
  // Every single split point, then byte by byte: the same three answers.
  for (let at = 1; at < stream.length; at++) expect(read(stream, [at])).toEqual(whole);
  expect(read(stream, Array.from({ length: stream.length - 1 }, (_, i) => i + 1))).toEqual(whole);
});

test('keeps only the first bytes of an error body', () => {
  expect(read(shed, [], 14)[0]!.body).toBe('{"errorName":"');
  expect(read(chunked, [70], 6)[0]!.body).toBe('{"erro');
});

test('skips 1xx heads, reads no body for 204/304 or a zero length, and a body without length runs to the close', () => {
  expect(read('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n' + ok)).toEqual([
    { status: 204, close: false, body: null },
    { status: 200, close: false, body: null },
  ]);
  expect(read('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')).toEqual([{ status: 200, close: false, body: null }]);
  expect(read('HTTP/1.1 500 Oops\r\n\r\nsome bytes', [22])).toEqual([{ status: 500, close: true, body: 'some bytes' }]);
  // Until the close, nothing is complete.
  const r = new ResponseReader();
  const seen: Answer[] = [];
  r.feed(Buffer.from('HTTP/1.1 200 OK\r\n\r\nabc'), (a) => seen.push(a));
  expect(seen).toHaveLength(0);
});

test('HTTP/1.0 closes unless it says keep-alive; HTTP/1.1 closes when it says close among other tokens', () => {
  expect(read('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n')[0]!.close).toBe(true);
  expect(read('HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n')[0]!.close).toBe(false);
  expect(read('HTTP/1.1 200 OK\r\nConnection: upgrade, Close\r\nContent-Length: 0\r\n\r\n')[0]!.close).toBe(true);
  expect(read('HTTP/1.1 200 OK\r\nConnection: closed\r\nContent-Length: 0\r\n\r\n')[0]!.close).toBe(false);
});

test('refuses what is not an HTTP/1.x answer', () => {
  for (const bad of [
    'HTTP/2 200\r\n\r\n',
    'hello\r\n\r\n',
    'HTTP/1.1 200 OK\r\nno colon\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n',
    'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n',
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n',
  ]) {
    expect(() => read(bad)).toThrow(ResponseError);
  }
  expect(() => new ResponseReader().feed(Buffer.alloc(70 * 1024, 'a'), () => undefined)).toThrow(/no end of head/);
});
