import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import { describeError } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { CompiledMirror, CompiledRoute, MirrorOutcome, UpstreamEndpoint } from '../runtime/runtime.ts';
import type { PreparedBody } from './body.ts';
import type { Exchange } from './pipeline.ts';

/**
 * Set on every shadow request, so the shadow can tell a copy from a client's request. A client
 * cannot send it to a primary: every incoming `x-cgw-*` header is dropped (headers.ts).
 */
export const MIRROR_HEADER = 'x-cgw-mirror';

/**
 * The process-wide cap on shadow requests in flight (`--mirror-max-in-flight`). Beyond it a
 * sampled request is not copied (dropped_cap): a shadow target that hangs holds at most this many
 * requests, timers and connections, however busy the gateway is.
 */
export class MirrorGate {
  private inFlight = 0;

  constructor(
    readonly max: number,
    private readonly gauge: Metrics['mirrorInFlight'],
  ) {}

  get size(): number {
    return this.inFlight;
  }

  tryEnter(): boolean {
    if (this.inFlight >= this.max) return false;
    this.inFlight += 1;
    this.gauge.inc();
    return true;
  }

  leave(): void {
    this.inFlight -= 1;
    this.gauge.dec();
  }
}

/**
 * Copies an admitted request to the route's shadow target when it is sampled, after the primary
 * was dispatched. Nothing here is awaited, and nothing of the shadow (status, headers, body,
 * timing, errors) reaches the client: its answer is read and dropped, failures are counted.
 * Shadows are never retried and never feed outlier detection, the breaker, the retry budget or a
 * rate limit: they are none of the primary's business.
 */
export function mirrorRequest(ex: Exchange, route: CompiledRoute, mirror: CompiledMirror, prepared: PreparedBody | null): void {
  if (!mirror.sampled()) return;
  const body = prepared?.body ?? null;
  // A streamed body is read once, by the primary; copying it would mean holding it whole.
  if (body !== null && (!Buffer.isBuffer(body) || body.length > mirror.maxBodyBytes)) return mirror.count('skipped_body');
  const endpoint = mirror.pick();
  if (endpoint === undefined) return mirror.count('no_target');
  const gate = ex.ctx.mirrors;
  if (!gate.tryEnter()) return mirror.count('dropped_cap');
  const target = ex.target as NonNullable<Exchange['target']>;
  // The head the primary was sent (hop-by-hop fields out, X-Forwarded-*, identity), built afresh
  // so a retry of the primary changing its copy cannot touch this one.
  const headers = ex.upstreamHeaders(route);
  headers[MIRROR_HEADER] = '1';
  if (route.upstreamHost === 'dst') headers.host = endpoint.authority;
  const options: Dispatcher.DispatchOptions & { servername?: string | undefined } = {
    method: (ex.req.method ?? 'GET') as Dispatcher.HttpMethod,
    path: route.upstreamPath(target.path) + target.query,
    headers,
    body,
    // Backstops only: the shadow's own timer bounds the whole request.
    headersTimeout: mirror.timeoutMs,
    bodyTimeout: mirror.timeoutMs,
    servername: endpoint.tlsRequestName,
  };
  new ShadowRequest(mirror, gate, endpoint, ex.ctx.logger, ex.requestId).send(options);
}

/** One shadow request: undici's dispatch handler (the callback interface forward.ts uses too). */
class ShadowRequest implements Dispatcher.DispatchHandler {
  private readonly started = performance.now();
  private timer: NodeJS.Timeout | undefined;
  private abort: ((err?: Error) => void) | null = null;
  private status = 0;
  private timedOut = false;
  private done = false;

  constructor(
    private readonly mirror: CompiledMirror,
    private readonly gate: MirrorGate,
    private readonly endpoint: UpstreamEndpoint,
    private readonly logger: Logger,
    private readonly requestId: string,
  ) {}

  send(options: Dispatcher.DispatchOptions): void {
    this.mirror.count('sent');
    this.timer = setTimeout(onShadowTimeout, this.mirror.timeoutMs, this);
    // A shadow in flight must not keep a draining process alive.
    this.timer.unref();
    try {
      this.endpoint.shadowDispatcher().dispatch(options, this);
    } catch (err) {
      this.onError(err as Error);
    }
  }

  timeoutReached(): void {
    this.timedOut = true;
    if (this.abort !== null) return this.abort();
    // Not on a connection yet (still connecting): counted now; onConnect aborts it when it comes.
    this.finish('timeout');
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abort = abort;
    if (this.timedOut) abort();
  }

  onHeaders(status: number): boolean {
    if (status >= 200) this.status = status;
    return true;
  }

  onData(): boolean {
    return true;
  }

  onComplete(): void {
    this.mirror.observeDuration((performance.now() - this.started) / 1000);
    this.finish(this.status >= 500 ? 'status_5xx' : 'ok');
  }

  onError(err: Error): void {
    if (!this.timedOut && !this.done) this.logger.debug({ requestId: this.requestId, endpoint: this.endpoint.key, target: this.mirror.target, err: describeError(err) }, 'shadow request failed');
    this.finish(this.timedOut ? 'timeout' : 'error');
  }

  private finish(outcome: MirrorOutcome): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    this.gate.leave();
    this.mirror.count(outcome);
  }
}

function onShadowTimeout(shadow: ShadowRequest): void {
  shadow.timeoutReached();
}
