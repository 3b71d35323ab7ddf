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

/**
 * Where the service's log lines go: for a person at a terminal in development, the same lines made readable
 * by pino-pretty (a development dependency); everywhere else (production, pipes, files, tests, containers)
 * JSON lines, one per event, for machines to read.
 */
export async function logDestination(options: { production: boolean; terminal: boolean }): Promise<pino.DestinationStream | undefined> {
  if (options.production || !options.terminal) return undefined;
  try {
    const { default: pretty } = await import('pino-pretty');
    // Synchronous, so that the line explaining an exit is written before the process ends.
    return pretty({ colorize: true, sync: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,service' });
  } catch {
    return undefined; // Installed without development dependencies: JSON it is.
  }
}
