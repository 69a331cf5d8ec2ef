import type { Server } from 'node:http';
import { consulTls, type GatewayConfig } from './config.ts';
import { formatAddress, listenOn } from './core/net.ts';
import type { KvEntry } from './core/types.ts';
import { defaultMaxConnections, openFileLimit } from './core/limits.ts';
import { createLogger, type Logger } from './core/logger.ts';
import { createMetrics, type Metrics } from './core/metrics.ts';
import { ConsulClient } from './consul/client.ts';
import { ConsulSupervisor } from './consul/supervisor.ts';
import { buildSnapshot, discoveryModes, servicesNamedByRoutes, type Snapshot } from './state/snapshot.ts';
import { SnapshotStore } from './state/store.ts';
import { BuildHealth } from './state/build-health.ts';
import { isUrlprefixTag } from './state/tags.ts';
import { UpstreamPools } from './balancer/upstream-pools.ts';
import { RuntimeHolder } from './runtime/runtime.ts';
import { ResilienceRegistry } from './resilience/registry.ts';
import { JwtKeyCache } from './filters/auth.ts';
import { RateLimiterBackend, type BackendState, type RedisOptions } from './filters/rate-limit.ts';
import { parseDocumentText, readPolicyDir, type RawDocument } from './policy/documents.ts';
import { resolvePolicies } from './policy/resolve.ts';
import { ProxyListener } from './proxy/listener.ts';
import { createAdminServer } from './admin/server.ts';

/** How long start waits to learn whether --consul is a Consul agent at all. */
const CONSUL_IDENTIFY_TIMEOUT_MS = 5_000;
/** How long start waits for the first Redis connection; readiness must not hinge on Redis. */
const REDIS_FIRST_CONNECT_MS = 2_000;

function redisOptions(config: GatewayConfig): RedisOptions | undefined {
  if (config.redisCluster) return { cluster: config.redisCluster };
  if (config.redisSentinels) return { sentinels: config.redisSentinels, name: config.redisSentinelName };
  if (config.redis) return { url: config.redis };
  return undefined;
}

/**
 * Composition root: builds the rooms, connects them in the one direction data flows
 * (Consul → supervisor → snapshot store → runtime → proxy) and owns their lifecycle.
 */
export class Gateway {
  readonly logger: Logger;
  readonly metrics: Metrics;
  private readonly consul: ConsulClient;
  private readonly supervisor: ConsulSupervisor;
  private readonly store: SnapshotStore;
  private readonly pools: UpstreamPools;
  private readonly runtime: RuntimeHolder;
  private readonly proxy: ProxyListener;
  private readonly admin: Server;
  private readonly keys: JwtKeyCache;
  private readonly limiter: RateLimiterBackend;
  private readonly resilience: ResilienceRegistry;
  private readonly build = new BuildHealth();
  /** The KV view the policies in force were resolved from. */
  private resolvedFrom: { kv: readonly KvEntry[]; kvResets: number } | undefined;
  private policyFiles: readonly RawDocument[] = [];
  private policyLoadErrors: readonly { path: string; error: string }[] = [];
  private rebuildScheduled = false;
  private closed: Promise<{ unfinished: number }> | undefined;
  proxyPort = 0;
  adminPort = 0;

  constructor(
    readonly config: GatewayConfig,
    options: { logger?: Logger } = {},
  ) {
    this.logger = options.logger ?? createLogger(config.logLevel);
    this.metrics = createMetrics();
    this.consul = new ConsulClient({
      address: config.consul,
      token: config.token,
      dc: config.dc,
      consistency: config.consistency,
      maxConnections: config.consulMaxConns,
      tls: consulTls(config),
    });
    this.supervisor = new ConsulSupervisor({
      client: this.consul,
      waitMs: config.wait,
      kvPrefix: config.kvPrefix,
      maxConnections: config.consulMaxConns,
      resyncIntervalMs: config.resyncInterval,
      isRouted: (tags) => tags.some(isUrlprefixTag),
      logger: this.logger,
      metrics: this.metrics,
      onChange: () => this.ring(),
    });
    this.store = new SnapshotStore(this.logger, this.metrics);
    this.pools = new UpstreamPools({ connectTimeoutMs: config.connectTimeout, connectionsPerEndpoint: config.maxRequestsPerEndpoint });
    this.keys = new JwtKeyCache();
    this.limiter = new RateLimiterBackend({
      redis: redisOptions(config),
      logger: this.logger,
      onStateChange: (state) => this.showLimiterState(state),
    });
    this.showLimiterState(this.limiter.state);
    this.resilience = new ResilienceRegistry(this.metrics, this.logger);
    this.runtime = new RuntimeHolder(
      {
        pools: this.pools,
        metrics: this.metrics,
        pickerKind: config.picker,
        keys: this.keys,
        limiter: this.limiter,
        resilience: this.resilience,
        responseTimeoutMs: config.responseTimeout,
        connectTimeoutMs: config.connectTimeout,
        logger: this.logger,
      },
      this.logger,
    );
    this.store.onPublish((snapshot) => this.countDocuments(snapshot));
    this.proxy = new ProxyListener({
      runtime: () => this.runtime.current,
      maxHeaderSize: config.maxHeaderSize,
      maxHeaderCount: config.maxHeaderCount,
      maxConnections: config.maxConnections ?? defaultMaxConnections(openFileLimit()),
      clientHeaderTimeoutMs: config.clientHeaderTimeout,
      clientBodyTimeoutMs: config.clientBodyTimeout,
      requestBufferSize: config.requestBufferSize,
      accessLog: config.accessLog,
      logger: this.logger,
      metrics: this.metrics,
    });
    const startedAt = Date.now();
    this.admin = createAdminServer(
      {
        startedAt,
        published: () => this.store.current,
        runtime: () => this.runtime.current,
        ready: () => this.ready,
        endpointInflight: (key) => this.pools.inflight(key),
        discovery: () => this.supervisor.status(),
        discoveryProblems: () => [...this.supervisor.problems(), ...this.build.problems()],
        buildFailure: () => this.build.view(),
        limits: () => this.proxy.limits.view(),
        resilience: (service) => this.resilience.peek(service),
        rateLimiter: () => this.limiter.state,
        settings: {
          consul: config.consul,
          dc: config.dc ?? null,
          kvPrefix: config.kvPrefix,
          consistency: config.consistency,
          waitSeconds: config.wait / 1000,
          consulMaxConns: config.consulMaxConns,
          allowWarning: config.allowWarning,
          picker: config.picker,
        },
      },
      this.metrics.registry,
      (err) => {
        this.metrics.internalErrors.inc({ component: 'admin' });
        this.logger.error({ err }, 'admin API request failed');
      },
    );
  }

  /** Ready once the first complete snapshot is in force (`/-/readyz` answers 200). */
  get ready(): boolean {
    return this.runtime.current !== undefined && !this.closed;
  }

  async start(): Promise<void> {
    if (this.config.policies) {
      // Read once at start; KV documents are the live channel (the README says so).
      const { documents, errors } = readPolicyDir(this.config.policies);
      this.policyFiles = documents;
      this.policyLoadErrors = errors;
      // Validated here too, so the start-up line counts what will really be refused.
      const invalid = documents.flatMap((d) => {
        const parsed = parseDocumentText(d.text, d.kind);
        return parsed.ok ? [] : [{ path: d.origin.kind === 'file' ? d.origin.path : d.id, error: parsed.error }];
      });
      for (const e of [...errors, ...invalid]) this.logger.warn({ file: e.path, error: e.error }, `policy file refused: ${e.error}`);
      this.logger[invalid.length + errors.length > 0 ? 'warn' : 'info'](
        { dir: this.config.policies, files: documents.length + errors.length, valid: documents.length - invalid.length, invalid: invalid.length + errors.length },
        'policy files loaded',
      );
    }
    if (this.limiter.state === 'local' && !(await this.limiter.whenConnected(REDIS_FIRST_CONNECT_MS))) {
      this.logger.warn({ waitedMs: REDIS_FIRST_CONNECT_MS }, 'Redis not reachable at start; rate limits count locally (fail-open rules) or answer 503 (fail-closed) until it is');
    }
    const consul = await this.consul.identify(CONSUL_IDENTIFY_TIMEOUT_MS);
    if (consul.kind === 'not-consul') throw new Error(`${this.config.consul} is not a Consul agent (${consul.error}); check --consul or CONSUL_HTTP_ADDR`);
    if (consul.kind === 'unreachable') this.logger.warn({ consul: this.config.consul, err: consul.error }, 'Consul does not answer yet; the watches keep trying');
    this.adminPort = await listenOn(this.admin, this.config.admin.host, this.config.admin.port);
    this.proxyPort = await this.proxy.listen(this.config.listen.host, this.config.listen.port);
    this.supervisor.start();
    this.logger.info(
      { listen: formatAddress(this.config.listen.host, this.proxyPort), admin: formatAddress(this.config.admin.host, this.adminPort), consul: this.config.consul },
      'gateway started',
    );
  }

  /** Doorbell: many watch updates in one tick produce one rebuild. */
  private ring(): void {
    if (this.rebuildScheduled || this.closed) return;
    this.rebuildScheduled = true;
    setImmediate(() => {
      this.rebuildScheduled = false;
      this.rebuild();
    });
  }

  private rebuild(): void {
    const kv = this.supervisor.kvView();
    if (!kv) return;
    const previous = this.store.current?.snapshot;
    let snapshot: Snapshot;
    let resolved: { kv: readonly KvEntry[]; kvResets: number } | undefined;
    try {
      // Documents come from files read at start and the KV view: the same KV view, the same set
      // (so a health change does not resolve, and nothing downstream recompiles, the policies).
      const kvResets = this.supervisor.kvResets;
      const policies =
        previous && this.resolvedFrom?.kv === kv && this.resolvedFrom.kvResets === kvResets
          ? previous.policies
          : resolvePolicies(this.policyFiles, kv, this.config.kvPrefix, previous?.policies, this.policyLoadErrors, kvResets);
      resolved = { kv, kvResets };
      // Route documents can name services to watch and policies can change how; the supervisor
      // re-plans its watches and rings again once the new services have been read.
      this.supervisor.setDemand({ services: servicesNamedByRoutes(policies), modes: discoveryModes(policies) });
      const views = this.supervisor.views();
      if (!views) return;
      snapshot = buildSnapshot(views, { allowWarning: this.config.allowWarning, kvPrefix: this.config.kvPrefix }, previous, policies);
    } catch (err) {
      this.buildFailed('snapshot', err);
      return;
    }
    if (previous?.version === snapshot.version) {
      this.resolvedFrom = resolved;
      this.build.succeeded();
      return;
    }
    // Compiled before anything is published: a snapshot the data plane cannot run is never half in force.
    let runtime;
    try {
      runtime = this.runtime.prepare(snapshot);
    } catch (err) {
      this.buildFailed('runtime', err);
      return;
    }
    const first = this.runtime.current === undefined;
    this.runtime.swap(runtime);
    this.store.publish(snapshot);
    this.resolvedFrom = resolved;
    this.proxy.limits.retainServices(new Set(Object.keys(snapshot.services)));
    this.build.succeeded();
    if (first) this.logger.info({ version: snapshot.version }, 'first snapshot in force; gateway ready');
  }

  /** A bug must not take the data plane down: the last good runtime keeps serving, and it shows. */
  private buildFailed(phase: 'snapshot' | 'runtime', err: unknown): void {
    this.build.failed(phase, err);
    this.metrics.snapshotBuildFailures.inc();
    this.metrics.internalErrors.inc({ component: 'snapshot' });
    this.logger.error({ err, phase }, 'configuration build failed; Consul changes are not applied, the last good configuration stays in force');
  }

  private showLimiterState(state: BackendState): void {
    for (const s of ['redis', 'local', 'none'] as const) this.metrics.rateLimitBackend.set({ state: s }, s === state ? 1 : 0);
  }

  private countDocuments(snapshot: Snapshot): void {
    this.metrics.policyDocuments.reset();
    for (const d of snapshot.policies.documents) this.metrics.policyDocuments.inc({ kind: d.kind, origin: d.origin.kind });
    this.metrics.consumers.set(Object.keys(snapshot.policies.consumers).length);
  }

  /** Graceful stop: refuse new requests, finish in-flight ones (bounded), then stop watching. */
  close(): Promise<{ unfinished: number }> {
    this.closed ??= (async () => {
      this.logger.info({ inflight: this.proxy.requestsInFlight, drainTimeoutMs: this.config.drainTimeout }, 'draining');
      const result = await this.proxy.drain(this.config.drainTimeout);
      await this.supervisor.close();
      await this.pools.closeAll(1_000);
      await this.limiter.close();
      this.keys.close();
      await new Promise<void>((resolve) => {
        this.admin.close(() => resolve());
        this.admin.closeAllConnections();
      });
      await this.consul.close();
      this.logger.info({ unfinished: result.unfinished }, 'gateway stopped');
      return result;
    })();
    return this.closed;
  }
}
