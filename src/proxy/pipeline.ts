import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { serializedBindings, type Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { ErrorCode } from '../core/errors.ts';
import type { CompiledRoute, Identity, Runtime, UpstreamEndpoint } from '../runtime/runtime.ts';
import { acceptableRequestId } from './headers.ts';
import { requestTarget, type RequestTarget } from './target.ts';
import { prepareBody, type BodyLimits, type PreparedBody } from './body.ts';
import { sendError, type ErrorExtras } from './errors.ts';
import { checkHead, contentLength, type HeadLimits } from './client-errors.ts';
import { forward } from './forward.ts';
import { isGrpcRequest, sendGrpcError } from './grpc.ts';
import type { ListenerLimits } from './listener-limits.ts';
import type { AccessLog } from './access-log.ts';

/** What every exchange of one listener shares; made once. */
export interface PipelineContext {
  readonly runtime: () => Runtime | undefined;
  readonly head: HeadLimits;
  readonly bodyTimeoutMs: number;
  readonly bufferBytes: number;
  /** One line per request, or null when `--no-access-log`. */
  readonly accessLog: AccessLog | null;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly limits: ListenerLimits;
  /** Set while draining: every answer closes its connection. */
  draining: boolean;
  /** Counts an answer given before a route matched (route and service labels ""). */
  readonly countUnrouted: (status: number) => void;
}

/**
 * One request from arrival to the access log line: the fixed pipeline (route → held → head and
 * declared size limits → authentication → authorization → rate limits → body → breaker →
 * forward). A step that has nothing to do for a route is not run, and a request that needs no
 * asynchronous step (no auth, no rate limit, no body) runs to the upstream without a promise.
 * The exchange is the one object a request allocates for its own state; everything it reads about
 * its route was compiled with the snapshot.
 */
export class Exchange {
  readonly started = performance.now();
  readonly requestId: string;
  readonly clientIp: string;
  /** The client spoke TLS to a --listen-tls listener (X-Forwarded-Proto: https). */
  readonly encrypted: boolean;
  /**
   * The client speaks HTTP/2 (the compatibility request and response of node:http2): connection
   * fields are never sent to it (RFC 9113 §8.2.2), the session, not the answer, closes connections.
   */
  readonly http2: boolean;
  /** A gRPC call: the gateway's own answers are gRPC statuses, not JSON. */
  readonly grpc: boolean;
  /** The grpc-status the client got, for the gRPC metrics; null until known. */
  grpcStatus: string | null = null;
  route: CompiledRoute | undefined;
  target: RequestTarget | undefined;
  readonly declaredLength: number | undefined;
  readonly hasBody: boolean;
  /** The request has a body we have not read: after an answer the connection cannot be reused. */
  bodyUnread: boolean;
  endpoint: UpstreamEndpoint | undefined;
  retries = 0;
  identity: Identity | null = null;
  reason: string | null = null;
  /** Response headers added by the pipeline (rate limits), as name, value pairs. */
  extraHeaders: string[] | null = null;
  private done = false;

  constructor(
    readonly ctx: PipelineContext,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly expectsContinue: boolean,
  ) {
    // Read now: once a request body stream is destroyed (client hung up), req.socket is null.
    this.clientIp = req.socket.remoteAddress ?? '';
    this.encrypted = (req.socket as { encrypted?: boolean }).encrypted === true;
    this.http2 = req.httpVersionMajor === 2;
    this.grpc = isGrpcRequest(req.headers);
    this.requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    this.declaredLength = contentLength(req);
    this.hasBody = this.http2
      ? // RFC 9113 §8.1: an HTTP/2 request has a body unless its HEADERS frame ended the stream.
        !(req as unknown as { stream: { endAfterHeaders: boolean } }).stream.endAfterHeaders && this.declaredLength !== 0
      : req.headers['transfer-encoding'] !== undefined || (this.declaredLength !== undefined && this.declaredLength > 0);
    this.bodyUnread = this.hasBody;
  }

  start(): void {
    const { ctx, req } = this;
    const invalid = checkHead(req, ctx.head);
    if (invalid) return this.refuse(invalid.code, invalid.message);
    const runtime = ctx.runtime();
    if (!runtime) return this.refuse('not_ready');
    const target = requestTarget(req);
    if (!target) return this.refuse('bad_request', 'request target must be an absolute path without dot segments, escaped slashes or broken escapes');
    this.target = target;
    const route = runtime.router.match(target.host, target.path);
    if (!route) return this.refuse('route_not_found');
    this.route = route;
    if (route.holdReason !== null) return this.refuse('policy_unavailable', route.holdReason);
    if (route.maxHeaderBytes !== null && headerBytes(req) > route.maxHeaderBytes) {
      route.countSizeRejection('headers');
      return this.refuse('headers_too_large', `request headers exceed ${route.maxHeaderBytes} bytes`);
    }
    if (route.maxBodyBytes !== null && this.declaredLength !== undefined && this.declaredLength > route.maxBodyBytes) {
      route.countSizeRejection('body');
      return this.refuse('payload_too_large', `request body exceeds ${route.maxBodyBytes} bytes`);
    }
    if (route.auth.required || route.rateLimits.count > 0 || this.hasBody) {
      this.slowSteps(route).catch((err: unknown) => this.fail(err));
      return;
    }
    this.admit(route, null);
  }

  /** The steps that may wait: credentials, rate limits (Redis), the body. */
  private async slowSteps(route: CompiledRoute): Promise<void> {
    const { req, res } = this;
    if (route.auth.required) {
      const outcome = await route.auth.authenticate(req.headers);
      if (!outcome.ok) {
        route.countAuthRejection(outcome.reason);
        return this.refuse(outcome.code, outcome.message, { reason: outcome.reason, headers: outcome.challenge ? { 'www-authenticate': outcome.challenge } : undefined });
      }
      this.identity = outcome.identity;
    }
    if (route.rateLimits.count > 0) {
      const identity = this.identity;
      const limited = await route.rateLimits.check({
        // JWT subjects and consumer ids live in one key space; the prefix keeps them apart.
        consumer: identity ? (identity.consumer ?? `jwt:${identity.subject}`) : null,
        plan: identity?.plan ?? null,
        limits: identity?.limits ?? null,
        ip: this.clientIp,
        headers: req.headers,
      });
      if (!limited.ok) {
        route.countRateLimit(limited.status === 429 ? 'limited' : 'unavailable');
        return this.refuse(limited.code, limited.message, { headers: limited.headers });
      }
      route.countRateLimit('allowed');
      const extra: string[] = [];
      for (const name in limited.headers) extra.push(name, limited.headers[name] as string);
      this.extraHeaders = extra;
    }
    if (!this.hasBody) return this.admit(route, null);
    // Only now, with the request authenticated and within its limits, may the client send its body.
    if (this.expectsContinue) res.writeContinue();
    // The body is prepared before an endpoint or the breaker is involved: a client that trickles
    // its body must hold neither an upstream connection nor a half-open probe.
    const deadlineAt = route.requestTimeoutMs === null ? null : performance.now() + route.requestTimeoutMs;
    const limits: BodyLimits = { bufferBytes: this.ctx.bufferBytes, maxBodyBytes: route.maxBodyBytes, idleMs: this.ctx.bodyTimeoutMs };
    const body = await prepareBody(req, route, limits, true, this.declaredLength, deadlineAt);
    if (body === 'gone') return this.finish(499);
    if (body === 'timeout') return this.refuse('request_timeout', `the request body did not arrive within ${route.requestTimeoutMs ?? 0} ms`);
    if (body === 'idle') return this.refuse('request_timeout', `the request body paused for more than ${this.ctx.bodyTimeoutMs} ms`);
    if (body === 'too_large') {
      route.countSizeRejection('body');
      return this.refuse('payload_too_large', `request body exceeds ${route.maxBodyBytes ?? 0} bytes`);
    }
    this.bodyUnread = !body.replayable;
    this.admit(route, body);
  }

  /** The circuit breaker, then the forward step, which ends the exchange. */
  private admit(route: CompiledRoute, body: PreparedBody | null): void {
    const permit = route.resilience.breaker.tryAcquire();
    if (!permit.allowed) {
      return this.refuse('circuit_open', `service "${route.service}" is failing; retry later`, {
        headers: { 'retry-after': String(Math.max(1, Math.ceil(permit.retryAfterMs / 1000))) },
      });
    }
    forward(this, route, body, permit.probe);
  }

  /** Answers from the gateway, remembering why for the access log. */
  refuse(code: ErrorCode, message?: string, extras?: ErrorExtras): void {
    this.reason ??= extras?.reason ?? code;
    this.finish(this.answerError(code, message, extras));
  }

  /**
   * The gateway's error answer in the client's terms: a gRPC status for a gRPC call, our JSON
   * error otherwise. Returns the HTTP status sent.
   */
  answerError(code: ErrorCode, message?: string, extras?: ErrorExtras, grpcStatus?: number): number {
    if (this.grpc) {
      const sent = sendGrpcError(this.res, code, this.requestId, message, grpcStatus);
      this.grpcStatus = String(sent.grpcStatus);
      return sent.status;
    }
    return sendError(this.res, code, this.requestId, message, { ...extras, close: this.mustClose() });
  }

  /**
   * An HTTP/1.1 answer closes the connection when the body was not read (the next bytes are not
   * a request) or while draining; an HTTP/2 stream has its own end and the session its GOAWAY.
   */
  mustClose(): boolean {
    return !this.http2 && (this.bodyUnread || this.ctx.draining);
  }

  /** A bug in this request's handling: 500, logged and counted, never the process. */
  fail(err: unknown): void {
    this.ctx.metrics.internalErrors.inc({ component: 'proxy' });
    this.ctx.logger.error({ err, requestId: this.requestId }, 'unexpected error in request pipeline');
    if (this.done) {
      this.res.destroy();
      return;
    }
    this.finish(this.grpc ? this.answerError('internal_error') : sendError(this.res, 'internal_error', this.requestId, undefined, { close: !this.http2 }));
  }

  /** Once per exchange: metrics and the access log line. */
  finish(sent: number): void {
    if (this.done) return;
    this.done = true;
    const { res, route, ctx } = this;
    // What the client was really sent, also when the listener answered for this request.
    const status = res.headersSent && sent === 499 ? res.statusCode : sent;
    const seconds = (performance.now() - this.started) / 1000;
    if (route) {
      route.countResponse(status);
      route.observeDuration(seconds);
      if (route.grpc && this.grpc) route.countGrpcStatus(this.grpcStatus ?? (status === 499 ? '1' : 'none'));
    } else {
      ctx.countUnrouted(status);
    }
    if (!ctx.accessLog) return;
    const identity = this.identity;
    ctx.accessLog.write(route?.accessBindings ?? UNROUTED_BINDINGS, {
      method: this.req.method,
      // Without the query: clients put tokens there (?access_token=, ?api_key=).
      path: this.target?.path ?? pathOnly(this.req.url),
      endpoint: this.endpoint?.key ?? null,
      status,
      durationMs: Math.round(seconds * 1e6) / 1000,
      requestId: this.requestId,
      client: this.clientIp,
      retries: this.retries,
      subject: identity?.subject ?? null,
      consumer: identity?.consumer ?? null,
      reason: this.reason,
    });
  }
}

const UNROUTED_BINDINGS = serializedBindings({ route: null, service: null });

function pathOnly(url: string | undefined): string {
  if (url === undefined) return '';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/** Size of the request head as received: request line plus every header line. */
function headerBytes(req: IncomingMessage): number {
  let total = (req.method?.length ?? 0) + (req.url?.length ?? 0) + 12;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i++) total += (raw[i]?.length ?? 0) + 2;
  return total;
}
