import { createRequire } from 'node:module';
import type { DestinationStream } from 'pino';
import type PinoPretty from 'pino-pretty';
import type { LogFormat } from './choices.ts';

/**
 * Where log lines go for `--log-format`: undefined keeps pino's JSON destination (batched, see
 * logger.ts); pretty (or auto on a terminal) formats each line for people with pino-pretty. It is
 * used as a stream in this thread, not as a pino transport: a transport's worker thread must be
 * flushed and ended on shutdown, and the gateway exits right after its last line. pino-pretty is
 * required only here, so JSON logging never loads it. Redaction happens in pino, before either.
 */
export function logDestination(format: LogFormat, stdout: { readonly isTTY?: boolean } = process.stdout): DestinationStream | undefined {
  const terminal = stdout.isTTY === true;
  if (format === 'json' || (format === 'auto' && !terminal)) return undefined;
  const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty;
  return pretty({
    // Synchronous writes to fd 1: nothing is lost when the process exits after its last line.
    sync: true,
    destination: 1,
    colorize: terminal,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: 'pid,hostname,app',
    // One line per entry, as in the JSON form; an access line leads with what a person scans for.
    singleLine: true,
    messageFormat: '{msg}{if method} {method} {path} {status} {durationMs}ms{end}',
  });
}
