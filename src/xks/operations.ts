import { XksError } from '../errors';
import { effectiveStatus, KeyRuntime, KeyStoreRuntime, KeyVersion } from '../config/load';
import { Decision, evaluate } from '../policy/evaluate';
import { EXTERNAL_KEY_ID } from '../config/schema';
import type { Deadline } from '../deadline';
import type { CryptoEngine } from '../engine/types';
import type { HealthMonitor } from '../health/monitor';
import { isEngineError } from '../engine/errors';
import { cdiv, decodeMetadata, encodeMetadata, hsmAad } from './ciphertext-format';
import { rethrowAsXks } from './engine-errors';
import {
  Limits,
  RequestMetadata,
  parseDecryptRequest,
  parseEncryptRequest,
  parseHealthRequest,
  parseMetadataRequest,
} from './requests';

export type Operation = 'GetHealthStatus' | 'GetKeyMetadata' | 'Encrypt' | 'Decrypt';

export interface ProxyIdentity {
  vendor: string;
  model: string;
  fleetSize: number;
}

export interface OperationServices {
  engine: CryptoEngine;
  health: HealthMonitor;
  identity: ProxyIdentity;
  limits: Limits;
}

/** What the request log and audit trail learn about a request as it is processed (never data). */
export interface RequestRecord {
  metadata?: Partial<RequestMetadata>;
  keyVersion?: number;
  group?: string;
  decision?: Decision;
}

export interface OperationInput {
  keyStore: KeyStoreRuntime;
  keyId: string | undefined;
  body: Record<string, unknown>;
  deadline: Deadline;
  record: RequestRecord;
}

type Handler = (svc: OperationServices, input: OperationInput) => Promise<object>;

/** Finds the key and applies its group's policy: the order is KeyNotFound, then AccessDenied. */
function authorizedKey(input: OperationInput, metadata: RequestMetadata): KeyRuntime {
  const keyId = input.keyId;
  if (keyId === undefined || !EXTERNAL_KEY_ID.test(keyId) || keyId === '.' || keyId === '..') {
    throw new XksError('ValidationException', 'externalKeyId must be 1-128 characters of A-Z a-z 0-9 . _ -');
  }
  const key = input.keyStore.keys.get(keyId);
  if (!key) throw new XksError('KeyNotFoundException', `external key ${keyId} is not found in this key store`);
  input.record.group = key.group.name;
  const decision = evaluate(key.group.rules, metadata);
  input.record.decision = decision;
  if (!decision.allowed) {
    throw new XksError('AccessDeniedException', `denied by rule "${decision.rule}" of group "${key.group.name}"`);
  }
  return key;
}

function usableKey(input: OperationInput, metadata: RequestMetadata, usage: 'ENCRYPT' | 'DECRYPT'): KeyRuntime {
  const key = authorizedKey(input, metadata);
  if (effectiveStatus(key) !== 'ENABLED') {
    const why = key.pendingDeletion ? 'is pending deletion' : key.status !== 'ENABLED' ? 'is disabled' : `is in disabled group ${key.group.name}`;
    throw new XksError('InvalidStateException', `external key ${key.id} ${why}`);
  }
  if (!key.usage.has(usage)) throw new XksError('InvalidKeyUsageException', `external key ${key.id} does not allow ${usage}`);
  return key;
}

const b64 = (b: Buffer): string => b.toString('base64');

const getHealthStatus: Handler = async (svc, input) => {
  input.record.metadata = parseHealthRequest(input.body);
  const report = await input.deadline.race(svc.health.get());
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
    ekmFleetDetails: [{ id: ekm.id, model: ekm.model, healthStatus: report.status }],
  };
};

const getKeyMetadata: Handler = async (_svc, input) => {
  const metadata = parseMetadataRequest(input.body);
  input.record.metadata = metadata;
  const key = authorizedKey(input, metadata);
  return { keySpec: 'AES_256', keyUsage: key.usageList, keyStatus: effectiveStatus(key) };
};

const encrypt: Handler = async (svc, input) => {
  const req = parseEncryptRequest(input.body, svc.limits);
  input.record.metadata = req.metadata;
  const key = usableKey(input, req.metadata, 'ENCRYPT');
  const version = key.current;
  input.record.keyVersion = version.version;
  const metadata = encodeMetadata(version.version);
  const aad = hsmAad(req.aad, metadata);
  try {
    const sealed = await input.deadline.race(svc.engine.encrypt(version.label, req.plaintext, aad, input.deadline));
    const response: Record<string, string> = {
      ciphertext: b64(sealed.ciphertext),
      ciphertextMetadata: b64(metadata),
      initializationVector: b64(sealed.iv),
      authenticationTag: b64(sealed.tag),
    };
    if (req.wantCdiv) {
      // Appendix C: hash what we will return first, then prove it decrypts, so a later corruption cannot hide.
      const value = cdiv({ aad: req.aad, metadata, iv: sealed.iv, ciphertext: sealed.ciphertext, tag: sealed.tag });
      await verifyRoundTrip(svc, input, version, aad, sealed, req.plaintext);
      response.ciphertextDataIntegrityValue = b64(value);
    }
    return response;
  } finally {
    req.plaintext.fill(0);
  }
};

async function verifyRoundTrip(
  svc: OperationServices,
  input: OperationInput,
  version: KeyVersion,
  aad: Buffer,
  sealed: { iv: Buffer; ciphertext: Buffer; tag: Buffer },
  plaintext: Buffer,
): Promise<void> {
  let opened: Buffer;
  try {
    opened = await input.deadline.race(
      svc.engine.decrypt(version.label, sealed.iv, aad, sealed.ciphertext, sealed.tag, input.deadline),
    );
  } catch (e) {
    if (isEngineError(e) && e.kind === 'tag-mismatch') {
      throw new XksError('InternalException', 'the HSM output did not decrypt during integrity verification');
    }
    throw e;
  }
  const same = opened.equals(plaintext);
  opened.fill(0);
  if (!same) throw new XksError('InternalException', 'the HSM output did not round-trip during integrity verification');
}

const decrypt: Handler = async (svc, input) => {
  const req = parseDecryptRequest(input.body, svc.limits);
  input.record.metadata = req.metadata;
  const key = usableKey(input, req.metadata, 'DECRYPT');
  let version = key.current;
  if (req.ciphertextMetadata) {
    const v = decodeMetadata(req.ciphertextMetadata);
    const found = v === undefined ? undefined : key.versions.get(v);
    if (!found) throw new XksError('InvalidCiphertextException', 'ciphertextMetadata is corrupted or names an unknown key version');
    version = found;
  }
  input.record.keyVersion = version.version;
  const aad = hsmAad(req.aad, req.ciphertextMetadata);
  const plaintext = await input.deadline.race(
    svc.engine.decrypt(version.label, req.iv, aad, req.ciphertext, req.tag, input.deadline),
  );
  const response = { plaintext: b64(plaintext) };
  plaintext.fill(0);
  return response;
};

/** Engine failures become spec errors here, in one spot, until the request pipeline does it. */
const mapped =
  (handler: Handler): Handler =>
  (svc, input) =>
    handler(svc, input).catch(rethrowAsXks);

export const OPERATIONS: Readonly<Record<Operation, Handler>> = {
  GetHealthStatus: mapped(getHealthStatus),
  GetKeyMetadata: mapped(getKeyMetadata),
  Encrypt: mapped(encrypt),
  Decrypt: mapped(decrypt),
};
