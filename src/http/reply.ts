import type { IncomingMessage, ServerResponse } from 'node:http';
import type { XksError } from '../errors';

export type Reply = { status: number; payload: object; headers?: Record<string, string> };

export const errorReply = (e: XksError, headers?: Record<string, string>): Reply => ({ status: e.status, payload: e.toBody(), headers });

export function sendJson(res: ServerResponse, reply: Reply, draining = false): void {
  const body = JSON.stringify(reply.payload);
  // A keep-alive client could send its next request just as the socket closes, and the reset would
  // also discard this answer: "Connection: close" makes the client stop using the socket first.
  if (draining) res.shouldKeepAlive = false;
  res.writeHead(reply.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    ...reply.headers,
  });
  res.end(body);
}

/** Reads the body up to `max` bytes; a larger body is refused without buffering it. */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer | null> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > max) return Promise.resolve(null);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) over = true;
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(over ? null : chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size)));
    req.on('error', reject);
  });
}
