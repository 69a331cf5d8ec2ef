import { Pool } from 'undici';

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

  constructor(
    /** The endpoint (`address:port`, or `https://host:port`): outlier state and logs use it. */
    readonly key: string,
    readonly origin: string,
    options: UpstreamPoolOptions,
    /** The key, plus the connect timeout when it is not the default: one pool per combination. */
    readonly poolId: string = key,
  ) {
    this.cap = options.connectionsPerEndpoint;
    this.pool = new Pool(origin, {
      connections: options.connectionsPerEndpoint,
      connectTimeout: options.connectTimeoutMs,
      keepAliveTimeout: 4_000,
      keepAliveMaxTimeout: 60_000,
      pipelining: 1,
    });
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
      void endpoint.pool
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
        ...[...this.closing].map((e) => e.pool.close().catch(() => undefined)),
        new Promise((resolve) => setTimeout(resolve, Math.max(1, deadline - Date.now())).unref()),
      ]);
    }
    await Promise.allSettled([...this.closing].map((e) => e.pool.destroy()));
  }
}
