import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) at the gateway: a valid `traceparent`
 * from the client is passed on (with its `tracestate`), a missing or invalid one starts a new
 * trace, so every upstream request and every access-log line carries a trace id. Without
 * `--otlp-endpoint` the gateway records no span of its own, so a new trace is not marked sampled
 * (flags 00) and a client's flags pass unchanged; with it, proxy/request-spans.ts makes the
 * context instead (the gateway's span as the upstream's parent). Hand-written: it is two header fields and a fixed grammar; the
 * OpenTelemetry propagator would bring the SDK onto every request for the same result.
 */
export interface TraceContext {
  readonly traceId: string;
  /** The `traceparent` sent upstream. */
  readonly traceparent: string;
  /** The client's `tracestate`, passed on only with its valid traceparent. */
  readonly tracestate: string | undefined;
}

const ZERO_TRACE = '00000000000000000000000000000000';
const ZERO_PARENT = '0000000000000000';
/** W3C: at most 32 list members; 512 characters is what propagators must keep at least. */
const MAX_TRACESTATE = 512;

export function traceContextOf(headers: IncomingHttpHeaders): TraceContext {
  const incoming = headers.traceparent;
  const parsed = typeof incoming === 'string' ? parseTraceparent(incoming) : null;
  if (parsed) {
    return { traceId: parsed.traceId, traceparent: `00-${parsed.traceId}-${parsed.parentId}-${parsed.flags}`, tracestate: acceptableTracestate(headers.tracestate) };
  }
  const traceId = randomUUID().replace(/-/g, '');
  const parentId = randomUUID().slice(0, 8) + randomUUID().slice(0, 8);
  return { traceId, traceparent: `00-${traceId}-${parentId}-00`, tracestate: undefined };
}

/** The client's tracestate, passed on with its valid traceparent when it is printable and not oversized. */
export function acceptableTracestate(state: string | string[] | undefined): string | undefined {
  return typeof state === 'string' && state.length <= MAX_TRACESTATE && /^[\x20-\x7e]*$/.test(state) ? state : undefined;
}

/**
 * Version 00 exactly; a later version is read by its 00 prefix fields (the spec asks parsers to
 * accept what they can) and sent on as 00. Version ff, upper-case hex and all-zero ids are invalid.
 */
export function parseTraceparent(value: string): { traceId: string; parentId: string; flags: string } | null {
  const v = value.trim();
  const m = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/.exec(v);
  if (!m) return null;
  const [, version, traceId, parentId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === 'ff' || (version === '00' && rest !== undefined)) return null;
  if (traceId === ZERO_TRACE || parentId === ZERO_PARENT) return null;
  return { traceId, parentId, flags };
}
