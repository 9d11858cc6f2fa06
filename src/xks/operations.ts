import { XksError } from '../errors';
import { effectiveStatus, KeyStoreRuntime, KeyVersion } from '../config/load';
import type { Deadline } from '../deadline';
import { isEngineError } from '../engine/errors';
import type { CryptoEngine } from '../engine/types';
import type { HealthMonitor } from '../health/monitor';
import { Authorization, authorizeKey, Grant, KeyNeed } from './authorize';
import { cdiv, decodeMetadata, encodeMetadata, hsmAad } from './ciphertext-format';
import {
  DecryptInput,
  EncryptInput,
  Json,
  Limits,
  RequestMetadata,
  parseDecryptRequest,
  parseEncryptRequest,
  parseExternalKeyId,
  parseHealthRequest,
  parseMetadataRequest,
} from './requests';

export type Operation = 'GetHealthStatus' | 'GetKeyMetadata' | 'Encrypt' | 'Decrypt';

interface ProxyIdentity {
  vendor: string;
  model: string;
  fleetSize: number;
}

export interface OperationServices {
  engine: CryptoEngine;
  /** GetHealthStatus's answer: the deep check's cached report. */
  health: Pick<HealthMonitor, 'get'>;
  identity: ProxyIdentity;
  limits: Limits;
}

/** What every operation's parsed request carries: its requestMetadata, which the log, the audit and the policy read. */
export interface OperationRequest {
  readonly metadata: RequestMetadata;
}

/** What an operation runs under, and the one field it records (never data). */
interface Execution {
  /** Handed to the engine only so that a wait for an HSM session stops when the budget is spent. */
  readonly deadline: Deadline;
  /** The key version used, for the request log and audit: set before the HSM call, so that a failed call names it too. */
  keyVersion: number | undefined;
}

/**
 * One XKS operation, generic over its parsed request R and what authorization grants it G: the request
 * path (src/http/steps.ts) parses with it, authorizes with it, then executes with it, each step handing
 * the next the typed value, and applies the deadline and converts errors itself.
 */
export interface OperationSpec<R extends OperationRequest, G extends Grant> {
  parse(body: Json, limits: Limits): R;
  /** Secondary authorization, once the body is valid; `keyId` is the path's, not yet validated. */
  authorize(request: R, keyId: string | undefined, keyStore: KeyStoreRuntime): G;
  execute(svc: OperationServices, request: R, grant: G, run: Execution): Promise<object>;
}

/** A key operation's authorization: the key id, then the key and its policy for what this request needs. */
const authorizeFor =
  <R extends OperationRequest>(need: (request: R) => KeyNeed) =>
  (request: R, keyId: string | undefined, keyStore: KeyStoreRuntime): Authorization =>
    authorizeKey(keyStore, parseExternalKeyId(keyId), request.metadata, need(request));

const b64 = (b: Buffer): string => b.toString('base64');

const getHealthStatus: OperationSpec<OperationRequest, undefined> = {
  parse: (body) => ({ metadata: parseHealthRequest(body) }),
  // Never subject to policy: KMS's health view must reflect the HSM, not a tenant's rules.
  authorize: () => undefined,
  async execute(svc) {
    const report = await svc.health.get();
    if (report.status === 'UNAVAILABLE') {
      throw report.timedOut
        ? new XksError('DependencyTimeoutException', 'the HSM health check timed out')
        : new XksError('InternalException', `the HSM is unavailable: ${report.detail ?? 'health check failed'}`);
    }
    const ekm = svc.engine.info();
    return {
      xksProxyFleetSize: svc.identity.fleetSize,
      xksProxyVendor: svc.identity.vendor,
      xksProxyModel: svc.identity.model,
      ekmVendor: ekm.vendor,
      // A fleet lists each HSM with its own state (src/engine/fleet.ts); at most 10 by configuration.
      ekmFleetDetails: report.members?.map(({ id, model, healthStatus }) => ({ id, model, healthStatus })) ?? [{ id: ekm.id, model: ekm.model, healthStatus: report.status }],
    };
  },
};

const getKeyMetadata: OperationSpec<OperationRequest, Authorization> = {
  parse: parseMetadataRequest,
  authorize: authorizeFor(() => 'exists'),
  async execute(svc, _request, { key }, run) {
    // The answer reflects the HSM, not only the config: every version's object must still be on the
    // token (a missing one is KeyNotFoundException, an unreachable HSM the engine's unavailable error).
    for (const version of key.versions.values()) {
      try {
        await svc.engine.checkKey(version.label, run.deadline);
      } catch (e) {
        if (isEngineError(e) && e.kind === 'key-not-found') {
          throw new XksError('KeyNotFoundException', `the HSM has no key material for version ${version.version} of external key ${key.id}`);
        }
        throw e;
      }
    }
    return { keySpec: 'AES_256', keyUsage: key.usageList, keyStatus: effectiveStatus(key) };
  },
};

const ENCRYPT: KeyNeed = ['ENCRYPT'];
// The integrity value is proven by decrypting the fresh ciphertext, which is a decrypt with the key.
const ENCRYPT_VERIFIED: KeyNeed = ['ENCRYPT', 'DECRYPT'];
const DECRYPT: KeyNeed = ['DECRYPT'];

const encrypt: OperationSpec<EncryptInput, Authorization> = {
  parse: parseEncryptRequest,
  authorize: authorizeFor((req) => (req.wantCdiv ? ENCRYPT_VERIFIED : ENCRYPT)),
  async execute(svc, req, { key }, run) {
    const version = key.current;
    run.keyVersion = version.version;
    const metadata = encodeMetadata(version.version);
    const aad = hsmAad(req.aad, metadata);
    try {
      const sealed = await svc.engine.encrypt(version.label, req.plaintext, aad, run.deadline);
      const response: Record<string, string> = {
        ciphertext: b64(sealed.ciphertext),
        ciphertextMetadata: b64(metadata),
        initializationVector: b64(sealed.iv),
        authenticationTag: b64(sealed.tag),
      };
      if (req.wantCdiv) {
        // Appendix C: hash what we will return first, then prove it decrypts, so a later corruption cannot hide.
        const value = cdiv({ aad: req.aad, metadata, iv: sealed.iv, ciphertext: sealed.ciphertext, tag: sealed.tag });
        await verifyRoundTrip(svc, run.deadline, version, aad, sealed, req.plaintext);
        response.ciphertextDataIntegrityValue = b64(value);
      }
      return response;
    } finally {
      req.plaintext.fill(0);
    }
  },
};

/** A tag failure on our own fresh output is the HSM's fault, not the caller's ciphertext. */
const isTagMismatch = (e: unknown): boolean => isEngineError(e) && e.kind === 'tag-mismatch';

async function verifyRoundTrip(
  svc: OperationServices,
  deadline: Deadline,
  version: KeyVersion,
  aad: Buffer,
  sealed: { iv: Buffer; ciphertext: Buffer; tag: Buffer },
  plaintext: Buffer,
): Promise<void> {
  let opened: Buffer;
  try {
    opened = await svc.engine.decrypt(version.label, sealed.iv, aad, sealed.ciphertext, sealed.tag, deadline);
  } catch (e) {
    if (isTagMismatch(e)) throw new XksError('InternalException', 'the HSM output did not decrypt during integrity verification');
    throw e;
  }
  const same = opened.equals(plaintext);
  opened.fill(0);
  if (!same) throw new XksError('InternalException', 'the HSM output did not round-trip during integrity verification');
}

const decrypt: OperationSpec<DecryptInput, Authorization> = {
  parse: parseDecryptRequest,
  authorize: authorizeFor(() => DECRYPT),
  async execute(svc, req, { key }, run) {
    let version = key.current;
    if (req.ciphertextMetadata) {
      const v = decodeMetadata(req.ciphertextMetadata);
      const found = v === undefined ? undefined : key.versions.get(v);
      if (!found) throw new XksError('InvalidCiphertextException', 'ciphertextMetadata is corrupted or names an unknown key version');
      version = found;
    }
    run.keyVersion = version.version;
    const aad = hsmAad(req.aad, req.ciphertextMetadata);
    const plaintext = await svc.engine.decrypt(version.label, req.iv, aad, req.ciphertext, req.tag, run.deadline);
    const response = { plaintext: b64(plaintext) };
    plaintext.fill(0);
    return response;
  },
};

export const OPERATIONS = {
  GetHealthStatus: getHealthStatus,
  GetKeyMetadata: getKeyMetadata,
  Encrypt: encrypt,
  Decrypt: decrypt,
} as const satisfies Record<Operation, OperationSpec<OperationRequest, Grant>>;
