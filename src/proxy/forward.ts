import type { ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import { describeError } from '../core/errors.ts';
import type { CompiledMirror, CompiledRoute, UpstreamEndpoint } from '../runtime/runtime.ts';
import { isRetryableMethod, type BodyState, type PreparedBody } from './body.ts';
import { classifyFailure } from './errors.ts';
import { grpcStatusLabel, parseGrpcTimeout, splitTrailersOnly, trailersOf } from './grpc.ts';
import { responseHeaderList } from './headers.ts';
import { requestedSubset } from './sticky.ts';
import type { Exchange } from './pipeline.ts';
import { mirrorRequest } from './mirror.ts';

/**
 * undici runs headersTimeout on its "fast timers", which tick every ~500 ms: a 200 ms timeout
 * fires after 500-1000 ms. Below this, the forward step keeps its own native timer per attempt so
 * short policy timeouts hold; above it undici's error (< 1 s) is under 10 % and costs no timer.
 * The native timer starts when the attempt is dispatched, so it also bounds a new connection's
 * connect (a connect slower than the timeout counts as a timeout, not a connect failure).
 */
const PRECISE_HEADERS_TIMEOUT_BELOW_MS = 10_000;

const NO_BODY_STATE: BodyState = { tooLarge: false, idle: false, broken: false };

/** Where a response's Forwarding is found by the shared 'close' and 'drain' listeners. */
const FORWARDING = Symbol('cgw.forwarding');
type TaggedResponse = ServerResponse & { [FORWARDING]?: Forwarding };

/**
 * Forwards an admitted request: picks an endpoint below its request cap, dispatches through the
 * endpoint's undici pool with this object as the dispatch handler (callbacks, no per-chunk
 * promise, the response streamed straight into the client's response), retries on another
 * endpoint when the route allows it, and ends the exchange with the status sent.
 */
export function forward(ex: Exchange, route: CompiledRoute, prepared: PreparedBody | null, probe: number): void {
  // X-Canary wins, then a rollout's targeted consumers, then the subset a sticky client holds.
  const targeted = ex.ctx.rollouts.size > 0 && ex.req.headers['x-canary'] === undefined ? targetedCanary(ex, route) : undefined;
  const canary = targeted ?? requestedSubset(ex, route);
  let endpoint = route.balancer.pick(canary);
  if (!endpoint) {
    route.resilience.breaker.release(probe);
    return ex.refuse('no_healthy_upstream', `service "${route.service}" has no healthy endpoint`);
  }
  if (endpoint.saturated) {
    // Never queue behind a full endpoint without a deadline: another one, or a clear 503 now.
    endpoint = route.balancer.pickUnsaturated(canary);
    if (!endpoint) {
      route.resilience.breaker.release(probe);
      ex.ctx.limits.endpointsBusy(route.service);
      return ex.refuse('upstream_busy', `every endpoint of service "${route.service}" is at its limit of concurrent requests; retry shortly`, { headers: { 'retry-after': '1' } });
    }
  }
  let deadlineMs = route.requestTimeoutMs;
  let clientDeadline = false;
  if (ex.grpc) {
    const grpcTimeout = parseGrpcTimeout(ex.req.headers['grpc-timeout']);
    if (grpcTimeout === 'invalid') {
      route.resilience.breaker.release(probe);
      return ex.refuse('bad_request', 'grpc-timeout is not 1-8 digits and a unit (H, M, S, m, u, n)');
    }
    // The call's own deadline (PROTOCOL-HTTP2.md): the upstream attempt is cut there and the
    // client told DEADLINE_EXCEEDED, unless the route's request timeout comes first.
    if (grpcTimeout !== undefined && (deadlineMs === null || grpcTimeout < deadlineMs)) {
      deadlineMs = grpcTimeout;
      clientDeadline = true;
    }
  }
  new Forwarding(ex, route, prepared, probe, canary, endpoint, deadlineMs, clientDeadline).start();
  if (route.mirror !== null) shadow(ex, route, route.mirror, prepared);
}

/** The shadow copy, after the primary is on its way; a bug in it must not reach the client. */
function shadow(ex: Exchange, route: CompiledRoute, mirror: CompiledMirror, prepared: PreparedBody | null): void {
  try {
    mirrorRequest(ex, route, mirror, prepared);
  } catch (err) {
    ex.ctx.metrics.internalErrors.inc({ component: 'proxy' });
    ex.ctx.logger.error({ err, requestId: ex.requestId }, 'unexpected error while mirroring a request');
  }
}

/** A rollout's `--consumers` get the canary before any share of general traffic. */
function targetedCanary(ex: Exchange, route: CompiledRoute): string | undefined {
  const identity = ex.identity;
  if (!identity) return undefined;
  return ex.ctx.rollouts.tap(route.service)?.targetFor(identity.consumer, identity.subject);
}

type Outcome = 'success' | 'failure' | 'none';

/**
 * The state of one forwarded request across its attempts, and undici's dispatch handler for each
 * attempt (the legacy callback interface, which undici calls directly without a wrapper).
 */
class Forwarding implements Dispatcher.DispatchHandler {
  private readonly res: TaggedResponse;
  private readonly body: PreparedBody['body'];
  private readonly bodyState: BodyState;
  private readonly maxAttempts: number;
  private readonly options: Dispatcher.DispatchOptions;
  /** A gRPC trailers-only answer: its status fields, sent as trailers when the response ends. */
  private grpcTrailers: Record<string, string> | null = null;
  private attempt = 0;
  private abort: ((err?: Error) => void) | null = null;
  /** The response head went to the client: from here a failure can only cut the connection. */
  private streaming = false;
  /** A retryable status arrived: its body is read and dropped, then `next` is tried. */
  private discarding: UpstreamEndpoint | null = null;
  private resume: (() => void) | null = null;
  private headersTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  private backoffTimer: NodeJS.Timeout | undefined;
  /** The cache answers instead of this response (a 304 that revalidated its stale entry). */
  private takenOver = false;
  private headersTimedOut = false;
  private timedOut = false;
  private clientGone = false;
  private finished = false;

  constructor(
    private readonly ex: Exchange,
    private readonly route: CompiledRoute,
    prepared: PreparedBody | null,
    private readonly probe: number,
    private readonly canary: string | undefined,
    private endpoint: UpstreamEndpoint,
    /** The whole exchange (the route's request timeout, or a gRPC call's deadline); null: none. */
    private readonly deadlineMs: number | null,
    /**
     * The deadline is the client's (grpc-timeout): reaching it says nothing about the upstream, so
     * it is not held against the endpoint (outlier detection) or the service (breaker); otherwise
     * a client sending tiny deadlines could eject every healthy endpoint.
     */
    private readonly clientDeadline: boolean = false,
  ) {
    this.res = ex.res;
    this.body = prepared?.body ?? null;
    this.bodyState = prepared?.state ?? NO_BODY_STATE;
    const method = ex.req.method ?? 'GET';
    const { retry } = route;
    // gRPC calls are never retried here: their bodies stream (body.ts), so a retry would replay a
    // call the upstream may have acted on; gRPC clients retry by their own service config.
    this.maxAttempts = route.grpc ? 1 : 1 + (isRetryableMethod(method, retry.nonIdempotent) && (prepared?.replayable ?? true) ? retry.attempts : 0);
    const target = ex.target as NonNullable<Exchange['target']>;
    // `host=dst` is set per attempt in dispatch(), since a retry may go to another endpoint.
    const headers = ex.upstreamHeaders(route);
    // RFC 9113 §8.2.2 allows `te: trailers` on HTTP/2, and gRPC requires it (PROTOCOL-HTTP2.md).
    if (route.grpc) headers.te = 'trailers';
    this.options = {
      method: method as Dispatcher.HttpMethod,
      path: route.upstreamPath(target.path) + target.query,
      headers,
      body: this.body,
      headersTimeout: route.responseHeadersTimeoutMs,
      bodyTimeout: route.responseHeadersTimeoutMs,
    };
  }

  start(): void {
    const { res, route } = this;
    res[FORWARDING] = this;
    res.once('close', onResponseClose);
    if (this.deadlineMs !== null) {
      this.deadlineTimer = setTimeout(onDeadline, Math.max(0, this.ex.started + this.deadlineMs - performance.now()), this);
    }
    route.retry.budget.recordRequest();
    this.dispatch();
  }

  private dispatch(): void {
    const endpoint = this.endpoint;
    this.ex.endpoint = endpoint;
    const dispatcher = endpoint.dispatcherFor(this.route.proto);
    // undici reads it (core/request.js) though its DispatchOptions type does not list it.
    (this.options as { servername?: string | undefined }).servername = endpoint.tlsRequestName;
    endpoint.inflight += 1;
    this.abort = null;
    if (this.route.upstreamHost === 'dst') (this.options.headers as Record<string, string>).host = endpoint.authority;
    this.headersTimedOut = false;
    if (this.route.responseHeadersTimeoutMs < PRECISE_HEADERS_TIMEOUT_BELOW_MS) {
      this.headersTimer = setTimeout(onHeadersTimer, this.route.responseHeadersTimeoutMs, this);
    }
    try {
      dispatcher.dispatch(this.options, this);
    } catch (err) {
      this.onError(err as Error);
    }
  }

  // ---- undici's dispatch handler -------------------------------------------------------------

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort;
    if (this.clientGone || this.timedOut || this.headersTimedOut) abort();
  }

  onHeaders(status: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (status < 200) return true; // 1xx: informational, the real answer follows
    clearTimeout(this.headersTimer);
    const { route, endpoint } = this;
    const { outlier } = route.resilience;
    outlier.record(endpoint.key, outlier.isFailureStatus(status) ? 'failure' : 'success');
    if (route.retry.statuses.has(status) && this.attempt + 1 < this.maxAttempts) {
      const next = this.retryTarget(`status ${status}`);
      if (next) {
        this.discarding = next;
        return true;
      }
    }
    const { ex } = this;
    if (ex.responseTap?.takesOver(status, rawHeaders) === true) {
      this.takenOver = true;
      return true;
    }
    this.streaming = true;
    this.resume = resume;
    ex.responseTap?.onHead(status, rawHeaders);
    let head = responseHeaderList(rawHeaders, ex.requestId, ex.extraHeaders, !ex.http2 && ex.ctx.draining);
    if (route.grpc) {
      const split = splitTrailersOnly(head);
      if (split) {
        head = split.head;
        this.grpcTrailers = split.trailers;
      }
    }
    this.res.writeHead(status, head);
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.discarding !== null || this.takenOver) return true;
    // Before the client check: a response the upstream completes is stored whole even if the client left.
    this.ex.responseTap?.onData(chunk);
    if (this.clientGone) return true;
    if (this.res.write(chunk)) return true;
    this.res.once('drain', onResponseDrain);
    return false;
  }

  onComplete(trailers?: unknown): void {
    clearTimeout(this.headersTimer);
    this.endpoint.inflight -= 1;
    const next = this.discarding;
    if (next !== null) {
      this.discarding = null;
      return this.retryOn(next);
    }
    const tap = this.ex.responseTap;
    if (this.takenOver && tap !== null) return this.finish(tap.answerInstead(), 'success');
    if (this.route.grpc) this.passTrailers(trailers);
    tap?.onComplete();
    this.res.end();
    const status = this.res.statusCode;
    this.finish(status, this.route.resilience.breaker.isFailureStatus(status) ? 'failure' : 'success');
  }

  onError(err: Error): void {
    clearTimeout(this.headersTimer);
    this.endpoint.inflight -= 1;
    const { route, ex, bodyState } = this;
    if (this.streaming) {
      if (ex.grpc && !this.clientGone) {
        // Messages may be out, but a gRPC call ends with its status in the trailers: say why.
        const code = this.timedOut ? 'upstream_timeout' : 'upstream_error';
        ex.answerError(code, this.timedOut ? `deadline of ${this.deadlineMs ?? 0} ms exceeded` : `upstream failed mid-call: ${describeError(err)}`);
        return this.finish(this.res.statusCode, this.timedOut && this.clientDeadline ? 'none' : 'failure');
      }
      // The head is out: nothing to answer, the client sees a cut response.
      this.res.destroy();
      return this.finish(this.res.statusCode, this.clientGone ? 'none' : 'failure');
    }
    this.discarding = null;
    // The client's own stream failed (too large, idle, cut): its fault, not the upstream's.
    if (bodyState.tooLarge) {
      route.countSizeRejection('body');
      return this.refuse('payload_too_large', `request body exceeds ${route.maxBodyBytes ?? 0} bytes`);
    }
    if (bodyState.idle) return this.refuse('request_timeout', `the request body paused for more than ${ex.ctx.bodyTimeoutMs} ms`);
    if (bodyState.broken || (this.clientGone && !this.timedOut)) return this.finish(499, 'none');
    const failure = this.headersTimedOut ? ({ kind: 'timeout', code: 'upstream_timeout' } as const) : classifyFailure(err);
    if (failure.kind === 'local') {
      // undici refused the request itself (nothing was sent): the request's fault, not the upstream's.
      return this.refuse('bad_request', `the request cannot be forwarded: ${describeError(err)}`);
    }
    if (failure.kind === 'timeout' && this.body !== null && !Buffer.isBuffer(this.body) && !ex.req.complete) {
      // Still waiting for the client's body: the upstream is not slow, the client is.
      return this.refuse('request_timeout', 'the request body did not arrive in time');
    }
    if (this.timedOut && this.clientDeadline) return this.timeout();
    route.resilience.outlier.record(this.endpoint.key, 'failure');
    if (this.timedOut) return this.timeout();
    const { retry } = route;
    const { kind } = failure;
    const allowed = kind === 'connect-failure' ? retry.onConnectFailure : kind === 'reset' ? retry.onReset : kind === 'timeout' ? retry.onTimeout : false;
    if (allowed && this.attempt + 1 < this.maxAttempts) {
      const next = this.retryTarget(describeError(err));
      if (next) return this.retryOn(next);
    }
    ex.ctx.logger.warn({ requestId: ex.requestId, endpoint: this.endpoint.key, service: route.service, err: describeError(err) }, 'upstream request failed');
    this.finish(ex.answerError(failure.code, failure.message), 'failure');
  }

  // ---- retries, timers, the client leaving ---------------------------------------------------

  /** Another endpoint for a retry, if the budget allows one; undefined means answer with what we have. */
  private retryTarget(why: string): UpstreamEndpoint | undefined {
    const { route, endpoint: failed, ex } = this;
    let next = route.balancer.pick(this.canary, failed);
    if (next?.saturated) next = route.balancer.pickUnsaturated(this.canary, failed);
    if (!next || next === failed) return undefined;
    if (!route.retry.budget.tryRetry()) {
      ex.ctx.metrics.retryBudgetExhausted.inc({ service: route.service });
      return undefined;
    }
    ex.ctx.metrics.upstreamRetries.inc({ service: route.service });
    ex.ctx.logger.warn({ requestId: ex.requestId, endpoint: failed.key, retryOn: next.key, why }, 'retrying on another endpoint');
    return next;
  }

  /** Full jitter, as for Consul watches; cut short when the client leaves or the deadline passes. */
  private retryOn(next: UpstreamEndpoint): void {
    if (this.clientGone) return this.finish(499, 'none');
    if (this.timedOut) return this.timeout();
    const { retry } = this.route;
    const ceiling = Math.min(retry.backoffMaxMs, retry.backoffBaseMs * 2 ** this.attempt);
    this.attempt += 1;
    this.ex.retries += 1;
    this.endpoint = next;
    const ms = Math.random() * ceiling;
    if (ms < 1) this.dispatch();
    else this.backoffTimer = setTimeout(onBackoffOver, ms, this);
  }

  backoffOver(): void {
    this.backoffTimer = undefined;
    if (this.clientGone) return this.finish(499, 'none');
    if (this.timedOut) return this.timeout();
    this.dispatch();
  }

  headersTimerFired(): void {
    this.headersTimedOut = true;
    this.abort?.();
  }

  deadlinePassed(): void {
    this.timedOut = true;
    if (this.backoffTimer !== undefined) {
      clearTimeout(this.backoffTimer);
      this.backoffTimer = undefined;
      return this.timeout();
    }
    this.abort?.();
  }

  responseClosed(): void {
    // node:http2's compatibility response reads writableFinished true once its stream closed, also
    // when the client reset it; there the question is whether we ended the answer.
    if (this.finished || (this.ex.http2 ? this.res.writableEnded : this.res.writableFinished)) return;
    this.clientGone = true;
    if (this.backoffTimer !== undefined) {
      clearTimeout(this.backoffTimer);
      this.backoffTimer = undefined;
      return this.finish(499, 'none');
    }
    this.abort?.();
  }

  responseDrained(): void {
    this.resume?.();
  }

  private timeout(): void {
    const { ex, route } = this;
    ex.ctx.logger.warn({ requestId: ex.requestId, service: route.service, timeoutMs: this.deadlineMs }, 'request timeout reached');
    const message = this.clientDeadline ? `deadline of ${this.deadlineMs ?? 0} ms (grpc-timeout) exceeded` : `no complete answer within ${this.deadlineMs ?? 0} ms`;
    this.finish(ex.answerError('upstream_timeout', message), this.clientDeadline ? 'none' : 'failure');
  }

  private refuse(code: Parameters<Exchange['refuse']>[0], message: string): void {
    this.ex.reason ??= code;
    // Refused while the body streams: on HTTP/1.1 its rest cannot be told from a next request.
    this.finish(this.ex.answerError(code, message, { close: true }), 'none');
  }

  /** A gRPC call's trailers (or the status of a trailers-only answer) go to the client intact. */
  private passTrailers(raw: unknown): void {
    const { trailers, grpcStatus } = trailersOf(raw);
    const own = this.grpcTrailers;
    if (own) for (const name in own) trailers[name] ??= own[name] as string;
    const status = grpcStatus ?? own?.['grpc-status'];
    this.ex.grpcStatus = status === undefined ? null : grpcStatusLabel(status);
    let any = false;
    for (const _ in trailers) {
      any = true;
      break;
    }
    if (any) this.res.addTrailers(trailers);
  }

  /** Every permit ends in exactly one record or release, or a half-open breaker waits forever. */
  private finish(status: number, outcome: Outcome): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.headersTimer);
    clearTimeout(this.deadlineTimer);
    clearTimeout(this.backoffTimer);
    this.res.off('close', onResponseClose);
    const { breaker } = this.route.resilience;
    if (outcome === 'none') breaker.release(this.probe);
    else breaker.record(outcome, this.probe);
    this.ex.finish(status);
  }
}

// Shared listeners and timer callbacks: they find their Forwarding through the response or the
// timer argument, so a request allocates no closure for them.
function onResponseClose(this: TaggedResponse): void {
  this[FORWARDING]?.responseClosed();
}
function onResponseDrain(this: TaggedResponse): void {
  this[FORWARDING]?.responseDrained();
}
function onHeadersTimer(f: Forwarding): void {
  f.headersTimerFired();
}
function onDeadline(f: Forwarding): void {
  f.deadlinePassed();
}
function onBackoffOver(f: Forwarding): void {
  f.backoffOver();
}
