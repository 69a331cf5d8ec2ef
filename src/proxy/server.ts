import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../core/logger.ts';
import { listenOn } from '../core/net.ts';
import type { Metrics } from '../core/metrics.ts';
import { describeError, type ErrorCode } from '../core/errors.ts';
import type { CompiledRoute, Runtime, UpstreamEndpoint } from '../runtime/runtime.ts';
import { acceptableRequestId, clientResponseHeaders, upstreamRequestHeaders } from './headers.ts';
import { classifyUpstreamError, isRetryable, sendError } from './errors.ts';

export interface ProxyOptions {
  readonly runtime: () => Runtime | undefined;
  readonly responseTimeoutMs: number;
  /** One info line per request; off saves about a third of the proxy's CPU. */
  readonly accessLog: boolean;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
const DOT_SEGMENT = /(^|\/)(\.|%2e){1,2}(\/|$)/i;

/**
 * The data plane. One request is: read the runtime once, match, pick, forward, report. Nothing here
 * awaits Consul or builds configuration; everything it reads was compiled with the snapshot.
 */
export class ProxyServer {
  readonly server: Server;
  private draining = false;
  private inflight = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly options: ProxyOptions) {
    this.server = createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
      this.inflight += 1;
      res.once('close', () => {
        this.inflight -= 1;
        if (this.inflight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
      });
      this.handle(req, res).catch((err: unknown) => {
        // Nothing a single request does may end the process.
        this.options.logger.error({ err }, 'request handler failed');
        res.destroy();
      });
    });
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

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    // Read now: once a request body stream is destroyed (client hung up), req.socket is null.
    const clientIp = req.socket.remoteAddress ?? '';
    const requestId = acceptableRequestId(req.headers['x-request-id']) ?? randomUUID();
    res.setHeader('x-request-id', requestId);
    if (this.draining) res.setHeader('connection', 'close');

    let route: CompiledRoute | undefined;
    let endpoint: UpstreamEndpoint | undefined;
    let status = 0;
    let retried = false;
    try {
      const runtime = this.options.runtime();
      const target = requestTarget(req);
      if (!runtime) status = sendError(res, 'not_ready', requestId);
      else if (!target) status = sendError(res, 'bad_request', requestId, 'request target must be an absolute path without dot segments');
      else {
        route = runtime.router.match(target.host, target.path);
        if (!route) status = sendError(res, 'route_not_found', requestId);
        else {
          const outcome = await this.forward(req, res, route, target, requestId, clientIp);
          ({ status, endpoint, retried } = outcome);
        }
      }
    } catch (err) {
      this.options.logger.error({ err, requestId }, 'unexpected error in request pipeline');
      status = sendError(res, 'internal_error', requestId);
    }

    const seconds = (performance.now() - started) / 1000;
    if (route) {
      route.countResponse(status);
      route.observeDuration(seconds);
    }
    if (this.options.accessLog) {
      this.options.logger.info(
        {
          method: req.method,
          path: req.url,
          route: route?.id ?? null,
          service: route?.service ?? null,
          endpoint: endpoint?.key ?? null,
          status,
          durationMs: Math.round(seconds * 1e6) / 1000,
          requestId,
          client: clientIp,
          ...(retried ? { retried } : {}),
        },
        'access',
      );
    }
  }

  private async forward(
    req: IncomingMessage,
    res: ServerResponse,
    route: CompiledRoute,
    target: { path: string; query: string; host: string | undefined },
    requestId: string,
    clientIp: string,
  ): Promise<{ status: number; endpoint: UpstreamEndpoint | undefined; retried: boolean }> {
    const canaryHeader = req.headers['x-canary'];
    const canary = typeof canaryHeader === 'string' ? canaryHeader : undefined;
    let endpoint = route.balancer.pick(canary);
    if (!endpoint) return { status: sendError(res, 'no_healthy_upstream', requestId, `service "${route.service}" has no healthy endpoint`), endpoint, retried: false };

    const method = req.method ?? 'GET';
    const hasBody = req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0';
    const headers = upstreamRequestHeaders(req.headers, { requestId, clientIp, proto: 'http' });
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

    let retried = false;
    for (let attempt = 0; ; attempt++) {
      const attempted = endpoint;
      attempted.inflight += 1;
      try {
        const upstream = await endpoint.pool.request({
          method: method as 'GET',
          path,
          headers,
          body: hasBody ? req : null,
          signal: aborter,
          headersTimeout: this.options.responseTimeoutMs,
          bodyTimeout: this.options.responseTimeoutMs,
        });
        res.writeHead(upstream.statusCode, clientResponseHeaders(upstream.headers));
        await relay(upstream.body, res);
        return { status: upstream.statusCode, endpoint, retried };
      } catch (err) {
        if (clientGone) return { status: 499, endpoint, retried };
        // A refused connection never reached the application, and a reused keep-alive socket that
        // the upstream closed failed before any response: one more try elsewhere is safe for
        // idempotent requests whose body was not consumed.
        if (attempt === 0 && !hasBody && IDEMPOTENT.has(method) && isRetryable(err)) {
          const next = route.balancer.pick(canary, endpoint);
          if (next && next !== endpoint) {
            this.options.metrics.upstreamRetries.inc({ service: route.service });
            this.options.logger.warn({ requestId, endpoint: endpoint.key, retryOn: next.key, err: describeError(err) }, 'upstream failed before responding; retrying on another endpoint');
            endpoint = next;
            retried = true;
            continue;
          }
        }
        const code: ErrorCode = classifyUpstreamError(err);
        this.options.logger.warn({ requestId, endpoint: endpoint.key, service: route.service, err: describeError(err) }, 'upstream request failed');
        return { status: sendError(res, code, requestId), endpoint, retried };
      } finally {
        attempted.inflight -= 1;
      }
    }
  }
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

/** Splits the request target; rejects what no route should ever see. */
function requestTarget(req: IncomingMessage): { path: string; query: string; host: string | undefined } | undefined {
  let url = req.url ?? '';
  let host = req.headers.host;
  if (/^https?:\/\//i.test(url)) {
    try {
      const absolute = new URL(url);
      host = absolute.host;
      url = absolute.pathname + absolute.search;
    } catch {
      return undefined;
    }
  }
  if (!url.startsWith('/')) return undefined;
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  if (DOT_SEGMENT.test(path)) return undefined;
  return { path, query: q === -1 ? '' : url.slice(q), host };
}

function upstreamPath(route: CompiledRoute, path: string): string {
  if (!route.strip || !path.startsWith(route.strip)) return path;
  const rest = path.slice(route.strip.length);
  return rest.startsWith('/') ? rest : `/${rest}`;
}
