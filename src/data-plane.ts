import type { GatewayConfig } from './config.ts';
import { defaultMaxConnections, openFileLimit } from './core/limits.ts';
import type { Logger } from './core/logger.ts';
import type { Metrics } from './core/metrics.ts';
import { describeError } from './core/errors.ts';
import type { DataPlaneReport, EndpointHealthReport, ReportScope, ServiceHealthReport } from './core/types.ts';
import type { Snapshot } from './state/snapshot.ts';
import { UpstreamPools } from './balancer/upstream-pools.ts';
import { RuntimeHolder } from './runtime/runtime.ts';
import { ResilienceRegistry } from './resilience/registry.ts';
import { JwtKeyCache } from './filters/auth.ts';
import { RateLimiterBackend, type BackendState, type RedisOptions } from './filters/rate-limit.ts';
import { ProxyListener } from './proxy/listener.ts';

/** How long start waits for the first Redis connection; readiness must not hinge on Redis. */
const REDIS_FIRST_CONNECT_MS = 2_000;

function redisOptions(config: GatewayConfig): RedisOptions | undefined {
  if (config.redisCluster) return { cluster: config.redisCluster };
  if (config.redisSentinels) return { sentinels: config.redisSentinels, name: config.redisSentinelName };
  if (config.redis) return { url: config.redis };
  return undefined;
}

export type ApplyResult = { readonly ok: true } | { readonly ok: false; readonly error: string };

/**
 * The data plane's composition root: snapshot → bytes on the wire. It compiles each snapshot it is
 * given into a runtime (router, balancers, filters, resilience) and serves the proxy listener;
 * it never talks to Consul. One runs in the gateway process, or one in each worker.
 */
export class DataPlane {
  private readonly pools: UpstreamPools;
  private readonly runtime: RuntimeHolder;
  private readonly proxy: ProxyListener;
  private readonly keys: JwtKeyCache;
  private readonly limiter: RateLimiterBackend;
  private readonly resilience: ResilienceRegistry;
  port = 0;

  constructor(
    private readonly config: GatewayConfig,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
    /** Data planes that count rate limits on their own besides this one (workers): each takes its share. */
    shares = 1,
  ) {
    this.pools = new UpstreamPools({ connectTimeoutMs: config.connectTimeout, connectionsPerEndpoint: config.maxRequestsPerEndpoint });
    this.keys = new JwtKeyCache();
    this.limiter = new RateLimiterBackend({
      redis: redisOptions(config),
      local: { shares },
      logger,
      onStateChange: (state) => this.showLimiterState(state),
    });
    this.showLimiterState(this.limiter.state);
    this.resilience = new ResilienceRegistry(metrics, logger);
    this.runtime = new RuntimeHolder(
      {
        pools: this.pools,
        metrics,
        pickerKind: config.picker,
        keys: this.keys,
        limiter: this.limiter,
        resilience: this.resilience,
        responseTimeoutMs: config.responseTimeout,
        connectTimeoutMs: config.connectTimeout,
        logger,
      },
      logger,
    );
    this.proxy = new ProxyListener({
      runtime: () => this.runtime.current,
      maxHeaderSize: config.maxHeaderSize,
      maxHeaderCount: config.maxHeaderCount,
      maxConnections: config.maxConnections ?? defaultMaxConnections(openFileLimit()),
      clientHeaderTimeoutMs: config.clientHeaderTimeout,
      clientBodyTimeoutMs: config.clientBodyTimeout,
      requestBufferSize: config.requestBufferSize,
      accessLog: config.accessLog,
      logger,
      metrics,
    });
  }

  /** The version of the snapshot in force, undefined before the first. */
  get version(): string | undefined {
    return this.runtime.current?.snapshot.version;
  }

  get requestsInFlight(): number {
    return this.proxy.requestsInFlight;
  }

  async start(): Promise<void> {
    if (this.limiter.state === 'local' && !(await this.limiter.whenConnected(REDIS_FIRST_CONNECT_MS))) {
      this.logger.warn({ waitedMs: REDIS_FIRST_CONNECT_MS }, 'Redis not reachable at start; rate limits count locally (fail-open rules) or answer 503 (fail-closed) until it is');
    }
    this.port = await this.proxy.listen(this.config.listen.host, this.config.listen.port);
  }

  /**
   * Compiles the snapshot and puts it in force, or keeps the runtime in force when it cannot be
   * compiled (the control plane reports that; nothing is ever half applied).
   */
  apply(snapshot: Snapshot): ApplyResult {
    if (this.runtime.current?.snapshot === snapshot) return { ok: true };
    let next;
    try {
      next = this.runtime.prepare(snapshot);
    } catch (err) {
      this.logger.error({ err, version: snapshot.version }, 'snapshot cannot be compiled; the runtime in force stays');
      return { ok: false, error: describeError(err) };
    }
    this.runtime.swap(next);
    if (next.changed === null) this.proxy.limits.retainServices(new Set(Object.keys(snapshot.services)));
    return { ok: true };
  }

  /** What the admin API shows of this data plane: summary, or detail for all services or one. */
  report(scope: ReportScope): DataPlaneReport {
    const runtime = this.runtime.current;
    const services: Record<string, ServiceHealthReport> = Object.create(null) as Record<string, ServiceHealthReport>;
    const names = scope.kind === 'summary' || !runtime ? [] : scope.kind === 'service' ? [scope.name] : [...runtime.balancers.keys()];
    const inflight = names.length > 0 ? this.pools.inflightByKey() : new Map<string, number>();
    for (const name of names) {
      const balancer = runtime?.balancers.get(name);
      if (!balancer) continue;
      const health = this.resilience.peek(name);
      const outlier = health?.outlier.status() ?? {};
      const endpoints: Record<string, EndpointHealthReport> = Object.create(null) as Record<string, EndpointHealthReport>;
      for (const e of balancer.service.endpoints) {
        const o = Object.hasOwn(outlier, e.key) ? outlier[e.key] : undefined;
        endpoints[e.key] = { ejected: o?.ejected ?? false, ejectedUntil: o?.ejectedUntil ?? null, consecutiveFailures: o?.consecutiveFailures ?? 0, inflight: inflight.get(e.key) ?? 0 };
      }
      services[name] = { picker: balancer.pickerKind, breaker: health ? { ...health.breaker.status() } : null, ejected: health?.outlier.ejectedCount ?? 0, endpoints };
    }
    const circuitsNotClosed = runtime ? [...runtime.balancers.keys()].filter((name) => (this.resilience.peek(name)?.breaker.state ?? 'closed') !== 'closed') : [];
    return { version: this.version ?? null, limits: this.proxy.limits.view(), rateLimiter: this.limiter.state, circuitsNotClosed, services };
  }

  /** Refuse new requests, finish in-flight ones (bounded). */
  drain(timeoutMs: number): Promise<{ unfinished: number }> {
    return this.proxy.drain(timeoutMs);
  }

  /** After the drain: upstream pools, Redis, JWKS refreshers. */
  async close(): Promise<void> {
    await this.pools.closeAll(1_000);
    await this.limiter.close();
    this.keys.close();
  }

  private showLimiterState(state: BackendState): void {
    for (const s of ['redis', 'local', 'none'] as const) this.metrics.rateLimitBackend.set({ state: s }, s === state ? 1 : 0);
  }
}
