import { rootCertificates } from 'node:tls';
import { buildConnector, Client, H2CClient, Pool, type Dispatcher } from 'undici';
import type { RouteProto } from '../state/route-options.ts';

/**
 * One undici Pool per endpoint (`address:port`), shared by every service balancer that points at
 * it and kept across snapshots: a snapshot that changes one endpoint leaves the other pools, and
 * their keep-alive connections, untouched. Pools are closed gracefully (`Pool.close()` lets
 * requests in flight finish) once no snapshot references them.
 */
export interface UpstreamPoolOptions {
  readonly connectTimeoutMs: number;
  /** Per-endpoint connection cap; requests beyond it queue in the pool. */
  readonly connectionsPerEndpoint: number;
  /**
   * Connections of the endpoint's shadow (mirror) pool, made on first use: shadows never take the
   * connections counted for client requests. The proxy's in-flight cap on shadows is at most this,
   * so a shadow never waits in undici's queue.
   */
  readonly shadowConnectionsPerEndpoint?: number;
  /** `--upstream-ca`: PEM certificates trusted for https upstreams besides Node's built-in roots. */
  readonly upstreamCa?: string;
}

/** How one endpoint is dialled over TLS (EndpointSnapshot's fields). */
export interface UpstreamTls {
  readonly skipVerify: boolean;
  /** SNI and the name verified; absent: the address (Node sends no SNI for an IP address). */
  readonly serverName: string | undefined;
  /** Trusted roots: Node's plus `--upstream-ca`; undefined: Node's. */
  readonly ca: readonly string[] | undefined;
}

export class UpstreamEndpoint {
  /** Requests dispatched and not yet finished; the least-request picker reads it. */
  inflight = 0;
  readonly pool: Pool;
  /**
   * Concurrent requests allowed; the pool has exactly this many connections, so a request that is
   * let through always finds a free connection and never waits in undici's queue without a deadline.
   */
  readonly cap: number;
  /** `host:port` as dialled (`[v6]:port`): the Host header of fabio's `host=dst`. */
  readonly authority: string;
  private readonly connectTimeoutMs: number;
  /** How TLS is dialled (the pool's settings), for gRPC's HTTP/2 connection and WebSocket dials. */
  readonly tls: UpstreamTls | undefined;
  /**
   * For TLS endpoints, the `servername` every request dispatched here carries. undici takes a
   * request's server name from its Host header unless one is given, would then verify the
   * instance against the client's Host, and closes the connection whenever the name changes
   * between requests; one constant name per endpoint avoids both (tlsConnector dials the name
   * that counts).
   */
  readonly tlsRequestName: string | undefined;
  private readonly connector: buildConnector.connector | undefined;

  constructor(
    /** The endpoint (`address:port`, or `https://host:port`): outlier state and logs use it. */
    readonly key: string,
    readonly origin: string,
    options: UpstreamPoolOptions,
    /** The key, plus the connect timeout when it is not the default: one pool per combination. */
    readonly poolId: string = key,
    tls?: UpstreamTls,
  ) {
    this.cap = options.connectionsPerEndpoint;
    this.shadowConnections = Math.max(1, options.shadowConnectionsPerEndpoint ?? 16);
    const url = new URL(origin);
    this.authority = url.host;
    this.connectTimeoutMs = options.connectTimeoutMs;
    this.tls = tls;
    this.tlsRequestName = tls ? (tls.serverName ?? url.hostname) : undefined;
    this.connector = tls ? tlsConnector(tls, options.connectTimeoutMs) : undefined;
    this.pool = new Pool(origin, {
      ...(this.connector ? { connect: this.connector } : {}),
      connections: options.connectionsPerEndpoint,
      connectTimeout: options.connectTimeoutMs,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
      pipelining: 1,
    });
  }

  /** The HTTP/2 connection of gRPC routes (`proto=grpc|grpcs`), made on first use. */
  private h2: Dispatcher | undefined;
  /** The pool of shadow (mirror) requests, made on first use. */
  private shadow: Pool | undefined;
  private readonly shadowConnections: number;

  /**
   * Shadow requests to this endpoint go through a pool of their own (same TLS settings), so a
   * hanging shadow target holds shadow connections only and never the slots of client requests.
   */
  shadowDispatcher(): Dispatcher {
    this.shadow ??= new Pool(this.origin, {
      ...(this.connector ? { connect: this.connector } : {}),
      connections: this.shadowConnections,
      connectTimeout: this.connectTimeoutMs,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
      pipelining: 1,
    });
    return this.shadow;
  }

  /**
   * The dispatcher for a route's `proto=`. `http` and `https` are the pool: the service's tags
   * decide once how its instances are dialled (plain or TLS, verified or not), and the pool was
   * made that way. `grpc` and `grpcs` are one HTTP/2 connection (gRPC multiplexes its calls on one
   * connection, and HTTP/2 alone carries its trailers), with at most `cap` streams, so the request
   * cap holds as for the pool: undici's H2CClient speaks prior-knowledge h2c as gRPC servers
   * without TLS expect, and `allowH2` negotiates h2 by ALPN over TLS with the pool's TLS settings.
   * undici rather than node:http2 sessions: the forward step keeps one dispatch handler for every
   * protocol, and undici already reconnects, honours the peer's SETTINGS_MAX_CONCURRENT_STREAMS
   * and times out.
   */
  dispatcherFor(proto: RouteProto): Dispatcher {
    if (proto === 'http' || proto === 'https') return this.pool;
    if (!this.h2) {
      const host = this.origin.replace(/^[a-z]+:\/\//, '');
      const common = { connectTimeout: this.connectTimeoutMs, keepAliveTimeout: 4_000, keepAliveMaxTimeout: 60_000 };
      const streams = { maxConcurrentStreams: this.cap, pipelining: this.cap };
      const tls = this.tls;
      this.h2 =
        tls === undefined
          ? new H2CClient(`http://${host}`, { ...common, ...streams })
          : new Client(`https://${host}`, { ...common, ...streams, allowH2: true, connect: tlsConnector(tls, this.connectTimeoutMs, true) });
    }
    return this.h2;
  }

  /** Lets requests in flight finish, then closes every connection of this endpoint. */
  async close(): Promise<void> {
    await Promise.all([this.pool.close(), this.h2?.close(), this.shadow?.close()]);
  }

  async destroy(): Promise<void> {
    await Promise.all([this.pool.destroy(), this.h2?.destroy(), this.shadow?.destroy()]);
  }

  /** At its cap: the next request must go elsewhere or be refused. */
  get saturated(): boolean {
    return this.inflight >= this.cap;
  }
}

/**
 * A TLS dial verified against the endpoint itself: its `host=` name when the tags give one (sent
 * as SNI), else its address (no SNI for an IP, which Node then checks against the certificate's
 * IP SANs), whatever name a request carries.
 */
function tlsConnector(tls: UpstreamTls, timeoutMs: number, allowH2 = false): buildConnector.connector {
  const connect = buildConnector({
    timeout: timeoutMs,
    allowH2,
    rejectUnauthorized: !tls.skipVerify,
    ...(tls.serverName !== undefined ? { servername: tls.serverName } : {}),
    ...(tls.ca !== undefined ? { ca: [...tls.ca] } : {}),
  });
  return (options, callback) => connect({ ...options, servername: tls.serverName }, callback);
}

export class UpstreamPools {
  private readonly endpoints = new Map<string, UpstreamEndpoint>();
  private readonly closing = new Set<UpstreamEndpoint>();

  /** Node's roots plus `--upstream-ca`, built once (Node replaces its roots with any `ca` given). */
  private readonly trusted: readonly string[] | undefined;

  constructor(private readonly options: UpstreamPoolOptions) {
    this.trusted = options.upstreamCa ? [...rootCertificates, options.upstreamCa] : undefined;
  }

  get(
    target: {
      readonly key: string;
      readonly address: string;
      readonly port: number;
      readonly scheme?: 'https' | undefined;
      readonly tlsSkipVerify?: true | undefined;
      readonly serverName?: string | undefined;
    },
    connectTimeoutMs: number = this.options.connectTimeoutMs,
  ): UpstreamEndpoint {
    // https keys differ from http ones already (`https://...`); how TLS is checked is part of
    // the pool too, so a verified and an unverified route never share a connection.
    const tlsPart = target.scheme === 'https' && (target.tlsSkipVerify || target.serverName) ? `~tls:${target.tlsSkipVerify ? 'insecure' : 'verify'}:${target.serverName ?? ''}` : '';
    const timeoutPart = connectTimeoutMs === this.options.connectTimeoutMs ? '' : `~${connectTimeoutMs}ms`;
    const poolId = `${target.key}${tlsPart}${timeoutPart}`;
    let endpoint = this.endpoints.get(poolId);
    if (!endpoint) {
      const host = target.address.includes(':') ? `[${target.address}]` : target.address;
      const tls: UpstreamTls | undefined =
        target.scheme === 'https' ? { skipVerify: target.tlsSkipVerify === true, serverName: target.serverName, ca: this.trusted } : undefined;
      endpoint = new UpstreamEndpoint(target.key, `${target.scheme ?? 'http'}://${host}:${target.port}`, { ...this.options, connectTimeoutMs }, poolId, tls);
      this.endpoints.set(poolId, endpoint);
    }
    return endpoint;
  }

  peek(poolId: string): UpstreamEndpoint | undefined {
    return this.endpoints.get(poolId);
  }

  /** In-flight requests per endpoint key, over all its pools. */
  inflightByKey(): Map<string, number> {
    const out = new Map<string, number>();
    for (const endpoint of this.endpoints.values()) out.set(endpoint.key, (out.get(endpoint.key) ?? 0) + endpoint.inflight);
    return out;
  }

  /** In-flight requests to an endpoint, over all its pools. */
  inflight(key: string): number | undefined {
    let total: number | undefined;
    for (const endpoint of this.endpoints.values()) if (endpoint.key === key) total = (total ?? 0) + endpoint.inflight;
    return total;
  }

  /** Closes, after their in-flight requests, the pools whose id is no longer in `live`. */
  retain(live: ReadonlySet<string>): string[] {
    const removed: string[] = [];
    for (const key of this.endpoints.keys()) if (!live.has(key)) removed.push(key);
    return this.retire(removed);
  }

  /** Closes these pools after their in-flight requests (the caller knows nothing uses them). */
  retire(ids: Iterable<string>): string[] {
    const removed: string[] = [];
    for (const key of ids) {
      const endpoint = this.endpoints.get(key);
      if (!endpoint) continue;
      this.endpoints.delete(key);
      removed.push(key);
      this.closing.add(endpoint);
      void endpoint
        .close()
        .catch(() => undefined)
        .finally(() => this.closing.delete(endpoint));
    }
    return removed;
  }

  get size(): number {
    return this.endpoints.size;
  }

  /** Closes every pool gracefully; destroys those still busy after `graceMs`. */
  async closeAll(graceMs: number): Promise<void> {
    this.retain(new Set());
    const deadline = Date.now() + graceMs;
    while (this.closing.size > 0 && Date.now() < deadline) {
      await Promise.race([
        ...[...this.closing].map((e) => e.close().catch(() => undefined)),
        new Promise((resolve) => setTimeout(resolve, Math.max(1, deadline - Date.now())).unref()),
      ]);
    }
    await Promise.allSettled([...this.closing].map((e) => e.destroy()));
  }
}
