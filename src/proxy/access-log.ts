import pino from 'pino';
import type { Logger } from '../core/logger.ts';

/**
 * The access log, written as pino writes it (one JSON line, same fields and order as
 * `logger.info({...}, 'access')` with the route's child bindings) but formatted here: the
 * constant parts (level, the logger's and the route's bindings) are strings made once, and a
 * request concatenates only its own fields. Through pino, serialising each line object cost more
 * CPU than the rest of the request path after the proxying itself. Only fields named here are
 * written: headers, and so credentials, never are.
 */
export interface AccessFields {
  readonly method: string | undefined;
  readonly path: string;
  readonly endpoint: string | null;
  readonly status: number;
  readonly durationMs: number;
  readonly requestId: string;
  /** W3C trace id (32 hex), the client's or a new trace's. */
  readonly traceId?: string;
  readonly client: string;
  readonly retries: number;
  readonly subject: string | null;
  readonly consumer: string | null;
  readonly reason: string | null;
}

const NEEDS_ESCAPE = /["\\\u0000-\u001f\u2028\u2029]/;

function quote(text: string): string {
  return NEEDS_ESCAPE.test(text) ? JSON.stringify(text) : `"${text}"`;
}

export class AccessLog {
  private readonly stream: { write(line: string): unknown };
  private readonly head: string;
  private readonly time: () => string;

  constructor(private readonly logger: Logger) {
    const l = logger as unknown as Record<symbol, unknown>;
    this.stream = l[pino.symbols.streamSym] as { write(line: string): unknown };
    this.time = l[pino.symbols.timeSym] as () => string;
    this.head = `{"level":${pino.levels.values.info ?? 30}`;
  }

  write(bindings: string, f: AccessFields): void {
    if (!this.logger.isLevelEnabled('info')) return;
    const chindings = (this.logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? '';
    // Method (an HTTP token), request id (checked against a safe set), address and endpoint key
    // need no escaping; the path and the identity fields may.
    let line = `${this.head}${this.time()}${chindings}${bindings},"method":${f.method === undefined ? 'null' : `"${f.method}"`},"path":${quote(f.path)},"endpoint":${f.endpoint === null ? 'null' : `"${f.endpoint}"`},"status":${f.status},"durationMs":${f.durationMs},"requestId":"${f.requestId}"${f.traceId === undefined ? '' : `,"traceId":"${f.traceId}"`},"client":"${f.client}"`;
    if (f.retries > 0) line += `,"retries":${f.retries}`;
    if (f.subject !== null) line += `,"subject":${JSON.stringify(f.subject)}`;
    if (f.consumer !== null) line += `,"consumer":${JSON.stringify(f.consumer)}`;
    if (f.reason !== null) line += `,"reason":${JSON.stringify(f.reason)}`;
    this.stream.write(`${line},"msg":"access"}\n`);
  }
}
