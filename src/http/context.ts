import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuditEvent } from '../audit/log';
import type { XksError } from '../errors';
import type { KeyStoreRuntime, RuntimeConfig } from '../config/load';
import type { Deadline } from '../deadline';
import { KeyRefused, type Authorization, type Grant } from '../xks/authorize';
import type { OperationRequest } from '../xks/operations';
import type { RequestMetadata } from '../xks/requests';
import type { SigV4Headers } from '../sigv4/verify';
import type { XksRoute } from './router';
import type { HandlerServices } from './services';

/**
 * The stages of one XKS request, each the value one step of the request path (src/http/steps.ts)
 * returns and the next takes, so that no step can run before what it needs exists. Every stage names
 * itself in `stage`: the response listeners (src/http/outcome.ts) read the last one a request reached.
 * Only the body-read to admitted stages hold the raw body; parse zeroes it.
 */

/** What routing established; the same for the whole request. */
export interface Routed {
  readonly stage: 'routed';
  readonly server: HandlerServices;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** The request target as sent: the path SigV4 signs. */
  readonly url: string;
  /** performance.now() at arrival: the deadline and the latency metric both count from here. */
  readonly started: number;
  /** The configuration in force when the request arrived; a reload meanwhile applies to later requests. */
  readonly runtime: RuntimeConfig;
  readonly route: XksRoute;
  readonly keyStore: KeyStoreRuntime;
  /** The client sent Expect: 100-continue and waits for it before sending the body. */
  readonly expectsContinue: boolean;
}

/** The Authorization header alone passed; the full check reuses its parse. */
export interface PreAuthenticated {
  readonly stage: 'pre-authenticated';
  readonly routed: Routed;
  readonly sigv4: SigV4Headers;
}

export interface BodyRead {
  readonly stage: 'body-read';
  readonly routed: Routed;
  readonly sigv4: SigV4Headers;
  readonly body: Buffer;
}

/** The body hash and the signature checked. */
export interface Authenticated {
  readonly stage: 'authenticated';
  readonly routed: Routed;
  readonly body: Buffer;
}

/** The key store is enabled and within its quota. */
export interface Admitted {
  readonly stage: 'admitted';
  readonly routed: Routed;
  readonly body: Buffer;
}

/** The body is the operation's valid request (its own type R); the raw body is zeroed. */
export interface Parsed<R extends OperationRequest> {
  readonly stage: 'parsed';
  readonly routed: Routed;
  readonly request: R;
}

/** Secondary authorization passed: G is what it granted (the key, for a key operation). */
export interface Authorized<R extends OperationRequest, G extends Grant> {
  readonly stage: 'authorized';
  readonly routed: Routed;
  readonly request: R;
  readonly grant: G;
}

/** Handed to the operation, under the deadline. */
export interface Executing<R extends OperationRequest, G extends Grant> {
  readonly stage: 'executing';
  readonly routed: Routed;
  readonly request: R;
  readonly grant: G;
  readonly deadline: Deadline;
  /** The key version the operation chose (see Execution in src/xks/operations.ts). */
  keyVersion: number | undefined;
}

/** Any stage: how far a request got. */
export type Stage =
  | Routed
  | PreAuthenticated
  | BodyRead
  | Authenticated
  | Admitted
  | Parsed<OperationRequest>
  | Authorized<OperationRequest, Grant>
  | Executing<OperationRequest, Grant>;

/** One request in flight: the handler records each stage as it is reached, for the outcome. */
export interface Flight {
  readonly routed: Routed;
  reached: Stage;
}

/** Whether the request's whole body was read by the stage it reached (a shed that drained it says so itself). */
export function bodyWasRead(reached: Stage): boolean {
  return reached.stage !== 'routed' && reached.stage !== 'pre-authenticated';
}

export function metadataOf(reached: Stage): RequestMetadata | undefined {
  return reached.stage === 'parsed' || reached.stage === 'authorized' || reached.stage === 'executing' ? reached.request.metadata : undefined;
}

/** What authorization found: granted, or refused after the key's policy was evaluated (then the error carries it). */
export function authorizationOf(reached: Stage, error: XksError | undefined): Authorization | undefined {
  if (reached.stage === 'authorized' || reached.stage === 'executing') return reached.grant;
  return error instanceof KeyRefused ? error.authorization : undefined;
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

/** What the response listeners read: where the request got to, and how it ended. */
export interface Finished {
  readonly routed: Routed;
  readonly reached: Stage;
  readonly outcome: Outcome;
  /** The request log's and audit trail's entry, built by the first listener that needs it. */
  summary: AuditEvent | undefined;
}
