import { ServerResponse, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { describeError } from '../core/errors.ts';
import type { CompiledRoute, UpstreamEndpoint } from '../runtime/runtime.ts';
import { classifyFailure } from './errors.ts';
import { responseHeaderList } from './headers.ts';
import { requestedSubset } from './sticky.ts';
import { Exchange, type PipelineContext } from './pipeline.ts';
import { classifyUpgrade } from './websocket-handshake.ts';
import type { WebSocketSessions } from './websocket-sessions.ts';

/**
 * Requests with `Upgrade:`. Node hands them over as a bare socket ('upgrade'); a response object
 * is put on that socket so the handshake runs through the same Exchange as any request (route,
 * held routes, head limits, authentication, authorization, rate limits, breaker) and every refusal
 * is the same JSON error. Only the last step differs: instead of forwarding over the endpoint's
 * pool, the endpoint is dialled on a connection of its own, the handshake sent, and on 101 the two
 * sockets are relayed (websocket-relay.ts). The connection is never reused for another request.
 *
 * Upgrades to anything but WebSocket (h2c, ...) are not switched: without a body the request is
 * served as a normal one (RFC 9110 §7.8 lets a server ignore Upgrade; the header is hop-by-hop
 * and never forwarded), with a body it is refused, since Node has stopped parsing the connection.
 */

/** Results of cgw_websocket_upgrades_total. */
type UpgradeResult = 'upgraded' | 'refused' | 'upstream_refused' | 'upstream_failed' | 'client_gone';

/**
 * An upgrade pipelined behind an answer still being written must wait for it (answers go out in
 * request order, and the socket has room for one response at a time). True when it waits:
 * `retry` runs once that answer is done.
 */
export function behindEarlierAnswer(socket: Socket, retry: () => void): boolean {
  const earlier = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (!earlier) return false;
  socket.on('error', ignore);
  earlier.once('finish', () => setImmediate(() => (socket.destroyed ? undefined : retry())));
  earlier.once('close', () => {
    if (!earlier.writableFinished) socket.destroy();
  });
  return true;
}

/** A response on an upgraded socket: answers close the connection, as Node no longer parses it. */
export function upgradeResponse(req: IncomingMessage, socket: Socket): ServerResponse {
  // Node took its own error listener off the socket at the upgrade: without one a reset would
  // end the process. An error destroys the socket, which ends whatever used it ('close').
  socket.on('error', ignore);
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket);
  // Node's server ends the socket after a response it owns; this one is ours to end. What the
  // client still sends (an unread body) is read and dropped so its FIN is seen, and a client
  // that never closes its side is cut after a while.
  res.once('finish', () => {
    socket.end();
    socket.resume();
    socket.setTimeout(LINGER_MS, () => socket.destroy());
  });
  return res;
}

/** How long a refused upgrade's connection may stay half-closed waiting for the client's FIN. */
const LINGER_MS = 5_000;

function ignore(): void {}

/** Runs an upgrade request through the pipeline (see the file comment). */
export function startUpgrade(ctx: PipelineContext, sessions: WebSocketSessions, req: IncomingMessage, res: ServerResponse, clientHead: Buffer): void {
  const kind = classifyUpgrade(req);
  if (kind.kind === 'other') {
    const ex = new Exchange(ctx, req, res, false);
    if (kind.hasBody) return ex.refuse('bad_request', `Upgrade to ${kind.protocols} is not supported; send the request without Upgrade`);
    return ex.start();
  }
  const attempt = new UpgradeAttempt(sessions, clientHead);
  const ex = new Exchange(ctx, req, res, false, (e, route, _body, probe) => attempt.dial(e, route, probe));
  attempt.watch(ex);
  if (kind.kind === 'invalid') return ex.refuse(kind.code, kind.message, { headers: kind.headers });
  // A new long-lived connection now would only be cut at the end of the drain.
  if (ctx.draining) return ex.refuse('shutting_down', undefined, { headers: { 'retry-after': '1' } });
  ex.start();
}

/** One WebSocket handshake from the client's request to the 101 (or the answer instead). */
class UpgradeAttempt {
  private result: UpgradeResult | null = null;
  private ex!: Exchange;
  private route!: CompiledRoute;
  private endpoint!: UpstreamEndpoint;
  private probe = 0;
  private request: ClientRequest | null = null;
  private timer: NodeJS.Timeout | undefined;
  /** The endpoint's in-flight count and the breaker permit are given back exactly once. */
  private settled = false;
  private readonly onClientGone = (): void => this.clientGone();

  constructor(
    private readonly sessions: WebSocketSessions,
    private readonly clientHead: Buffer,
  ) {}

  /** Counts the handshake once, whichever way it ends (gateway refusal, client gone, upstream). */
  watch(ex: Exchange): void {
    this.ex = ex;
    ex.res.once('finish', () => this.count('refused'));
    ex.res.once('close', () => this.count('client_gone'));
  }

  private count(result: UpgradeResult): void {
    if (this.result !== null) return;
    this.result = result;
    this.ex.ctx.metrics.websocketUpgrades.inc({ route: this.ex.route?.id ?? '', result });
  }

  /** The final step: an endpoint as for any request, then a connection of its own. */
  dial(ex: Exchange, route: CompiledRoute, probe: number): void {
    this.route = route;
    this.probe = probe;
    if (ex.req.socket.destroyed) {
      // Gone while authentication or the rate limiter was asked: no upstream connection for it.
      route.resilience.breaker.release(probe);
      this.count('client_gone');
      return ex.finish(499);
    }
    const canary = requestedSubset(ex, route);
    let endpoint = route.balancer.pick(canary);
    if (endpoint?.saturated) endpoint = route.balancer.pickUnsaturated(canary);
    if (!endpoint) {
      route.resilience.breaker.release(probe);
      if (route.balancer.healthy > 0) {
        ex.ctx.limits.endpointsBusy(route.service);
        return ex.refuse('upstream_busy', `every endpoint of service "${route.service}" is at its limit of concurrent requests; retry shortly`, { headers: { 'retry-after': '1' } });
      }
      return ex.refuse('no_healthy_upstream', `service "${route.service}" has no healthy endpoint`);
    }
    this.endpoint = endpoint;
    ex.endpoint = endpoint;
    // Counted while the handshake is in flight only: an open WebSocket uses no pool connection,
    // and counting it would let long-lived connections use up the endpoint's request cap.
    endpoint.inflight += 1;
    const target = ex.target as NonNullable<Exchange['target']>;
    const headers = ex.upstreamHeaders(route);
    if (route.upstreamHost === 'dst') headers.host = endpoint.authority;
    // Hop-by-hop, so removed above; the one upgrade the gateway relays is asked for again.
    headers.connection = 'Upgrade';
    headers.upgrade = 'websocket';
    const url = new URL(endpoint.origin);
    const options = {
      host: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
      port: Number(url.port) || (url.protocol === 'https:' ? 443 : 80),
      method: 'GET',
      path: route.upstreamPath(target.path) + target.query,
      headers,
      // A connection of its own: after the 101 it belongs to this WebSocket, not to a pool.
      agent: false as const,
      // TLS as the service's pool dials it: its verification, server name and trusted roots.
      ...(endpoint.tls
        ? {
            rejectUnauthorized: !endpoint.tls.skipVerify,
            ...(endpoint.tls.serverName !== undefined ? { servername: endpoint.tls.serverName } : {}),
            ...(endpoint.tls.ca !== undefined ? { ca: [...endpoint.tls.ca] } : {}),
          }
        : {}),
    };
    let request: ClientRequest;
    try {
      request = url.protocol === 'https:' ? httpsRequest(options) : httpRequest(options);
    } catch (err) {
      // Node refused the request before sending anything (a header it will not write): the
      // request's fault, not the endpoint's; the count and the permit go back.
      this.settled = true;
      endpoint.inflight -= 1;
      route.resilience.breaker.release(probe);
      return ex.refuse('bad_request', `the handshake cannot be forwarded: ${describeError(err)}`);
    }
    this.request = request;
    request.on('upgrade', (upRes: IncomingMessage, socket: Socket, head: Buffer) => this.upgraded(upRes, socket, head));
    request.on('response', (upRes: IncomingMessage) => this.answered(upRes));
    request.on('error', (err: Error) => this.failed(err));
    request.end();
    // The route's response timeout bounds the connect and the handshake answer, and the request
    // timeout, when set, the whole exchange as for any request.
    const left = route.requestTimeoutMs === null ? Infinity : ex.started + route.requestTimeoutMs - performance.now();
    this.timer = setTimeout(() => this.timedOut(), Math.max(0, Math.min(route.responseHeadersTimeoutMs, left)));
    ex.res.once('close', this.onClientGone);
  }

  /** Gives back the in-flight count and reports the outcome to the breaker and outlier detection. */
  private settle(outcome: 'success' | 'failure' | 'none'): boolean {
    if (this.settled) return false;
    this.settled = true;
    clearTimeout(this.timer);
    this.ex.res.off('close', this.onClientGone);
    this.endpoint.inflight -= 1;
    const { breaker, outlier } = this.route.resilience;
    if (outcome === 'none') breaker.release(this.probe);
    else {
      breaker.record(outcome, this.probe);
      outlier.record(this.endpoint.key, outcome);
    }
    return true;
  }

  private upgraded(upRes: IncomingMessage, upstream: Socket, upstreamHead: Buffer): void {
    if (!this.settle('success')) {
      upstream.destroy();
      return;
    }
    const { ex, route } = this;
    const client = ex.req.socket;
    upstream.on('error', ignore);
    if (client.destroyed) {
      upstream.destroy();
      this.count('client_gone');
      return ex.finish(499);
    }
    this.count('upgraded');
    // The response object served the refusals it did not need; the socket is the relay's now.
    ex.res.statusCode = 101;
    ex.res.detachSocket(client);
    client.write(switchingProtocols(upRes.rawHeaders, ex.requestId, ex.extraHeaders));
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const relay = this.sessions.relay({
      route: route.id,
      service: route.service,
      client,
      upstream,
      idleTimeoutMs: route.websocket.idleTimeoutMs,
      maxLifetimeMs: route.websocket.maxLifetimeMs,
    });
    relay.prime(this.clientHead, upstreamHead);
    ex.finish(101);
    // The request is over for the listener's in-flight count (Node's server does the same after
    // a response it owns: 'close' once the socket is detached).
    process.nextTick(() => ex.res.emit('close'));
  }

  /** The upstream answered without switching: that answer is the client's, as for any request. */
  private answered(upRes: IncomingMessage): void {
    const status = upRes.statusCode ?? 502;
    if (!this.settle(this.route.resilience.breaker.isFailureStatus(status) ? 'failure' : 'success')) {
      upRes.destroy();
      return;
    }
    const { ex, route } = this;
    this.count('upstream_refused');
    const raw = upRes.rawHeaders.map((h) => Buffer.from(h, 'latin1'));
    ex.res.writeHead(status, responseHeaderList(raw, ex.requestId, ex.extraHeaders, true));
    // The body is bounded like a forwarded one: a pause longer than the response timeout cuts it.
    upRes.socket?.setTimeout(route.responseHeadersTimeoutMs, () => upRes.destroy());
    upRes.on('error', () => ex.res.destroy());
    ex.res.once('close', () => upRes.destroy());
    ex.res.once('finish', () => ex.finish(status));
    upRes.pipe(ex.res);
  }

  private failed(err: Error): void {
    if (!this.settle(this.ex.res.destroyed ? 'none' : 'failure')) return;
    const { ex, route } = this;
    this.count('upstream_failed');
    const failure = classifyFailure(err);
    ex.ctx.logger.warn({ requestId: ex.requestId, endpoint: this.endpoint.key, service: route.service, err: describeError(err) }, 'WebSocket handshake with the upstream failed');
    ex.refuse(failure.code === 'bad_request' ? 'upstream_error' : failure.code, undefined);
  }

  private timedOut(): void {
    if (!this.settle('failure')) return;
    const { ex, route } = this;
    this.request?.destroy();
    this.count('upstream_failed');
    ex.ctx.logger.warn({ requestId: ex.requestId, endpoint: this.endpoint.key, service: route.service }, 'WebSocket handshake: the upstream did not answer in time');
    ex.refuse('upstream_timeout', `the upstream did not answer the WebSocket handshake within ${Math.round(Math.min(route.responseHeadersTimeoutMs, route.requestTimeoutMs ?? Infinity))} ms`);
  }

  private clientGone(): void {
    if (!this.settle('none')) return;
    this.request?.destroy();
    this.count('client_gone');
    this.ex.finish(499);
  }
}

/** Hop-by-hop fields the 101 does not pass on; Upgrade and Connection are what it is about. */
const NOT_IN_101 = new Set(['keep-alive', 'proxy-connection', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'content-length', 'x-request-id']);

/**
 * The 101 as the upstream sent it (Sec-WebSocket-Accept, -Protocol and -Extensions belong to the
 * two peers and pass unchanged), with the gateway's request id and rate-limit fields. Node's
 * parser has already refused CR and LF in the upstream's fields.
 */
function switchingProtocols(raw: readonly string[], requestId: string, own: readonly string[] | null): string {
  let head = 'HTTP/1.1 101 Switching Protocols\r\n';
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (NOT_IN_101.has(name.toLowerCase())) continue;
    head += `${name}: ${raw[i + 1] as string}\r\n`;
  }
  head += `x-request-id: ${requestId}\r\n`;
  if (own !== null) for (let i = 0; i + 1 < own.length; i += 2) head += `${own[i] as string}: ${own[i + 1] as string}\r\n`;
  return `${head}\r\n`;
}
