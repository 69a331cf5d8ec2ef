import pino from 'pino';
import type { Logger, LevelWithSilent, DestinationStream } from 'pino';

export type { Logger };

/**
 * JSON logs on stdout. Credentials must never reach a log line: access logs only name fields we
 * choose, and redaction is the second line of defence should a header object slip through.
 */
export function createLogger(level: LevelWithSilent = 'info', destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { app: 'cgw' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'headers.authorization',
          'headers.cookie',
          'headers["set-cookie"]',
          'headers["x-consul-token"]',
          'headers["x-api-key"]',
          'req.headers["x-api-key"]',
          'req.headers.authorization',
          'req.headers.cookie',
          'token',
        ],
        censor: '[redacted]',
      },
    },
    destination ?? pino.destination({ sync: false }),
  );
}
