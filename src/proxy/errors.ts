import type { ServerResponse } from 'node:http';
import { ERROR_CODES, errorBody, type ErrorCode } from '../core/errors.ts';

/** Raised before anything reached the upstream application: safe to try elsewhere. */
const CONNECT_FAILURES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_CLOSED', 'UND_ERR_DESTROYED']);

/**
 * A keep-alive connection the upstream closed just as we reused it fails like this before any
 * response byte; repeating an idempotent request is then safe (RFC 9110 §9.2.2).
 */
const RESETS = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET']);

const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** undici refused the request before sending anything (e.g. a header it will not send). */
const LOCAL_REFUSALS = new Set(['UND_ERR_NOT_SUPPORTED', 'UND_ERR_INVALID_ARG']);

/**
 * The TLS handshake with an https upstream failed: a certificate that does not verify, a name
 * that does not match, or an endpoint that does not speak TLS. Nothing reached the application,
 * so it is a connect failure (retried like one, and counted against the endpoint by outlier
 * detection), answered 502 upstream_tls_error with the reason.
 */
const CERTIFICATE_FAILURES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);
const HANDSHAKE_FAILURES = new Set(['EPROTO', 'ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_TLS_HANDSHAKE_TIMEOUT', 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION']);

export type FailureKind = 'connect-failure' | 'reset' | 'timeout' | 'local' | 'other';

/**
 * One reading of an upstream error: what kind of failure it is (which retry rule applies, whether
 * the endpoint is to blame) and the error code the client gets if it is not retried.
 */
export function classifyFailure(err: unknown): { readonly kind: FailureKind; readonly code: ErrorCode; readonly message?: string } {
  const raw = (err as { code?: unknown } | null)?.code;
  const code = typeof raw === 'string' ? raw : '';
  if (CERTIFICATE_FAILURES.has(code)) {
    const why = (err as Error).message;
    return { kind: 'connect-failure', code: 'upstream_tls_error', message: `the upstream's TLS certificate was refused: ${why} (${code}); trust its CA with --upstream-ca, or tag the route tlsskipverify=true` };
  }
  if (HANDSHAKE_FAILURES.has(code) || code.startsWith('ERR_SSL_')) {
    return { kind: 'connect-failure', code: 'upstream_tls_error', message: `the TLS handshake with the upstream failed (${code}); does the endpoint speak TLS on this port?` };
  }
  if (CONNECT_FAILURES.has(code)) return { kind: 'connect-failure', code: 'upstream_unreachable' };
  if (RESETS.has(code)) return { kind: 'reset', code: 'upstream_error' };
  if (TIMEOUTS.has(code)) return { kind: code === 'UND_ERR_HEADERS_TIMEOUT' ? 'timeout' : 'other', code: 'upstream_timeout' };
  if (LOCAL_REFUSALS.has(code)) return { kind: 'local', code: 'bad_request' };
  return { kind: 'other', code: 'upstream_error' };
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
