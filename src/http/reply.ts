import type { IncomingMessage, ServerResponse } from 'node:http';
import type { XksError } from '../errors';

export type Reply = { status: number; payload: object; headers?: Record<string, string> };

export const errorReply = (e: XksError, headers?: Record<string, string>): Reply => ({ status: e.status, payload: e.toBody(), headers });

/**
 * `close` ends the connection after the answer: while draining, and whenever the request's body was
 * not read (a refusal before or while reading it), since reading it only to discard it is what a
 * hostile client wants us to do.
 */
export function sendJson(res: ServerResponse, reply: Reply, close = false): void {
  const body = JSON.stringify(reply.payload);
  // A keep-alive client could send its next request just as the socket closes, and the reset would
  // also discard this answer: "Connection: close" makes the client stop using the socket first.
  if (close) res.shouldKeepAlive = false;
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  if (reply.headers) Object.assign(headers, reply.headers);
  res.writeHead(reply.status, headers);
  // write() then end() without a chunk: the head and body leave in one write(2). end(body) corks the
  // socket and adds an empty chunk, so every answer went out through writev with two buffers.
  res.write(body);
  res.end();
}

/** Whether the request declares a body larger than `max` (refused before anything is read). */
export function declaresMoreThan(req: IncomingMessage, max: number): boolean {
  return Number(req.headers['content-length'] ?? 0) > max;
}

/** Whether a request carries a body still to be read (declared, or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return length !== undefined ? length !== '0' : req.headers['transfer-encoding'] !== undefined;
}

/** The client closed its connection before its request was read (or answered). */
export class ClientClosed extends Error {
  constructor() {
    super('client closed the connection');
  }
}

const NOTHING_KEPT = Buffer.alloc(0);

/**
 * Reads the body up to `max` bytes (the caller refuses a larger declared size first). A body that grows
 * past it resolves null at once: reading stops there and the caller answers with Connection: close.
 * A client that goes away rejects ClientClosed. With `keep` false the bytes are read and dropped (a
 * refusal that keeps the connection), and an empty buffer stands for the body.
 */
export function readBody(req: IncomingMessage, max: number, keep = true): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('close', onClose);
      req.off('error', onClose);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= max) {
        if (keep) chunks.push(chunk);
        return;
      }
      done();
      req.pause();
      chunks.length = 0;
      resolve(null);
    };
    const onEnd = (): void => {
      done();
      resolve(!keep ? NOTHING_KEPT : chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size));
    };
    // 'close' before 'end' is a client gone mid-body; 'error' (ECONNRESET "aborted") comes with it.
    const onClose = (): void => {
      done();
      reject(new ClientClosed());
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('close', onClose);
    req.on('error', onClose);
  });
}
