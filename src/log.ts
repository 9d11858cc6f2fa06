import pino from 'pino';

export type Logger = pino.Logger;

/** How long a log line may sit in the buffer before it is written. */
const FLUSH_EVERY_MS = 200;

/**
 * JSON logs on stdout. Request bodies and error objects are never passed to the logger (errors are
 * logged as their message); the redact list is a second line of defence on the top-level fields where
 * a secret could land. Wildcard paths would cost ~7 us per line, as much as the crypto call itself.
 *
 * Lines are buffered (up to 4 KiB or 200 ms) rather than written one syscall each: at KMS's 1800
 * requests/s per key store a write per line costs more CPU than the request itself on small VMs.
 * pino flushes synchronously on exit; the durable per-request record is the audit log, not this.
 */
function bufferedStdout(): pino.DestinationStream {
  const stdout = pino.destination({ dest: 1, sync: false, minLength: 4096 });
  setInterval(() => stdout.flush(), FLUSH_EVERY_MS).unref();
  return stdout;
}

export function createLogger(level = process.env.XKS_LOG_LEVEL ?? 'info', destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'xks-proxy', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [...REDACTED_KEYS],
        censor: '[redacted]',
      },
    },
    destination ?? bufferedStdout(),
  );
}

/** A logger that drops everything, for tests and tools. */
export const silentLogger: Logger = pino({ level: 'silent' });

/**
 * A writer of one kind of info line, for the request log (a line per request): the same line pino writes
 * for `logger.info(fields, msg)` (level, time, the logger's bindings, the fields, msg), serialized with one
 * JSON.stringify and written to the logger's own destination. pino's serializer walks the fields one by one
 * (key lookups, escaping loops) and cost five times JSON.stringify for the request summary's 20-odd fields:
 * about 10 us a request on the 2-core VM. Only for fields that need none of pino's per-key work: no
 * serializers, and no key the redact list names (`redacted` below; test/unit/log.test.ts checks both lines
 * agree).
 */
export function infoLine(logger: Logger, msg: string): (fields: object) => void {
  const stream: unknown = Reflect.get(logger, pino.symbols.streamSym);
  const time: unknown = Reflect.get(logger, pino.symbols.timeSym);
  // Not a pino logger as this module makes them: the plain call, which is always right.
  if (!isStream(stream) || !isTimeFunction(time) || typeof Reflect.get(logger, pino.symbols.chindingsSym) !== 'string') {
    return (fields) => logger.info(fields, msg);
  }
  const end = `,"msg":${JSON.stringify(msg)}}\n`;
  const head = `{"level":${logger.levels.values.info}`;
  return (fields) => {
    if (!logger.isLevelEnabled('info')) return;
    const body = JSON.stringify(fields);
    // The bindings are read per line, as pino does: a child's, or new ones, are never missed.
    const bindings: unknown = Reflect.get(logger, pino.symbols.chindingsSym);
    stream.write(`${head}${time()}${typeof bindings === 'string' ? bindings : ''}${body.length > 2 ? `,${body.slice(1, -1)}` : ''}${end}`);
  };
}

const isStream = (v: unknown): v is pino.DestinationStream => typeof v === 'object' && v !== null && 'write' in v && typeof v.write === 'function';
const isTimeFunction = (v: unknown): v is () => string => typeof v === 'function';

/** Top-level keys the redact list covers: a line written by infoLine must never carry one. */
export const REDACTED_KEYS: readonly string[] = ['pin', 'secret', 'secretAccessKey', 'plaintext', 'authorization'];
