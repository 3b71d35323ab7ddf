import pino from 'pino';

export type Logger = pino.Logger;

/**
 * Structured JSON logs on stdout. Callers log ids and outcomes, never payloads or headers; the
 * redaction below is a second line of defence should a request object slip into a log call.
 */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, service: 'stripe-credits-webhook' },
      redact: {
        paths: ['req.headers.authorization', 'req.headers["stripe-signature"]', 'headers.authorization', 'headers["stripe-signature"]', 'secret', 'payload'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
