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
        paths: ['pin', 'secret', 'secretAccessKey', 'plaintext', 'authorization'],
        censor: '[redacted]',
      },
    },
    destination ?? bufferedStdout(),
  );
}

/** A logger that drops everything, for tests and tools. */
export const silentLogger: Logger = pino({ level: 'silent' });
