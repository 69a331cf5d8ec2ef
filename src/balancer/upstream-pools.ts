import { Client, H2CClient, Pool, type Dispatcher } from 'undici';
import type { UpstreamProto } from '../state/tags.ts';

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
  private readonly connectTimeoutMs: number;

  constructor(
    /** The endpoint (`address:port`, or `https://host:port`): outlier state and logs use it. */
    readonly key: string,
    readonly origin: string,
    options: UpstreamPoolOptions,
    /** The key, plus the connect timeout when it is not the default: one pool per combination. */
    readonly poolId: string = key,
  ) {
    this.cap = options.connectionsPerEndpoint;
    this.connectTimeoutMs = options.connectTimeoutMs;
    this.tlsName = new URL(origin).hostname.replace(/^\[|\]$/g, '');
    this.pool = new Pool(origin, {
      connections: options.connectionsPerEndpoint,
      connectTimeout: options.connectTimeoutMs,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
      pipelining: 1,
    });
  }

  /**
   * The name a TLS upstream's certificate must carry: its address (a name, or an IP literal,
   * checked against the certificate's IP addresses), never the client's Host, which undici would
   * otherwise use for SNI and verification.
   */
  readonly tlsName: string;

  /** The other ways this endpoint is dialled (route `proto=`), made on first use. */
  private readonly others = new Map<Exclude<UpstreamProto, 'http'>, Dispatcher>();

  /**
   * The dispatcher for a route's `proto=`. `http` is the pool (whose origin is https for a static
   * https upstream). `grpc` and `grpcs` are one HTTP/2 connection each (gRPC multiplexes its calls
   * on one connection, and HTTP/2 alone carries its trailers), with at most `cap` streams, so the
   * request cap holds as for the pool: undici's H2CClient speaks prior-knowledge h2c as gRPC
   * servers without TLS expect, and `allowH2` negotiates h2 by ALPN over TLS. undici rather than
   * node:http2 sessions: the forward step keeps one dispatch handler for every protocol, and
   * undici already reconnects, honours the peer's SETTINGS_MAX_CONCURRENT_STREAMS and times out.
   */
  dispatcherFor(proto: UpstreamProto): Dispatcher {
    if (proto === 'http') return this.pool;
    let dispatcher = this.others.get(proto);
    if (!dispatcher) {
      const host = this.origin.replace(/^[a-z]+:\/\//, '');
      const common = { connectTimeout: this.connectTimeoutMs, keepAliveTimeout: 4_000, keepAliveMaxTimeout: 60_000 };
      const streams = { maxConcurrentStreams: this.cap, pipelining: this.cap };
      dispatcher =
        proto === 'https'
          ? new Pool(`https://${host}`, { ...common, connections: this.cap, pipelining: 1 })
          : proto === 'grpc'
            ? new H2CClient(`http://${host}`, { ...common, ...streams })
            : new Client(`https://${host}`, { ...common, ...streams, allowH2: true });
      this.others.set(proto, dispatcher);
    }
    return dispatcher;
  }

  /** Lets requests in flight finish, then closes every connection of this endpoint. */
  async close(): Promise<void> {
    await Promise.all([this.pool.close(), ...[...this.others.values()].map((d) => d.close())]);
  }

  async destroy(): Promise<void> {
    await Promise.all([this.pool.destroy(), ...[...this.others.values()].map((d) => d.destroy())]);
  }

  /** At its cap: the next request must go elsewhere or be refused. */
  get saturated(): boolean {
    return this.inflight >= this.cap;
  }
}

export class UpstreamPools {
  private readonly endpoints = new Map<string, UpstreamEndpoint>();
  private readonly closing = new Set<UpstreamEndpoint>();

  constructor(private readonly options: UpstreamPoolOptions) {}

  get(
    target: { readonly key: string; readonly address: string; readonly port: number; readonly scheme?: 'https' | undefined },
    connectTimeoutMs: number = this.options.connectTimeoutMs,
  ): UpstreamEndpoint {
    const poolId = connectTimeoutMs === this.options.connectTimeoutMs ? target.key : `${target.key}~${connectTimeoutMs}ms`;
    let endpoint = this.endpoints.get(poolId);
    if (!endpoint) {
      const host = target.address.includes(':') ? `[${target.address}]` : target.address;
      endpoint = new UpstreamEndpoint(target.key, `${target.scheme ?? 'http'}://${host}:${target.port}`, { ...this.options, connectTimeoutMs }, poolId);
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
