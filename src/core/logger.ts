import pino from 'pino';
import type { Logger, LevelWithSilent, DestinationStream } from 'pino';
import type { LogFormat } from './choices.ts';
import { logDestination } from './log-destination.ts';

export type { Logger };

let lastMs = -1;
let lastTime = '';

/**
 * pino's ISO timestamp, formatted at most once per millisecond: a busy proxy writes several
 * access lines per millisecond, and `toISOString` for each was a measurable share of its CPU.
 */
function isoTimeOncePerMs(): string {
  const now = Date.now();
  if (now !== lastMs) {
    lastMs = now;
    lastTime = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTime;
}

/**
 * JSON logs on stdout, or lines for people with `--log-format pretty` (a format names the
 * destination: log-destination.ts). Credentials must never reach a log line: access logs only name fields we
 * choose, and redaction is the second line of defence should a header object slip through.
 */
export function createLogger(level: LevelWithSilent = 'info', output?: DestinationStream | LogFormat): Logger {
  const destination = typeof output === 'string' ? logDestination(output) : output;
  return pino(
    {
      level,
      base: { app: 'cgw' },
      timestamp: isoTimeOncePerMs,
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
    destination ??
      // Lines are written in batches of 4 KiB, at the latest every 250 ms: one write(2) per access
      // line cost the proxy about a third of its CPU. pino flushes what is left when the process
      // exits; a crash can lose the last quarter second of lines.
      pino.destination({ sync: false, minLength: 4096, periodicFlush: 250 }),
  );
}

/**
 * Log fields serialised once, as pino writes child bindings (`,"route":"/web","service":"web"`),
 * for lines that are concatenated on the hot path (the access log).
 */
export function serializedBindings(fields: Readonly<Record<string, string | null>>): string {
  let out = '';
  for (const [key, value] of Object.entries(fields)) out += `,${JSON.stringify(key)}:${JSON.stringify(value)}`;
  return out;
}
