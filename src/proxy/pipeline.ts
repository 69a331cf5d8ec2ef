import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { serializedBindings, type Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { ErrorCode } from '../core/errors.ts';
import { redirectsToItself, type AccessCheck, type CompiledRoute, type Identity, type Runtime, type UpstreamEndpoint } from '../runtime/runtime.ts';
import { connectionClientCertificate } from './client-certificate.ts';
import { sendHttpsRedirect } from './redirect.ts';
import { acceptableRequestId, upstreamRequestHeaders } from './headers.ts';
import { traceContextOf, type TraceContext } from './trace-context.ts';
import { requestTarget, type RequestTarget } from './target.ts';
import { prepareBody, type BodyLimits, type PreparedBody } from './body.ts';
import { sendError, type ErrorExtras } from './errors.ts';
import { checkHead, contentLength, isHttp2Request, type HeadLimits } from './client-errors.ts';
import { forward } from './forward.ts';
import { isGrpcRequest, sendGrpcError } from './grpc.ts';
import type { ListenerLimits } from './listener-limits.ts';
import type { AccessLog } from './access-log.ts';
import type { RolloutTaps, RouteTally } from '../runtime/rollout-taps.ts';
import type { MirrorGate } from './mirror.ts';
import type { RequestSpan, RequestTracer } from './request-spans.ts';
import type { CacheResult, ResponseTap } from '../runtime/cache.ts';
import { cacheStep } from './cache-step.ts';

/**
 * The step an admitted exchange ends in, after the breaker let it through: forwarding over the
 * endpoint's pool (forward.ts), or dialling an endpoint for a WebSocket upgrade (upgrade.ts).
 */
export type FinalStep = (ex: Exchange, route: CompiledRoute, body: PreparedBody | null, probe: number) => void;

/** What every exchange of one listener shares; made once. */
export interface PipelineContext {
  readonly runtime: () => Runtime | undefined;
  /** Services under rollout: per-subset figures and targeted consumers. */
  readonly rollouts: RolloutTaps;
  readonly routeTallies: RouteTally | null;
  readonly head: HeadLimits;
  readonly bodyTimeoutMs: number;
  readonly bufferBytes: number;
  /** One line per request, or null when `--no-access-log`. */
  readonly accessLog: AccessLog | null;
  /** Share of answers below 400 logged; 1 logs all (no random draw). */
  readonly accessLogSample: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly limits: ListenerLimits;
  /** Set while draining: every answer closes its connection. */
  draining: boolean;
  /** Where redirect-https sends plain-HTTP clients: the first --listen-tls port, null without one. */
  httpsPort: number | null;
  /** Counts an answer given before a route matched (route and service labels ""). */
  readonly countUnrouted: (status: number) => void;
  /** The cap on shadow (mirror) requests in flight in this process. */
  readonly mirrors: MirrorGate;
  /** One span per request with --otlp-endpoint (set once the SDK is loaded); null: none, at no cost. */
  tracer: RequestTracer | null;
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
  /** W3C trace context: the client's traceparent, or a new trace (proxy/trace-context.ts). */
  readonly trace: TraceContext;
  /** This request's span (proxy/request-spans.ts), null without --otlp-endpoint. */
  readonly span: RequestSpan | null;
  /** The gateway error code the client was answered with, if any (for the span). */
  errorCode: ErrorCode | null = null;
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
  /** Response headers added by the pipeline (HSTS over TLS, rate limits), as name, value pairs. */
  extraHeaders: readonly string[] | null = null;
  /** What the route's cache did with this request (X-Cache); null: not decided, or no cache. */
  cacheResult: CacheResult | null = null;
  /** Told of the upstream's response when the cache stores it (cache-step.ts). */
  responseTap: ResponseTap | null = null;
  private done = false;

  constructor(
    readonly ctx: PipelineContext,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly expectsContinue: boolean,
    /** Where the exchange goes once admitted; an upgrade ends in its own step. */
    private readonly finalStep: FinalStep = forward,
  ) {
    // Read now: once a request body stream is destroyed (client hung up), req.socket is null.
    this.clientIp = req.socket.remoteAddress ?? '';
    this.encrypted = (req.socket as { encrypted?: boolean }).encrypted === true;
    this.http2 = isHttp2Request(req);
    this.grpc = isGrpcRequest(req.headers);
    this.requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    this.span = ctx.tracer === null ? null : ctx.tracer.start(req);
    this.trace = this.span === null ? traceContextOf(req.headers) : this.span.trace;
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
    let route = runtime.router.match(target.host, target.path);
    if (!route) return this.refuse('route_not_found');
    if (this.refusedAt(route)) return;
    if (route.redirect !== null) {
      const location = route.redirect.location(route.upstreamPath(target.path), target.query);
      if (!redirectsToItself(location, this.encrypted ? 'https' : 'http', target.host, target.path)) return this.redirect(route.redirect.status, location);
      // fabio goes on to the routes without a host; so does this one, with that route's own steps.
      const fallback = runtime.router.match(undefined, target.path);
      if (!fallback || fallback.redirect !== null) return this.refuse('route_not_found', 'the route redirects to this very URL and no host-less route matches');
      route = fallback;
      if (this.refusedAt(route)) return;
    }
    // Before credentials or limits: a plain-HTTP request on such a route is never served, so
    // nothing it carries is looked at (and a credential sent in clear is not checked).
    if (route.redirectHttps && !this.encrypted && ctx.httpsPort !== null) {
      const sent = sendHttpsRedirect(this, route, target, ctx.httpsPort);
      if (sent === null) return this.refuse('bad_request', 'the Host header is not a host name this route can be redirected to');
      route.countRedirect();
      this.reason = 'redirect_https';
      return this.finish(sent);
    }
    if (this.encrypted) this.extraHeaders = route.hstsHeader;
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
      const outcome = await route.auth.authenticate(req.headers, route.auth.needsClientCertificate && this.encrypted ? connectionClientCertificate(req.socket) : null);
      if (!outcome.ok) {
        route.countAuthRejection(outcome.reason);
        return this.refuse(outcome.code, outcome.message, { reason: outcome.reason, headers: outcome.challenge ? { 'www-authenticate': outcome.challenge } : undefined });
      }
      this.identity = outcome.identity;
    }
    if (route.rateLimits.count > 0) {
      const identity = this.identity;
      const limited = await route.rateLimits.check({
        // JWT subjects, certificate subjects and consumer ids live in one key space; the method prefix keeps them apart.
        consumer: identity ? (identity.consumer ?? `${identity.method}:${identity.subject}`) : null,
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
      const extra: string[] = this.extraHeaders === null ? [] : [...this.extraHeaders];
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

  /** The route's cache when it has one, then the breaker and the final step. */
  private admit(route: CompiledRoute, body: PreparedBody | null): void {
    if (route.cache !== null) return cacheStep(this, route, route.cache, body);
    this.pass(route, body);
  }

  /** The circuit breaker, then the final step (forward or upgrade), which ends the exchange. */
  pass(route: CompiledRoute, body: PreparedBody | null): void {
    const permit = route.resilience.breaker.tryAcquire();
    if (!permit.allowed) {
      return this.refuse('circuit_open', `service "${route.service}" is failing; retry later`, {
        headers: { 'retry-after': String(Math.max(1, Math.ceil(permit.retryAfterMs / 1000))) },
      });
    }
    this.finalStep(this, route, body, permit.probe);
  }

  /** The route's first steps: client IP rules (fabio checks them before anything), then a hold. */
  private refusedAt(route: CompiledRoute): boolean {
    this.route = route;
    if (route.access !== null && this.deniedBy(route.access)) {
      route.countIpDenied();
      this.refuse('ip_denied', `route ${route.id} does not accept requests from ${this.clientIp || 'this client'} (its ${route.access.kind}= rules)`);
      return true;
    }
    if (route.holdReason !== null) {
      this.refuse('policy_unavailable', route.holdReason);
      return true;
    }
    return false;
  }

  /**
   * fabio's AccessDeniedHTTP (route/access_rules.go): the socket peer, then every
   * X-Forwarded-For element. The header can only add refusals, never admit a peer the rules
   * refuse, so a forged one gains nothing.
   */
  private deniedBy(access: AccessCheck): boolean {
    if (access.denies(this.clientIp)) return true;
    const xff = this.req.headers['x-forwarded-for'];
    if (xff === undefined) return false;
    for (const item of (Array.isArray(xff) ? xff.join(',') : xff).split(',')) {
      const address = item.trim();
      if (address !== '' && address !== this.clientIp && access.denies(address)) return true;
    }
    return false;
  }

  /** A redirect route's answer: no upstream is involved. */
  private redirect(status: number, location: string): void {
    this.reason = 'redirect';
    // The path is the client's: anything outside printable ASCII is escaped so the header is valid.
    const safe = /^[\x21-\x7e]*$/.test(location) ? location : location.replace(/[^\x21-\x7e]/g, (c) => encodeURIComponent(c));
    this.res.writeHead(status, {
      location: safe,
      'content-length': 0,
      'x-request-id': this.requestId,
      ...(this.route?.cache ? { 'x-cache': 'bypass' } : {}),
      ...(this.bodyUnread || this.ctx.draining ? { connection: 'close' } : {}),
    });
    this.res.end();
    this.finish(status);
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
    this.errorCode = code;
    if (this.grpc) {
      const sent = sendGrpcError(this.res, code, this.requestId, message, grpcStatus);
      this.grpcStatus = String(sent.grpcStatus);
      return sent.status;
    }
    const own = this.answerHeaders;
    const headers = own === undefined ? extras?.headers : { ...extras?.headers, ...own };
    // `close` asks for the end of an HTTP/1.1 connection (a body left half read); HTTP/2 has no such header.
    return sendError(this.res, code, this.requestId, message, { ...extras, headers, close: extras?.close === true ? !this.http2 : this.mustClose() });
  }

  /**
   * The request head for the upstream, for forwarding and WebSocket handshakes alike: hop-by-hop
   * and forged identity headers out, the route's credentials out, X-Forwarded-* and the identity
   * in, and fabio's `host=` name (proxy/http_proxy.go) in place of the client's Host. `host=dst`
   * is the endpoint's own `address:port`, set by whoever knows the endpoint of each attempt.
   */
  upstreamHeaders(route: CompiledRoute): Record<string, string | string[]> {
    const headers = upstreamRequestHeaders(this.req.headers, {
      requestId: this.requestId,
      trace: this.trace,
      clientIp: this.clientIp,
      proto: this.encrypted ? 'https' : 'http',
      identity: this.identity,
      drop: route.auth.credentialHeaders,
    });
    if (route.upstreamHost !== null && route.upstreamHost !== 'dst') headers.host = route.upstreamHost;
    return headers;
  }

  /**
   * Headers every gateway answer of this exchange carries: HSTS when the route has it and the
   * client came over TLS (RFC 6797 §7.2: never over plain HTTP, where an attacker could forge it).
   */
  get answerHeaders(): Readonly<Record<string, string>> | undefined {
    const hsts = this.encrypted ? (this.route?.hsts ?? null) : null;
    // Every answer of a route with a cache says what the cache did, the gateway's own ones too.
    const cached = this.route?.cache ? (this.cacheResult ?? 'bypass') : null;
    if (cached === null) return hsts === null ? undefined : { 'strict-transport-security': hsts };
    return hsts === null ? { 'x-cache': cached } : { 'strict-transport-security': hsts, 'x-cache': cached };
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
    this.errorCode = 'internal_error';
    if (this.done) {
      this.res.destroy();
      return;
    }
    this.finish(this.grpc ? this.answerError('internal_error') : sendError(this.res, 'internal_error', this.requestId, undefined, { headers: this.answerHeaders, close: !this.http2 }));
  }

  /** Once per exchange: metrics and the access log line. */
  finish(sent: number): void {
    if (this.done) return;
    this.done = true;
    this.responseTap?.onEnd();
    const { res, route, ctx } = this;
    // What the client was really sent, also when the listener answered for this request.
    const status = res.headersSent && sent === 499 ? res.statusCode : sent;
    const seconds = (performance.now() - this.started) / 1000;
    if (route) {
      route.countResponse(status);
      route.observeDuration(seconds);
      // Only answers an endpoint gave (or failed to give) say something about a subset.
      ctx.routeTallies?.observe(route.id, status, seconds * 1000);
      if (this.endpoint && ctx.rollouts.size > 0) ctx.rollouts.tap(route.service)?.observe(this.endpoint.key, status, seconds * 1000);
      if (route.grpc && this.grpc) route.countGrpcStatus(this.grpcStatus ?? (status === 499 ? '1' : 'none'));
    } else {
      ctx.countUnrouted(status);
    }
    if (this.span !== null) this.span.end(this, status);
    if (!ctx.accessLog) return;
    if (status < 400 && ctx.accessLogSample < 1 && Math.random() >= ctx.accessLogSample) return;
    const identity = this.identity;
    ctx.accessLog.write(route?.accessBindings ?? UNROUTED_BINDINGS, {
      method: this.req.method,
      // Without the query: clients put tokens there (?access_token=, ?api_key=).
      path: this.target?.path ?? pathOnly(this.req.url),
      endpoint: this.endpoint?.key ?? null,
      status,
      durationMs: Math.round(seconds * 1e6) / 1000,
      requestId: this.requestId,
      traceId: this.trace.traceId,
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
