import { EngineError, EngineErrorKind } from '../engine/errors';
import { XksError, XksErrorName } from '../errors';

/** The one place where an engine failure becomes a spec error. */
const SPEC_ERROR: Readonly<Record<EngineErrorKind, XksErrorName>> = {
  'key-not-found': 'KeyNotFoundException',
  'key-unusable': 'InternalException',
  'tag-mismatch': 'InvalidCiphertextException',
  unavailable: 'InternalException',
  busy: 'ThrottlingException',
  device: 'InternalException',
};

export function fromEngineError(e: EngineError): XksError {
  return new XksError(SPEC_ERROR[e.kind], e.message);
}
