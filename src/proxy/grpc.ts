import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { ERROR_CODES, grpcStatusOf, type ErrorCode } from '../core/errors.ts';

/**
 * gRPC over HTTP/2 as the gateway sees it (grpc/grpc doc/PROTOCOL-HTTP2.md): a call is a POST
 * whose content-type is application/grpc[+fmt]; its outcome is `grpc-status` in the trailers
 * (or in the only HEADERS frame of a "trailers-only" response); `grpc-timeout` is its deadline.
 */

export const GRPC_DEADLINE_EXCEEDED = 4;
export const GRPC_UNAVAILABLE = 14;
export const GRPC_CANCELLED = 1;

/** gRPC proper; grpc-web (`application/grpc-web`) carries its trailers in the body and is plain HTTP to us. */
export function isGrpcRequest(headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type'];
  if (type === undefined || type.length < 16) return false;
  const lower = type.slice(0, 17).toLowerCase();
  return lower.startsWith('application/grpc') && (type.length === 16 || lower[16] === '+' || lower[16] === ';');
}

const TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 0.001, n: 0.000_001 };

/**
 * `grpc-timeout`: TimeoutValue (1-8 digits) and TimeoutUnit (PROTOCOL-HTTP2.md). Undefined when
 * absent, 'invalid' when malformed (the call is refused: gRPC servers answer such a call with an
 * error too, and a deadline the gateway cannot read must not become no deadline).
 */
export function parseGrpcTimeout(value: string | string[] | undefined): number | undefined | 'invalid' {
  if (value === undefined) return undefined;
  const m = typeof value === 'string' ? TIMEOUT.exec(value) : null;
  if (!m) return 'invalid';
  return Number(m[1]) * (UNIT_MS[m[2] as string] as number);
}

/** The grpc-status label: 0-16 as sent, anything else one value, so an upstream cannot grow the series. */
export function grpcStatusLabel(value: unknown): string {
  const text = Array.isArray(value) ? String(value[0]) : String(value);
  return /^(?:\d|1[0-6])$/.test(text) ? text : 'invalid';
}

/** grpc-message is percent-encoded UTF-8 (PROTOCOL-HTTP2.md, "Status-Message"). */
export function encodeGrpcMessage(message: string): string {
  return encodeURIComponent(message.replace(/[\uD800-\uDFFF]/g, '\uFFFD')).replace(/%20/g, ' ').replace(/%2F/g, '/').replace(/%3A/g, ':').replace(/%2C/g, ',');
}

/** Fields an upstream's trailers may not pass to the client: pseudo-headers and connection fields. */
const NOT_A_TRAILER = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection', 'content-length', 'http2-settings']);

/**
 * undici's trailers (an object for HTTP/2, a flat name/value list for HTTP/1.1) as the object
 * `addTrailers` takes, with the grpc-status they hold (undefined without one).
 */
export function trailersOf(raw: unknown): { trailers: Record<string, string>; grpcStatus: string | undefined } {
  const trailers: Record<string, string> = Object.create(null) as Record<string, string>;
  const add = (name: string, value: unknown): void => {
    const lower = name.toLowerCase();
    if (lower.startsWith(':') || NOT_A_TRAILER.has(lower)) return;
    const text = Array.isArray(value) ? value.map(String).join(', ') : String(value);
    trailers[lower] = lower in trailers ? `${trailers[lower]}, ${text}` : text;
  };
  if (Array.isArray(raw)) {
    for (let i = 0; i + 1 < raw.length; i += 2) add(String(raw[i]), raw[i + 1]);
  } else if (raw !== null && typeof raw === 'object') {
    for (const name of Object.keys(raw)) add(name, (raw as Record<string, unknown>)[name]);
  }
  return { trailers, grpcStatus: trailers['grpc-status'] };
}

/** The status fields of a trailers-only response: moved from its head to the trailers we send. */
const STATUS_FIELDS = new Set(['grpc-status', 'grpc-message', 'grpc-status-details-bin']);

/**
 * Splits a head received without a body (a trailers-only response, how gRPC servers answer most
 * errors) into the head and the trailers: the HTTP/2 compatibility response cannot end a stream
 * with its first HEADERS frame, and a grpc-status in initial headers that are not END_STREAM is
 * read as metadata and lost. Head, then trailers, is the same answer in gRPC's grammar.
 */
export function splitTrailersOnly(head: string[]): { head: string[]; trailers: Record<string, string> } | undefined {
  let trailers: Record<string, string> | undefined;
  const kept: string[] = [];
  for (let i = 0; i < head.length; i += 2) {
    const name = (head[i] as string).toLowerCase();
    if (STATUS_FIELDS.has(name)) (trailers ??= Object.create(null) as Record<string, string>)[name] = head[i + 1] as string;
    else kept.push(head[i] as string, head[i + 1] as string);
  }
  return trailers && 'grpc-status' in trailers ? { head: kept, trailers } : undefined;
}

/**
 * The gateway's own answer to a gRPC call: HTTP 200, no message, `grpc-status` and `grpc-message`
 * in the trailers. Returns the HTTP status sent and the gRPC status.
 */
export function sendGrpcError(res: ServerResponse, code: ErrorCode, requestId: string, message: string | undefined, grpcStatus: number = grpcStatusOf(code)): { status: number; grpcStatus: number } {
  if (res.headersSent) {
    // Messages are already out: the status can still go in the trailers.
    res.addTrailers({ 'grpc-status': String(grpcStatus), 'grpc-message': encodeGrpcMessage(message ?? ERROR_CODES[code].message) });
    res.end();
    return { status: res.statusCode, grpcStatus };
  }
  res.writeHead(200, { 'content-type': 'application/grpc', 'x-request-id': requestId });
  res.addTrailers({ 'grpc-status': String(grpcStatus), 'grpc-message': encodeGrpcMessage(message ?? ERROR_CODES[code].message) });
  res.end();
  return { status: 200, grpcStatus };
}
