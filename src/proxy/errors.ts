import type { ServerResponse } from 'node:http';
import { ERROR_CODES, errorBody, type ErrorCode } from '../core/errors.ts';

const RETRYABLE_CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
]);

/** Errors raised before anything reached the upstream application: safe to try elsewhere. */
export function isConnectFailure(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && RETRYABLE_CONNECT_CODES.has(code);
}

/**
 * A keep-alive connection the upstream closed just as we reused it fails like this before any
 * response byte; repeating an idempotent request is then safe (RFC 9110 §9.2.2).
 */
const RETRYABLE_IF_IDEMPOTENT = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET']);

export function isRetryable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return isConnectFailure(err) || (typeof code === 'string' && RETRYABLE_IF_IDEMPOTENT.has(code));
}

/** undici refused the request before sending anything (e.g. a header it will not send). */
const LOCAL_REFUSALS = new Set(['UND_ERR_NOT_SUPPORTED', 'UND_ERR_INVALID_ARG']);

export function isLocalRefusal(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && LOCAL_REFUSALS.has(code);
}

export function classifyUpstreamError(err: unknown): ErrorCode {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return 'upstream_timeout';
  if (isConnectFailure(err)) return 'upstream_unreachable';
  return 'upstream_error';
}

export interface ErrorExtras {
  readonly reason?: string;
  readonly headers?: Readonly<Record<string, string>>;
  /** Close the connection after answering: the request body was not read. */
  readonly close?: boolean;
}

export function sendError(res: ServerResponse, code: ErrorCode, requestId: string, message?: string, extras?: ErrorExtras): number {
  const status = ERROR_CODES[code].status;
  if (res.headersSent) {
    res.destroy();
    return status;
  }
  const body = JSON.stringify(errorBody(code, requestId, message, extras?.reason));
  res.writeHead(status, {
    ...extras?.headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'x-request-id': requestId,
    'cache-control': 'no-store',
    ...(extras?.close ? { connection: 'close' } : {}),
  });
  res.end(body);
  return status;
}
