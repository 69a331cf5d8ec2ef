import type { IncomingMessage } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import { ERROR_CODES, errorBody, type ErrorCode } from '../core/errors.ts';

/**
 * What the listener refuses before a request reaches the pipeline: heads Node's parser rejects
 * (answered here, since Node would write a bare 400 or 431) and heads that parse but that no
 * route should see. Every refusal is the same JSON error, with an `x-request-id`, as any other.
 */

export interface HeadLimits {
  /** More header fields than this are refused; Node would otherwise drop the rest silently. */
  readonly maxHeaderCount: number;
  readonly maxHeaderSize: number;
  readonly headerTimeoutMs: number;
}

export interface HeadRefusal {
  readonly code: ErrorCode;
  readonly message: string;
}

/** Node's parser errors → our codes. Anything else it refuses is a malformed request (400). */
export function refusalOfParserError(err: NodeJS.ErrnoException, limits: HeadLimits): HeadRefusal | undefined {
  switch (err.code) {
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ETIMEDOUT':
      return undefined; // the client is gone: nothing to answer
    case 'HPE_HEADER_OVERFLOW':
      return { code: 'headers_too_large', message: `request headers exceed ${limits.maxHeaderSize} bytes` };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { code: 'request_timeout', message: `the request head did not arrive within ${limits.headerTimeoutMs} ms` };
    default:
      return { code: 'bad_request', message: `malformed HTTP request${err.code ? ` (${err.code})` : ''}` };
  }
}

/** Writes a refusal straight to the socket and closes it (no request object exists yet). */
export function writeRawRefusal(socket: Socket, refusal: HeadRefusal): number {
  const status = ERROR_CODES[refusal.code].status;
  const requestId = randomUUID();
  const body = JSON.stringify(errorBody(refusal.code, requestId, refusal.message));
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
  );
  return status;
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };

const DIGITS = /^\d+$/;

/**
 * RFC 9112 §3.2 / RFC 3986 §3.2.2: `uri-host [ ":" port ]`, where uri-host is an IP literal in
 * brackets or a reg-name (unreserved, sub-delims and %HH escapes; IPv4 addresses are reg-names
 * too). Empty is allowed: a target without an authority is sent with an empty Host.
 */
const HOST = /^(?:\[[0-9A-Za-z:._~!$&'()*+,;=-]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?$/;

/**
 * Checks a parsed head that Node accepts but a proxy must not pass on: ambiguous or oversized
 * framing, a Host that is missing, repeated (which one did the client mean?) or not a host at
 * all (RFC 9112 §3.2 requires 400 for each), more fields than the limit.
 */
/**
 * The request came on an HTTP/2 stream (node:http2's compatibility request, which has `stream`).
 * Never `httpVersionMajor`: an HTTP/1 request line may claim `HTTP/2.0`, and Node's parser lets it.
 */
export function isHttp2Request(req: IncomingMessage): boolean {
  return (req as IncomingMessage & { stream?: unknown }).stream !== undefined;
}

export function checkHead(req: IncomingMessage, limits: HeadLimits): HeadRefusal | undefined {
  const raw = req.rawHeaders;
  if (raw.length / 2 > limits.maxHeaderCount) {
    return { code: 'headers_too_large', message: `the request has more than ${limits.maxHeaderCount} header fields` };
  }
  const http2 = isHttp2Request(req);
  // Node's HTTP/1 parser takes `HTTP/2.0` in a request line; HTTP/2 is never spoken that way.
  if (!http2 && req.httpVersionMajor !== 1) return { code: 'bad_request', message: `HTTP/${req.httpVersionMajor}.${req.httpVersionMinor} in an HTTP/1 request line; HTTP/2 is spoken with its own framing (h2 by ALPN, or h2c with --h2c)` };
  if (http2) {
    // RFC 9113 §8.3.1: `:authority` is the host; a Host that names another is malformed.
    const headers = req.headers as IncomingMessage['headers'] & { ':authority'?: string };
    const authority = headers[':authority'];
    if (authority !== undefined) {
      if (headers.host !== undefined && headers.host !== authority) return { code: 'bad_request', message: 'the Host header and :authority differ' };
      headers.host = authority;
    }
  }
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 4 && name.toLowerCase() === 'host' && ++hosts > 1) {
      return { code: 'bad_request', message: 'the request has more than one Host header' };
    }
  }
  const host = req.headers.host;
  if (host === undefined) {
    // Node answers this itself (a bare 400) unless its server runs with requireHostHeader: false.
    if (req.httpVersionMajor === 1 && req.httpVersionMinor >= 1) return { code: 'bad_request', message: 'an HTTP/1.1 request must have a Host header' };
  } else if (!HOST.test(host)) {
    return { code: 'bad_request', message: 'the Host header is not a valid host[:port]' };
  }
  if (req.headers['transfer-encoding'] !== undefined && req.httpVersionMajor === 1 && req.httpVersionMinor === 0) {
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing. A front end
    // that follows HTTP/1.0 ignores the field and would read the chunked body as the next request.
    return { code: 'bad_request', message: 'Transfer-Encoding is not allowed in an HTTP/1.0 request' };
  }
  const length = req.headers['content-length'];
  if (length !== undefined && (!DIGITS.test(length) || !Number.isSafeInteger(Number(length)))) {
    return { code: 'bad_request', message: 'Content-Length is not a whole number below 2^53' };
  }
  return undefined;
}

/** The declared body length (already checked by checkHead), or undefined without one. */
export function contentLength(req: IncomingMessage): number | undefined {
  const raw = req.headers['content-length'];
  return raw === undefined ? undefined : Number(raw);
}
