import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuditEvent } from '../audit/log';
import type { XksError } from '../errors';
import type { KeyStoreRuntime, RuntimeConfig } from '../config/load';
import type { AuthorizationRecord } from '../xks/authorize';
import type { OperationContext } from '../xks/operations';
import type { RequestMetadata } from '../xks/requests';
import type { SigV4Headers } from '../sigv4/verify';
import type { XksRoute } from './router';
import type { PipelineServices } from './services';

/**
 * Everything known about one XKS request, in one object: the steps of the pipeline (src/http/steps.ts)
 * fill it in order, and the response listeners (src/http/outcome.ts) read it once it has an outcome.
 * It never holds plaintext beyond the parse step (the raw body is zeroed there).
 */
export interface RequestContext extends OperationContext, AuthorizationRecord {
  readonly server: PipelineServices;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** performance.now() at arrival: the deadline and the latency metric both count from here. */
  readonly started: number;
  /** The configuration in force when the request arrived; a reload meanwhile applies to later requests. */
  readonly runtime: RuntimeConfig;
  readonly route: XksRoute;
  readonly keyStore: KeyStoreRuntime;
  /** The client sent Expect: 100-continue and waits for it before sending the body. */
  readonly expectsContinue: boolean;
  /** What the Authorization header established before the body was read; the full check reuses it. */
  sigv4: SigV4Headers | undefined;
  /** True once the whole body was read: an answer before that closes the connection. */
  bodyRead: boolean;
  /** A refusal decided before the body was read (a shed), kept for the outcome if the client leaves while the body is drained. */
  refusal: XksError | undefined;
  /** The raw body, from the read step until parse zeroes it. */
  body: Buffer | undefined;
  /** The operation's parsed request (its type is the operation's own). */
  request: unknown;
  metadata: Partial<RequestMetadata> | undefined;
  /** The validated external key id, for key operations. */
  keyId: string | undefined;
  /** Set once, when the answer is sent; what the response listeners read. */
  outcome: Outcome | undefined;
  /** The request log's and audit trail's entry, built by the first listener that needs it. */
  summary: AuditEvent | undefined;
}

/** How a request ended. */
export interface Outcome {
  /** Undefined when no answer was sent: the client left while sending its body. */
  status: number | undefined;
  /** Undefined on success (and when the client left before the body was read). */
  error: XksError | undefined;
  seconds: number;
  /** The client closed its connection: while sending the body, or before the answer reached it. */
  clientAborted: 'body' | 'answer' | undefined;
  /**
   * The answer was handed to the connection in full (its 'finish'), not cut off by a close. Undefined
   * until that is known: the audit line is written before the answer leaves, so it cannot say yet.
   */
  delivered: boolean | undefined;
  /** A failed authentication or a shed request beyond the detailed-line rate: it goes to the next summary, not to the log or audit. */
  suppressed: boolean;
}

export type FinishedContext = RequestContext & { outcome: Outcome };

export function createContext(
  server: PipelineServices,
  req: IncomingMessage,
  res: ServerResponse,
  started: number,
  runtime: RuntimeConfig,
  route: XksRoute,
  keyStore: KeyStoreRuntime,
  expectsContinue: boolean,
): RequestContext {
  // Every field present from the start keeps one object shape for all requests.
  return {
    server,
    req,
    res,
    started,
    runtime,
    route,
    keyStore,
    expectsContinue,
    sigv4: undefined,
    bodyRead: false,
    refusal: undefined,
    body: undefined,
    request: undefined,
    metadata: undefined,
    keyId: undefined,
    key: undefined,
    group: undefined,
    decision: undefined,
    deadline: undefined,
    keyVersion: undefined,
    outcome: undefined,
    summary: undefined,
  };
}
