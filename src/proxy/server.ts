import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../core/logger.ts';
import { listenOn } from '../core/net.ts';
import type { Metrics } from '../core/metrics.ts';
import { describeError, errorBody, type ErrorCode } from '../core/errors.ts';
import type { CompiledRoute, Identity, Runtime, UpstreamEndpoint } from '../runtime/runtime.ts';
import { acceptableRequestId, clientResponseHeaders, upstreamRequestHeaders } from './headers.ts';
import type { Readable } from 'node:stream';
import { requestTarget, type RequestTarget } from './target.ts';
import { isRetryableMethod, prepareBody, type BodyLimits, type PreparedBody } from './body.ts';
import { classifyFailure, sendError, type ErrorExtras } from './errors.ts';
import { checkHead, contentLength, refusalOfParserError, writeRawRefusal, type HeadLimits } from './client-errors.ts';
import { ListenerLimits } from './listener-limits.ts';

export interface ProxyOptions {
  readonly runtime: () => Runtime | undefined;
  /** One info line per request; off saves about a third of the proxy's CPU. */
  readonly accessLog: boolean;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Largest request head accepted at all; per-route limits can only be lower. */
  readonly maxHeaderSize?: number;
  /** More header fields than this are refused (431). */
  readonly maxHeaderCount?: number;
  /** Client connections open at once; more are closed at once and counted. */
  readonly maxConnections?: number;
  /** A request head must arrive within this (408). */
  readonly clientHeaderTimeoutMs?: number;
  /** Longest pause between two pieces of a request body (408). */
  readonly clientBodyTimeoutMs?: number;
  /** Bodies up to this size are read completely before an upstream is picked. */
  readonly requestBufferSize?: number;
}

const DEFAULT_HEADER_TIMEOUT_MS = 10_000;
const DEFAULT_BODY_TIMEOUT_MS = 30_000;
const DEFAULT_BUFFER_BYTES = 65_536;

/**
 * undici runs headersTimeout on its "fast timers", which tick every ~500 ms: a 200 ms timeout
 * fires after 500-1000 ms. Below this, the proxy keeps its own native timer per attempt so short
 * policy timeouts hold; above it undici's error (< 1 s) is under 10 % and costs no timer. The
 * native timer starts when the attempt is handed to the pool, so it also bounds a new
 * connection's connect (a connect slower than the timeout counts as a timeout, not a connect
 * failure; keep timeouts.connect below timeouts.responseHeaders).
 */
const PRECISE_HEADERS_TIMEOUT_BELOW_MS = 10_000;

/**
 * The data plane. One request is: read the runtime once, match, pick, forward, report. Nothing here
 * awaits Consul or builds configuration; everything it reads was compiled with the snapshot.
 */
export class ProxyServer {
  readonly server: Server;
  private draining = false;
  private inflight = 0;
  private idleWaiters: (() => void)[] = [];

  private readonly head: HeadLimits;
  private readonly bodyTimeoutMs: number;
  private readonly bufferBytes: number;
  /** Counters for answers given before a route is known (route and service labels ""). */
  private readonly unrouted = new Map<number, { inc(): void }>();
  /** Connection cap and per-endpoint saturation, for metrics and `cgw status`. */
  readonly limits: ListenerLimits;

  constructor(private readonly options: ProxyOptions) {
    const headerTimeoutMs = options.clientHeaderTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS;
    this.head = { maxHeaderCount: options.maxHeaderCount ?? 200, maxHeaderSize: options.maxHeaderSize ?? 16_384, headerTimeoutMs };
    this.bodyTimeoutMs = options.clientBodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS;
    this.bufferBytes = options.requestBufferSize ?? DEFAULT_BUFFER_BYTES;
    this.server = createServer(
      {
        keepAliveTimeout: 5_000,
        maxHeaderSize: options.maxHeaderSize,
        headersTimeout: headerTimeoutMs,
        // A missing Host is refused by checkHead with our JSON 400, not by Node with a bare one.
        requireHostHeader: false,
        // Bodies are timed by their idleness (--client-body-timeout) and the route's request
        // timeout; Node's whole-request timer would cut legitimate long uploads.
        requestTimeout: 0,
        // Node checks head timeouts on this period; its 30 s default answered after 40-90 s.
        connectionsCheckingInterval: Math.min(1_000, Math.max(100, Math.floor(headerTimeoutMs / 4))),
      },
      (req, res) => this.onRequest(req, res, false),
    );
    // One more than the limit, so a head over it is seen (and refused) rather than cut.
    this.server.maxHeadersCount = this.head.maxHeaderCount + 1;
    // Without this listener Node answers `Expect: 100-continue` itself, before authentication.
    this.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res, true));
    // Other expectations: Node would answer a bare 417 before routing and authentication. The
    // header is never forwarded, so the request is served like any other.
    this.server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res, false));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
    this.limits = new ListenerLimits(this.server, options.maxConnections, options.metrics, options.logger);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    this.inflight += 1;
    let counted = true;
    res.once('close', () => {
      if (!counted) return;
      counted = false;
      this.inflight -= 1;
      if (this.inflight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    });
    closeWithSocket(req.socket, res);
    this.handle(req, res, expectsContinue).catch((err: unknown) => this.onHandlerFailure(err, res));
  }

  /** Nothing a single request does may end the process: a bug answers 500, is logged and counted. */
  private onHandlerFailure(err: unknown, res: ServerResponse): void {
    this.options.metrics.internalErrors.inc({ component: 'proxy' });
    this.options.logger.error({ err }, 'request handler failed');
    try {
      if (!res.headersSent) sendError(res, 'internal_error', String(res.getHeader('x-request-id') ?? randomUUID()), undefined, { close: true });
      else res.destroy();
    } catch {
      res.destroy();
    }
  }

  /**
   * Heads Node's parser refuses (malformed, too large, too slow): Node would answer a bare 400 or
   * 431 (or nothing); answer with our JSON error instead, so every refusal looks the same.
   */
  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const refusal = refusalOfParserError(err, this.head);
    if (!refusal || !socket.writable) {
      socket.destroy();
      return;
    }
    // Answers on one connection go out in request order: ours must not overtake or cut into an
    // answer still owed to an earlier request.
    const inProgress = (socket as Socket & { _httpMessage?: (ServerResponse & { req?: IncomingMessage }) | null })._httpMessage;
    if (inProgress && !inProgress.writableFinished) {
      if (!inProgress.headersSent && inProgress.req && !inProgress.req.complete) {
        // The request whose body failed to parse is the one in progress: it gets the answer (its
        // handler sees a broken body, writes nothing, and counts what was sent).
        sendError(inProgress, refusal.code, String(inProgress.getHeader('x-request-id') ?? randomUUID()), refusal.message, { close: true });
        return;
      }
      const retry = (): void => {
        setImmediate(() => this.onClientError(err, socket));
      };
      inProgress.once('finish', retry);
      inProgress.once('close', () => {
        inProgress.off('finish', retry);
        if (!socket.destroyed) retry();
      });
      return;
    }
    if (refusal.code === 'headers_too_large') this.options.metrics.requestLimitRejections.inc({ route: '', kind: 'headers' });
    this.options.logger.warn({ client: socket.remoteAddress ?? null, code: err.code ?? null }, `request refused before parsing completed: ${refusal.message}`);
    this.countUnrouted(writeRawRefusal(socket, refusal));
  }

  private countUnrouted(status: number): void {
    let child = this.unrouted.get(status);
    if (!child) {
      child = this.options.metrics.requests.labels({ route: '', service: '', code: String(status) });
      this.unrouted.set(status, child);
    }
    child.inc();
  }

  get requestsInFlight(): number {
    return this.inflight;
  }

  listen(host: string, port: number): Promise<number> {
    return listenOn(this.server, host, port);
  }

  /**
   * Stops accepting, lets requests in flight finish (closing keep-alive connections as they go
   * idle) and resolves when none is left or `timeoutMs` has passed; then cuts what remains.
   */
  async drain(timeoutMs: number): Promise<{ unfinished: number }> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    if (this.inflight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.idleWaiters.push(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timer);
    }
    const unfinished = this.inflight;
    this.server.closeAllConnections();
    await closed;
    return { unfinished };
  }

  private async handle(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
    const started = performance.now();
    // Read now: once a request body stream is destroyed (client hung up), req.socket is null.
    const clientIp = req.socket.remoteAddress ?? '';
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    res.setHeader('x-request-id', requestId);
    if (this.draining) res.setHeader('connection', 'close');

    const declaredLength = contentLength(req);
    const hasBody = req.headers['transfer-encoding'] !== undefined || (declaredLength !== undefined && declaredLength > 0);
    const log: ExchangeLog = { requestId, bodyUnread: hasBody, expectsContinue, endpoint: undefined, retries: 0, subject: null, consumer: null, reason: null };
    let route: CompiledRoute | undefined;
    let status = 0;
    try {
      const runtime = this.options.runtime();
      const invalid = checkHead(req, this.head);
      const target = invalid ? undefined : requestTarget(req);
      if (invalid) status = refuse(res, log, invalid.code, invalid.message);
      else if (!runtime) status = refuse(res, log, 'not_ready');
      else if (!target) status = refuse(res, log, 'bad_request', 'request target must be an absolute path without dot segments, escaped slashes or broken escapes');
      else {
        route = runtime.router.match(target.host, target.path);
        if (!route) status = refuse(res, log, 'route_not_found');
        else status = await this.serve(req, res, route, target, requestId, clientIp, log, declaredLength);
      }
    } catch (err) {
      this.options.metrics.internalErrors.inc({ component: 'proxy' });
      this.options.logger.error({ err, requestId }, 'unexpected error in request pipeline');
      status = sendError(res, 'internal_error', requestId, undefined, { close: true });
    }

    // What the client was really sent, also when the listener answered for this request.
    if (res.headersSent && status !== res.statusCode && status === 499) status = res.statusCode;
    const seconds = (performance.now() - started) / 1000;
    if (route) {
      route.countResponse(status);
      route.observeDuration(seconds);
    } else {
      this.countUnrouted(status);
    }
    if (this.options.accessLog) {
      // Named fields only: headers (and so credentials) never reach the access log.
      this.options.logger.info(
        {
          method: req.method,
          // Without the query: clients put tokens there (?access_token=, ?api_key=).
          path: pathOnly(req.url),
          route: route?.id ?? null,
          service: route?.service ?? null,
          endpoint: log.endpoint?.key ?? null,
          status,
          durationMs: Math.round(seconds * 1e6) / 1000,
          requestId,
          client: clientIp,
          ...(log.retries > 0 ? { retries: log.retries } : {}),
          ...(log.subject !== null ? { subject: log.subject } : {}),
          ...(log.consumer !== null ? { consumer: log.consumer } : {}),
          ...(log.reason !== null ? { reason: log.reason } : {}),
        },
        'access',
      );
    }
  }

  /** The pipeline in its fixed order: size limits → authentication → rate limit → body → circuit breaker → forward. */
  private async serve(
    req: IncomingMessage,
    res: ServerResponse,
    route: CompiledRoute,
    target: RequestTarget,
    requestId: string,
    clientIp: string,
    log: ExchangeLog,
    declaredLength: number | undefined,
  ): Promise<number> {
    const hasBody = log.bodyUnread;
    if (route.holdReason !== null) {
      return refuse(res, log, 'policy_unavailable', route.holdReason);
    }
    if (route.maxHeaderBytes !== null && headerBytes(req) > route.maxHeaderBytes) {
      route.countSizeRejection('headers');
      return refuse(res, log, 'headers_too_large', `request headers exceed ${route.maxHeaderBytes} bytes`);
    }
    if (route.maxBodyBytes !== null && declaredLength !== undefined && declaredLength > route.maxBodyBytes) {
      route.countSizeRejection('body');
      return refuse(res, log, 'payload_too_large', `request body exceeds ${route.maxBodyBytes} bytes`);
    }

    let identity: Identity | null = null;
    if (route.auth.required) {
      const outcome = await route.auth.authenticate(req.headers);
      if (!outcome.ok) {
        route.countAuthRejection(outcome.reason);
        return refuse(res, log, outcome.code, outcome.message, { reason: outcome.reason, headers: outcome.challenge ? { 'www-authenticate': outcome.challenge } : undefined });
      }
      identity = outcome.identity;
      log.subject = identity?.subject ?? null;
      log.consumer = identity?.consumer ?? null;
    }

    if (route.rateLimits.count > 0) {
      const limited = await route.rateLimits.check({
        // JWT subjects and consumer ids live in one key space; the prefix keeps them apart.
        consumer: identity ? (identity.consumer ?? `jwt:${identity.subject}`) : null,
        plan: identity?.plan ?? null,
        limits: identity?.limits ?? null,
        ip: clientIp,
        headers: req.headers,
      });
      if (!limited.ok) {
        route.countRateLimit(limited.status === 429 ? 'limited' : 'unavailable');
        return refuse(res, log, limited.code, limited.message, { headers: limited.headers });
      }
      route.countRateLimit('allowed');
      for (const name in limited.headers) res.setHeader(name, limited.headers[name] as string);
    }

    // Only now, with the request authenticated and within its limits, may the client send its body.
    if (log.expectsContinue && hasBody) res.writeContinue();
    // The body is prepared before an endpoint or the breaker is involved: a client that trickles
    // its body must hold neither an upstream connection nor a half-open probe.
    const deadlineAt = route.requestTimeoutMs === null ? null : performance.now() + route.requestTimeoutMs;
    const limits: BodyLimits = { bufferBytes: this.bufferBytes, maxBodyBytes: route.maxBodyBytes, idleMs: this.bodyTimeoutMs };
    const body = await prepareBody(req, route, limits, hasBody, declaredLength, deadlineAt);
    if (body === 'gone') return 499;
    if (body === 'timeout') return refuse(res, log, 'request_timeout', `the request body did not arrive within ${route.requestTimeoutMs ?? 0} ms`);
    if (body === 'idle') return refuse(res, log, 'request_timeout', `the request body paused for more than ${this.bodyTimeoutMs} ms`);
    if (body === 'too_large') {
      route.countSizeRejection('body');
      return refuse(res, log, 'payload_too_large', `request body exceeds ${route.maxBodyBytes ?? 0} bytes`);
    }
    log.bodyUnread = !body.replayable;

    const { breaker } = route.resilience;
    const permit = breaker.tryAcquire();
    if (!permit.allowed) {
      return refuse(res, log, 'circuit_open', `service "${route.service}" is failing; retry later`, {
        headers: { 'retry-after': String(Math.max(1, Math.ceil(permit.retryAfterMs / 1000))) },
      });
    }
    // Every permit ends in exactly one record or release, or a half-open breaker waits forever.
    let outcome: 'success' | 'failure' | 'none' = 'none';
    try {
      const result = await this.forward(req, res, route, target, { requestId, clientIp, identity, body, deadlineAt }, log);
      outcome = result.outcome;
      return result.status;
    } finally {
      if (outcome === 'none') breaker.release(permit.probe);
      else breaker.record(outcome, permit.probe);
    }
  }

  private async forward(
    req: IncomingMessage,
    res: ServerResponse,
    route: CompiledRoute,
    target: RequestTarget,
    exchange: { requestId: string; clientIp: string; identity: Identity | null; body: PreparedBody; deadlineAt: number | null },
    log: ExchangeLog,
  ): Promise<{ status: number; outcome: 'success' | 'failure' | 'none' }> {
    const { requestId, deadlineAt } = exchange;
    const { body, replayable, state: bodyState } = exchange.body;
    const canaryHeader = req.headers['x-canary'];
    const canary = typeof canaryHeader === 'string' ? canaryHeader : undefined;
    let endpoint = route.balancer.pick(canary);
    if (!endpoint) return { status: refuse(res, log, 'no_healthy_upstream', `service "${route.service}" has no healthy endpoint`), outcome: 'none' };
    if (endpoint.saturated) {
      // Never queue behind a full endpoint without a deadline: another one, or a clear 503 now.
      endpoint = route.balancer.pickUnsaturated(canary);
      if (!endpoint) return { status: this.refuseBusy(res, log, route), outcome: 'none' };
    }

    const method = req.method ?? 'GET';
    const { retry } = route;
    const { outlier } = route.resilience;
    const retryableMethod = isRetryableMethod(method, retry.nonIdempotent);
    const headers = upstreamRequestHeaders(req.headers, {
      requestId,
      clientIp: exchange.clientIp,
      proto: 'http',
      identity: exchange.identity,
      drop: route.auth.credentialHeaders,
    });
    const path = upstreamPath(route, target.path) + target.query;

    // undici accepts an EventEmitter as abort signal; an AbortController per request costs a
    // measurable share of proxy CPU (EventTarget and DOMException allocation).
    const aborter = new EventEmitter();
    let clientGone = false;
    const onClientGone = (): void => {
      if (res.writableFinished) return;
      clientGone = true;
      aborter.emit('abort');
    };
    res.once('close', onClientGone);

    const maxAttempts = 1 + (retryableMethod && replayable ? retry.attempts : 0);

    const precise = route.responseHeadersTimeoutMs < PRECISE_HEADERS_TIMEOUT_BELOW_MS;
    let timedOut = false;
    const deadline =
      deadlineAt === null
        ? undefined
        : setTimeout(
            () => {
              timedOut = true;
              aborter.emit('abort');
            },
            Math.max(0, deadlineAt - performance.now()),
          );
    retry.budget.recordRequest();
    try {
      for (let attempt = 0; ; attempt++) {
        const attempted = endpoint;
        log.endpoint = attempted;
        attempted.inflight += 1;
        let headersTimedOut = false;
        const headersTimer = precise
          ? setTimeout(() => {
              headersTimedOut = true;
              aborter.emit('abort');
            }, route.responseHeadersTimeoutMs)
          : undefined;
        try {
          const upstream = await attempted.pool.request({
            method: method as 'GET',
            path,
            headers,
            body,
            signal: aborter,
            headersTimeout: route.responseHeadersTimeoutMs,
            bodyTimeout: route.responseHeadersTimeoutMs,
          });
          clearTimeout(headersTimer);
          const status = upstream.statusCode;
          outlier.record(attempted.key, outlier.isFailureStatus(status) ? 'failure' : 'success');
          if (retry.statuses.has(status) && attempt + 1 < maxAttempts) {
            const next = this.retryTarget(route, canary, attempted, `status ${status}`, requestId);
            if (next) {
              upstream.body.dump().catch(() => undefined);
              await backoffDelay(retry, attempt, aborter);
              if (clientGone || timedOut) break;
              endpoint = next;
              log.retries += 1;
              continue;
            }
          }
          res.writeHead(status, clientResponseHeaders(upstream.headers));
          await relay(upstream.body, res);
          return { status, outcome: route.resilience.breaker.isFailureStatus(status) ? 'failure' : 'success' };
        } catch (err) {
          clearTimeout(headersTimer);
          // The client's own stream failed (too large, idle, cut): its fault, not the upstream's.
          if (bodyState.tooLarge) {
            route.countSizeRejection('body');
            return { status: refuse(res, log, 'payload_too_large', `request body exceeds ${route.maxBodyBytes ?? 0} bytes`), outcome: 'none' };
          }
          if (bodyState.idle) {
            return { status: refuse(res, log, 'request_timeout', `the request body paused for more than ${this.bodyTimeoutMs} ms`), outcome: 'none' };
          }
          if (bodyState.broken || (clientGone && !timedOut)) return { status: 499, outcome: 'none' };
          const failure = headersTimedOut ? ({ kind: 'timeout', code: 'upstream_timeout' } as const) : classifyFailure(err);
          if (failure.kind === 'local') {
            // undici refused the request itself (nothing was sent): the request's fault, not the upstream's.
            return { status: refuse(res, log, 'bad_request', `the request cannot be forwarded: ${describeError(err)}`), outcome: 'none' };
          }
          if (failure.kind === 'timeout' && body !== null && !Buffer.isBuffer(body) && !req.complete) {
            // Still waiting for the client's body: the upstream is not slow, the client is.
            return { status: refuse(res, log, 'request_timeout', 'the request body did not arrive in time'), outcome: 'none' };
          }
          outlier.record(attempted.key, 'failure');
          if (timedOut) break;
          const { kind } = failure;
          const allowed = kind === 'connect-failure' ? retry.onConnectFailure : kind === 'reset' ? retry.onReset : kind === 'timeout' ? retry.onTimeout : false;
          if (allowed && attempt + 1 < maxAttempts) {
            const next = this.retryTarget(route, canary, attempted, describeError(err), requestId);
            if (next) {
              await backoffDelay(retry, attempt, aborter);
              if (clientGone || timedOut) break;
              endpoint = next;
              log.retries += 1;
              continue;
            }
          }
          this.options.logger.warn({ requestId, endpoint: attempted.key, service: route.service, err: describeError(err) }, 'upstream request failed');
          return { status: sendError(res, failure.code, requestId, undefined, { close: log.bodyUnread }), outcome: 'failure' };
        } finally {
          attempted.inflight -= 1;
        }
      }
      if (clientGone && !timedOut) return { status: 499, outcome: 'none' };
      this.options.logger.warn({ requestId, service: route.service, timeoutMs: route.requestTimeoutMs }, 'request timeout reached');
      return { status: sendError(res, 'upstream_timeout', requestId, `no complete answer within ${route.requestTimeoutMs ?? 0} ms`, { close: log.bodyUnread }), outcome: 'failure' };
    } finally {
      clearTimeout(deadline);
    }
  }

  /** Every endpoint of the service is at --max-requests-per-endpoint. */
  private refuseBusy(res: ServerResponse, log: ExchangeLog, route: CompiledRoute): number {
    this.limits.endpointsBusy(route.service);
    return refuse(res, log, 'upstream_busy', `every endpoint of service "${route.service}" is at its limit of concurrent requests; retry shortly`, {
      headers: { 'retry-after': '1' },
    });
  }

  /** Another endpoint for a retry, if the budget allows one; undefined means answer with what we have. */
  private retryTarget(route: CompiledRoute, canary: string | undefined, failed: UpstreamEndpoint, why: string, requestId: string): UpstreamEndpoint | undefined {
    let next = route.balancer.pick(canary, failed);
    if (next?.saturated) next = route.balancer.pickUnsaturated(canary, failed);
    if (!next || next === failed) return undefined;
    if (!route.retry.budget.tryRetry()) {
      this.options.metrics.retryBudgetExhausted.inc({ service: route.service });
      return undefined;
    }
    this.options.metrics.upstreamRetries.inc({ service: route.service });
    this.options.logger.warn({ requestId, endpoint: failed.key, retryOn: next.key, why }, 'retrying on another endpoint');
    return next;
  }
}

/** One exchange's facts, for the access log and for refusals; one object per request. */
interface ExchangeLog {
  readonly requestId: string;
  /** The request has a body we have not read: after a refusal the connection cannot be reused. */
  bodyUnread: boolean;
  /** The client sent `Expect: 100-continue` and waits for our go-ahead before its body. */
  readonly expectsContinue: boolean;
  endpoint: UpstreamEndpoint | undefined;
  retries: number;
  subject: string | null;
  consumer: string | null;
  reason: string | null;
}


function pathOnly(url: string | undefined): string {
  if (url === undefined) return '';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

/** Answers from the gateway before forwarding, remembering why for the access log. */
function refuse(res: ServerResponse, log: ExchangeLog, code: ErrorCode, message?: string, extras?: ErrorExtras): number {
  log.reason ??= extras?.reason ?? code;
  return sendError(res, code, log.requestId, message, { ...extras, close: log.bodyUnread });
}

/** Size of the request head as received: request line plus every header line. */
function headerBytes(req: IncomingMessage): number {
  let total = (req.method?.length ?? 0) + (req.url?.length ?? 0) + 12;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i++) total += (raw[i]?.length ?? 0) + 2;
  return total;
}

/** Full jitter, as for Consul watches; cut short when the client leaves or the deadline passes. */
function backoffDelay(retry: CompiledRoute['retry'], attempt: number, aborter: EventEmitter): Promise<void> {
  const ceiling = Math.min(retry.backoffMaxMs, retry.backoffBaseMs * 2 ** attempt);
  const ms = Math.random() * ceiling;
  if (ms < 1) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      aborter.off('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    aborter.once('abort', done);
  });
}

/**
 * Streams the upstream body to the client and resolves when either side is done. Hand-rolled
 * rather than `stream.pipeline`, which allocates an AbortController (and a DOMException) per call:
 * about a tenth of the proxy's CPU in profiles. A broken side destroys the other.
 */
function relay(body: Readable, res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      if (!res.writableFinished) res.destroy();
      if (!body.destroyed && !body.readableEnded) body.destroy();
      resolve();
    };
    body.once('error', done);
    res.once('close', done);
    body.pipe(res);
  });
}

function upstreamPath(route: CompiledRoute, path: string): string {
  if (!route.strip || !path.startsWith(route.strip)) return path;
  const rest = path.slice(route.strip.length);
  return rest.startsWith('/') ? rest : `/${rest}`;
}

/** Responses not yet finished, per connection, so one 'close' listener serves them all. */
const pendingBySocket = new WeakMap<Socket, Set<ServerResponse>>();

/**
 * Node emits no 'close' on a response queued behind another (pipelining) when the connection
 * closes. Everything that waits for a request to end listens for it (the in-flight count, client
 * gone, relay), so without this such a request would count against its endpoint for ever.
 */
function closeWithSocket(socket: Socket, res: ServerResponse): void {
  let pending = pendingBySocket.get(socket);
  if (!pending) {
    const set = new Set<ServerResponse>();
    pending = set;
    pendingBySocket.set(socket, set);
    socket.once('close', () => {
      for (const r of [...set]) if (!r.writableFinished) r.emit('close');
      set.clear();
    });
  }
  pending.add(res);
  res.once('close', () => pending.delete(res));
}
