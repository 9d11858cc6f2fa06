/**
 * The open-loop generator's HTTP/1.1 response reader (bench/lib/open-loop-worker.ts): one per connection,
 * fed the bytes as they arrive. It reads what the bench needs and skips the rest: the status, whether the
 * server will close the connection, and for an error answer the first bytes of its body (the XKS
 * errorName). Bodies are delimited by Content-Length, chunked encoding, or the end of the connection.
 * node:http's parser would do, but it costs an IncomingMessage and its events per answer, which at 20k
 * answers a second is the generator's CPU that the proxy then lacks.
 */

export interface Answer {
  status: number;
  /** The server closes the connection after this answer (Connection: close, or HTTP/1.0 without keep-alive). */
  close: boolean;
  /** The body's first `keepBody` bytes for a status >= 300; null for a 2xx/1xx answer. */
  body: Buffer | null;
}

/** A response the reader cannot parse: the connection is unusable. */
export class ResponseError extends Error {}

const CRLF = Buffer.from('\r\n');
const HEAD_END = Buffer.from('\r\n\r\n');
/** Longer status line and headers than this are not an HTTP answer the bench expects. */
const MAX_HEAD = 64 * 1024;

type State = 'head' | 'length' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailers' | 'until-close';

export class ResponseReader {
  /** Bytes of an unfinished head, chunk-size line or trailer line. */
  private pending: Buffer | null = null;
  private state: State = 'head';
  /** Body bytes still to skip (Content-Length, or the current chunk). */
  private remaining = 0;
  private status = 0;
  private close = false;
  private kept: Buffer[] | null = null;
  private keptBytes = 0;

  constructor(private readonly keepBody = 512) {}

  /** Feeds bytes; calls `onAnswer` for every answer they complete. Throws ResponseError on bytes that are not HTTP/1.x answers. */
  feed(chunk: Buffer, onAnswer: (a: Answer) => void): void {
    const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = null;
    let at = 0;
    while (at < buf.length) {
      switch (this.state) {
        case 'head': {
          const end = buf.indexOf(HEAD_END, at);
          if (end < 0) return this.hold(buf, at);
          const skipBody = this.head(buf.toString('latin1', at, end));
          at = end + 4;
          if (skipBody) this.done(onAnswer);
          break;
        }
        case 'length':
        case 'chunk-data': {
          const n = Math.min(this.remaining, buf.length - at);
          this.keep(buf, at, at + n);
          at += n;
          this.remaining -= n;
          if (this.remaining > 0) break;
          if (this.state === 'length') this.done(onAnswer);
          else this.state = 'chunk-end';
          break;
        }
        case 'chunk-size':
        case 'chunk-end':
        case 'trailers': {
          const eol = buf.indexOf(CRLF, at);
          if (eol < 0) return this.hold(buf, at);
          const line = buf.toString('latin1', at, eol);
          at = eol + 2;
          this.line(line, onAnswer);
          break;
        }
        case 'until-close':
          this.keep(buf, at, buf.length);
          at = buf.length;
          break;
      }
    }
  }

  /** The server closed the connection: completes an answer whose body ran to the close. */
  end(onAnswer: (a: Answer) => void): void {
    if (this.state === 'until-close') this.done(onAnswer);
  }

  private hold(buf: Buffer, at: number): void {
    if (buf.length - at > MAX_HEAD) throw new ResponseError(`no end of ${this.state === 'head' ? 'head' : 'line'} in ${MAX_HEAD} bytes`);
    // A copy: the chunk's memory may be a slice of a larger pooled buffer.
    this.pending = Buffer.from(buf.subarray(at));
  }

  /** Parses a head; true when the answer has no body to read. */
  private head(text: string): boolean {
    const lines = text.split('\r\n');
    const m = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(lines[0] as string);
    if (!m) throw new ResponseError(`not an HTTP/1.x status line: ${JSON.stringify((lines[0] as string).slice(0, 80))}`);
    const status = Number(m[2]);
    let length: number | undefined;
    let chunked = false;
    let connection = '';
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i] as string;
      const colon = line.indexOf(':');
      if (colon <= 0) throw new ResponseError(`malformed header line: ${JSON.stringify(line.slice(0, 80))}`);
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'content-length') {
        if (!/^\d+$/.test(value) || (length !== undefined && Number(value) !== length)) throw new ResponseError(`bad content-length: ${JSON.stringify(value)}`);
        length = Number(value);
      } else if (name === 'transfer-encoding') chunked = /(?:^|,)\s*chunked\s*$/i.test(value);
      else if (name === 'connection') connection += `,${value.toLowerCase()}`;
    }
    // 1xx (100 Continue, 103 Early Hints) come before the real answer: nothing to report.
    if (status < 200) {
      this.reset();
      return false;
    }
    this.status = status;
    this.close = m[1] === '0' ? !/(?:^|,)\s*keep-alive\s*(?:,|$)/.test(connection) : /(?:^|,)\s*close\s*(?:,|$)/.test(connection);
    this.kept = status >= 300 ? [] : null;
    this.keptBytes = 0;
    // RFC 9112 6.3: 204 and 304 have no body whatever the headers say; chunked wins over a length.
    if (status === 204 || status === 304) return true;
    if (chunked) {
      this.state = 'chunk-size';
      return false;
    }
    if (length === undefined) {
      this.state = 'until-close';
      this.close = true;
      return false;
    }
    if (length === 0) return true;
    this.state = 'length';
    this.remaining = length;
    return false;
  }

  private line(line: string, onAnswer: (a: Answer) => void): void {
    if (this.state === 'chunk-end') {
      if (line !== '') throw new ResponseError('chunk data longer than its size');
      this.state = 'chunk-size';
    } else if (this.state === 'chunk-size') {
      const m = /^([0-9a-fA-F]+)\s*(?:;.*)?$/.exec(line);
      if (!m) throw new ResponseError(`bad chunk size line: ${JSON.stringify(line.slice(0, 80))}`);
      const size = parseInt(m[1] as string, 16);
      if (size === 0) this.state = 'trailers';
      else {
        this.state = 'chunk-data';
        this.remaining = size;
      }
    } else if (line === '') this.done(onAnswer); // the empty line after the trailers
  }

  private keep(buf: Buffer, from: number, to: number): void {
    if (!this.kept || this.keptBytes >= this.keepBody) return;
    const part = buf.subarray(from, Math.min(to, from + this.keepBody - this.keptBytes));
    this.kept.push(Buffer.from(part));
    this.keptBytes += part.length;
  }

  private done(onAnswer: (a: Answer) => void): void {
    const a: Answer = { status: this.status, close: this.close, body: this.kept ? Buffer.concat(this.kept) : null };
    this.reset();
    onAnswer(a);
  }

  private reset(): void {
    this.state = 'head';
    this.remaining = 0;
    this.kept = null;
    this.keptBytes = 0;
  }
}
