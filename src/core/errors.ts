/**
 * The one error registry. Codes are stable API: clients and dashboards match on them, and the
 * README lists every one. Add a code here, never inline a string elsewhere.
 */
export const ERROR_CODES = {
  route_not_found: { status: 404, message: 'no route matches this host and path' },
  bad_request: { status: 400, message: 'the request could not be understood' },
  not_ready: { status: 503, message: 'the gateway has not completed its first sync with Consul' },
  no_healthy_upstream: { status: 503, message: 'the service has no healthy endpoint' },
  upstream_unreachable: { status: 502, message: 'could not connect to the upstream endpoint' },
  upstream_timeout: { status: 504, message: 'the upstream did not answer in time' },
  upstream_error: { status: 502, message: 'the upstream connection failed mid-response' },
  internal_error: { status: 500, message: 'internal gateway error' },
  unauthorized: { status: 401, message: 'valid credentials are required' },
  insufficient_scope: { status: 403, message: 'the credentials do not grant access to this route' },
  certificate_not_allowed: { status: 403, message: 'the client certificate is verified but not on this route\'s allow list' },
  auth_unavailable: { status: 503, message: 'credentials cannot be verified right now (identity provider unreachable)' },
  rate_limited: { status: 429, message: 'rate limit exceeded' },
  rate_limiter_unavailable: { status: 503, message: 'the rate limiter is unavailable and this route fails closed' },
  circuit_open: { status: 503, message: 'the service is failing; requests are refused until it recovers' },
  payload_too_large: { status: 413, message: 'the request body is larger than this route accepts' },
  headers_too_large: { status: 431, message: 'the request headers are larger than this route accepts' },
  policy_unavailable: { status: 503, message: 'the policy of this route is invalid and no good version is known' },
  request_timeout: { status: 408, message: 'the request did not arrive in time' },
  ip_denied: { status: 403, message: 'the route does not accept requests from this client address' },
  upstream_tls_error: { status: 502, message: 'the TLS handshake with the upstream endpoint failed' },
  upstream_busy: { status: 503, message: 'every endpoint of the service is at its limit of concurrent requests' },
  bad_websocket_handshake: { status: 400, message: 'the WebSocket handshake is malformed' },
  websocket_version_unsupported: { status: 426, message: 'only WebSocket version 13 is supported' },
  shutting_down: { status: 503, message: 'the gateway is shutting down; connect to another instance' },
  // RFC 9111 §5.2.1.7: only-if-cached without a usable stored response is answered 504.
  not_cached: { status: 504, message: 'the request asked for a stored response (only-if-cached) and none is usable' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ERROR_CODES[code].message, options);
    this.name = 'GatewayError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
  }
}

export interface ErrorBody {
  /** `reason` refines a code, e.g. unauthorized → token_expired. */
  readonly error: { readonly code: ErrorCode; readonly message: string; readonly requestId: string; readonly reason?: string };
}

export function errorBody(code: ErrorCode, requestId: string, message?: string, reason?: string): ErrorBody {
  return { error: { code, message: message ?? ERROR_CODES[code].message, requestId, ...(reason ? { reason } : {}) } };
}

/** Short, single-line description of any thrown value, for logs and problem records. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/**
 * The gRPC status a gRPC client gets for each gateway error (grpc/grpc doc/statuscodes.md): a
 * gRPC client reads `grpc-status`, never a JSON body. Codes not listed follow gRPC's own mapping
 * of HTTP statuses (doc/http-grpc-status-mapping.md).
 */
const GRPC_STATUS_OF_CODE: Partial<Record<ErrorCode, number>> = {
  route_not_found: 12, // UNIMPLEMENTED: no such service or method here
  bad_request: 13, // INTERNAL, as gRPC maps HTTP 400
  upstream_timeout: 4, // DEADLINE_EXCEEDED
  request_timeout: 4,
  unauthorized: 16, // UNAUTHENTICATED
  insufficient_scope: 7, // PERMISSION_DENIED
  rate_limited: 8, // RESOURCE_EXHAUSTED
  payload_too_large: 8,
  headers_too_large: 8,
  internal_error: 13,
};

const GRPC_STATUS_OF_HTTP: Readonly<Record<number, number>> = { 400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14 };

/** 2 is UNKNOWN. */
export function grpcStatusOf(code: ErrorCode): number {
  return GRPC_STATUS_OF_CODE[code] ?? GRPC_STATUS_OF_HTTP[ERROR_CODES[code].status] ?? 2;
}
