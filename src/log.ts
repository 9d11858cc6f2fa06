import pino from 'pino';

export type Logger = pino.Logger;

/**
 * JSON logs. Request bodies are never passed to the logger; the redact list is a second line of
 * defence against a secret reaching a log line through an error object.
 */
export function createLogger(level = process.env.XKS_LOG_LEVEL ?? 'info'): Logger {
  return pino({
    level,
    base: { service: 'xks-proxy', pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: ['pin', 'secret', 'secretAccessKey', 'plaintext', '*.pin', '*.secret', '*.secretAccessKey', '*.plaintext', 'req.headers.authorization'],
      censor: '[redacted]',
    },
  });
}

/** A logger that drops everything, for tests and tools. */
export const silentLogger: Logger = pino({ level: 'silent' });
