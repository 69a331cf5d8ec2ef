import type { GatewayConfig } from './config.ts';
import { defaultMaxConnections, openFileLimit } from './core/limits.ts';
import type { Logger } from './core/logger.ts';
import type { Metrics } from './core/metrics.ts';
import { describeError } from './core/errors.ts';
import type { DataPlaneReport, EndpointHealthReport, ReportScope, ServiceHealthReport } from './core/types.ts';
import type { KvCertificate, Snapshot } from './state/snapshot.ts';
import { UpstreamPools } from './balancer/upstream-pools.ts';
import { RuntimeHolder } from './runtime/runtime.ts';
import { ResponseCache } from './cache/response-cache.ts';
import { LazyL2, RedisL2 } from './cache/l2.ts';
import { RolloutTaps } from './runtime/rollout-taps.ts';
import { SubsetRecorder } from './state/rollout-figures.ts';

/** Routes whose counts are kept for guarded changes; routes past it are not guarded. */
const MAX_TALLIED_ROUTES = 20_000;
import { ResilienceRegistry } from './resilience/registry.ts';
import { JwtKeyCache } from './filters/auth.ts';
import { RateLimiterBackend, type BackendState, type RedisOptions } from './filters/rate-limit.ts';
import type { Http2SecureServer } from 'node:http2';
import { ProxyListener } from './proxy/listener.ts';
import { CertificateStore } from './tls/store.ts';
import { FileCertificateSource } from './tls/file-source.ts';
import type { CertificateInput } from './tls/certificate.ts';
import { readClientAuthority, type ClientAuthority } from './tls/client-ca.ts';
import { ClientCaFile } from './tls/client-ca-file.ts';
import type { RequestTracing } from './proxy/request-spans.ts';
import { CGW_VERSION } from './core/fleet.ts';

/** On close, how long queued spans may take to reach the OTLP receiver. */
const SPAN_FLUSH_MS = 5_000;

/**
 * The --tls-client-ca bundle, read and checked (a ClientCaError names what is wrong); undefined
 * when client certificates are not asked for. `cgw start` calls it before anything starts.
 */
export function clientAuthorityOf(config: GatewayConfig): ClientAuthority | undefined {
  if (config.tlsClientAuth === 'none' || config.tlsClientCa === undefined) return undefined;
  return readClientAuthority(config.tlsClientCa, config.tlsClientAuth);
}

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
  /** This process's response cache (each worker has its own L1; L2 in Redis with `--redis`). */
  private readonly cache: ResponseCache;
  private readonly resilience: ResilienceRegistry;
  private readonly rollouts = new RolloutTaps();
  /** Every route's counts, for guarded changes (compared before and after a change). */
  private readonly routeTallies = new SubsetRecorder('since-start', MAX_TALLIED_ROUTES);
  port = 0;
  /** Ports of the --listen-tls listeners, in the order given. */
  tlsPorts: number[] = [];
  private readonly tlsServers: Http2SecureServer[] = [];
  /** Certificates of the HTTPS listeners, loaded by this process (each worker loads its own). */
  private readonly certificates: { store: CertificateStore; source: FileCertificateSource } | undefined;
  /** The last inputs of each certificate source: files (read here) and Consul KV (from snapshots). */
  private fileCertificates: readonly CertificateInput[] = [];
  private kvCertificates: readonly KvCertificate[] = [];
  /** The --tls-client-ca bundle in force and the watch on its file. */
  private readonly clientCa: ClientCaFile | undefined;
  /** Request spans with --otlp-endpoint (each worker exports its own); null: the SDK is never loaded. */
  private tracing: RequestTracing | null = null;

  constructor(
    private readonly config: GatewayConfig,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
    /** Data planes that count rate limits on their own besides this one (workers): each takes its share. */
    shares = 1,
  ) {
    this.pools = new UpstreamPools({
      connectTimeoutMs: config.connectTimeout,
      connectionsPerEndpoint: config.maxRequestsPerEndpoint,
      // The in-flight cap on shadows bounds each shadow pool too, so no shadow waits for a connection.
      shadowConnectionsPerEndpoint: config.mirrorMaxInFlight,
      ...(config.upstreamCa ? { upstreamCa: config.upstreamCa.pem } : {}),
    });
    this.keys = new JwtKeyCache();
    this.limiter = new RateLimiterBackend({
      redis: redisOptions(config),
      local: { shares },
      logger,
      onStateChange: (state) => this.showLimiterState(state),
    });
    this.showLimiterState(this.limiter.state);
    this.resilience = new ResilienceRegistry(metrics, logger);
    const redisUrl = config.redis;
    this.cache = new ResponseCache(config.cacheMaxBytes, metrics, redisUrl ? new LazyL2(() => new RedisL2(redisUrl, metrics, logger)) : null);
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
        cache: this.cache,
      },
      logger,
    );
    const authority = config.listenTls.length > 0 ? clientAuthorityOf(config) : undefined;
    this.certificates = config.listenTls.length > 0 ? this.loadCertificates(config, authority) : undefined;
    this.clientCa = authority ? this.watchClientCa(config, authority) : undefined;
    this.proxy = new ProxyListener({
      runtime: () => this.runtime.current,
      rollouts: this.rollouts,
      routeTallies: this.routeTallies,
      maxHeaderSize: config.maxHeaderSize,
      maxHeaderCount: config.maxHeaderCount,
      maxConnections: config.maxConnections ?? defaultMaxConnections(openFileLimit()),
      clientHeaderTimeoutMs: config.clientHeaderTimeout,
      clientBodyTimeoutMs: config.clientBodyTimeout,
      requestBufferSize: config.requestBufferSize,
      h2c: config.h2c,
      http2MaxConcurrentStreams: config.http2MaxConcurrentStreams,
      mirrorMaxInFlight: config.mirrorMaxInFlight,
      accessLog: config.accessLog,
      accessLogSample: config.accessLogSample,
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
    if (this.config.otlp !== null) {
      const { startRequestTracing } = await import('./proxy/request-spans.ts');
      this.tracing = startRequestTracing(this.config.otlp, { metrics: this.metrics, logger: this.logger, instanceId: this.config.gatewayId, version: CGW_VERSION });
      this.proxy.tracer = this.tracing.tracer;
    }
    this.port = await this.proxy.listen(this.config.listen.host, this.config.listen.port);
    if (this.certificates) {
      await this.certificates.source.start();
      if (!this.certificates.store.hasCertificate) {
        const fromFiles = this.config.tlsCert.length > 0 || this.config.tlsDir !== undefined;
        if (fromFiles) this.logger.error({ rejected: this.certificates.store.view().rejected }, 'no usable certificate: HTTPS handshakes fail until one loads');
        else this.logger.warn(`no certificate yet: HTTPS handshakes fail until one is stored in Consul KV (${this.config.kvPrefix}certs/<name>, cgw cert put)`);
      }
      this.tlsPorts = [];
      for (const address of this.config.listenTls) {
        const server = this.proxy.addTls(this.certificates.store, this.config.tlsMinVersion, { mode: this.config.tlsClientAuth, ca: this.clientCa?.authority.pem });
        this.tlsServers.push(server);
        this.useDefaultCertificate();
        this.tlsPorts.push(await this.proxy.listen(address.host, address.port, server));
      }
      // redirect-https sends plain-HTTP clients to the first HTTPS listener.
      this.proxy.httpsPort = this.tlsPorts[0] ?? null;
      this.clientCa?.start();
    }
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
    this.rollouts.apply(snapshot);
    if (next.changed === null) this.proxy.limits.retainServices(new Set(Object.keys(snapshot.services)));
    // Deltas keep the certificates of the snapshot they change: compared by reference, not content.
    if (this.certificates && snapshot.certificates !== this.kvCertificates) {
      this.kvCertificates = snapshot.certificates;
      this.updateCertificates();
    }
    return { ok: true };
  }

  /** What the admin API shows of this data plane: summary, or detail for all services or one. */
  report(scope: ReportScope): DataPlaneReport {
    const runtime = this.runtime.current;
    const services: Record<string, ServiceHealthReport> = Object.create(null) as Record<string, ServiceHealthReport>;
    const names = scope.kind === 'summary' || scope.kind === 'figures' || !runtime ? [] : scope.kind === 'service' ? [scope.name] : [...runtime.balancers.keys()];
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
    return { version: this.version ?? null, limits: this.proxy.limits.view(), rateLimiter: this.limiter.state, circuitsNotClosed, services, tls: this.certificates ? { ...this.certificates.store.view(), ...(this.clientCa ? { clientAuth: this.clientCa.view() } : {}) } : null, websocket: this.proxy.websockets.view(), rollouts: this.rolloutFigures(), ...(scope.kind === 'figures' ? { routeTallies: this.routeTallies.record('', new Date(), false).subsets } : {}) };
  }

  /** What this data plane counted for each service under rollout, with its canary's circuit. */
  private rolloutFigures(): DataPlaneReport['rollouts'] {
    if (this.rollouts.size === 0) return undefined;
    const status = new Map<string, Record<string, { ejected: boolean }>>();
    return this.rollouts.report((service, key) => {
      let outlier = status.get(service);
      if (!outlier) status.set(service, (outlier = this.resilience.peek(service)?.outlier.status() ?? {}));
      return Object.hasOwn(outlier, key) ? outlier[key]?.ejected === true : false;
    });
  }

  /** Refuse new requests, finish in-flight ones (bounded). */
  drain(timeoutMs: number): Promise<{ unfinished: number }> {
    return this.proxy.drain(timeoutMs);
  }

  /** After the drain: upstream pools, Redis, JWKS refreshers, the spans still queued. */
  async close(): Promise<void> {
    this.proxy.tracer = null;
    const spans = this.tracing?.close(SPAN_FLUSH_MS);
    this.certificates?.source.close();
    this.clientCa?.close();
    await this.pools.closeAll(1_000);
    await this.limiter.close();
    this.cache.close();
    this.keys.close();
    await spans;
  }

  /**
   * Clients that send no server name (an IP address, old clients) never reach the SNI callback:
   * they get the server's own context, kept on the default certificate here.
   */
  private useDefaultCertificate(): void {
    const pem = this.certificates?.store.defaultPem;
    if (!pem) return;
    const ca = this.clientCa?.authority.pem;
    for (const server of this.tlsServers) server.setSecureContext({ cert: pem.cert, key: pem.key, minVersion: this.config.tlsMinVersion, ...(ca === undefined ? {} : { ca }) });
  }

  /** The store the HTTPS listeners take certificates from, fed by the certificate files. */
  private loadCertificates(config: GatewayConfig, authority: ClientAuthority | undefined): { store: CertificateStore; source: FileCertificateSource } {
    const { metrics, logger } = this;
    /** Expiry series set last time, by name and source, so those of certificates gone are removed. */
    let shown = new Map<string, { name: string; source: string }>();
    const store = new CertificateStore({
      onRejected: (r) => {
        metrics.tlsCertificateRejections.inc({ source: r.source });
        logger.warn({ source: r.source, keptLastGood: r.keptLastGood }, `certificate refused: ${r.error}`);
      },
      onChanged: (certificates) => {
        const now = new Map(certificates.map((c) => [`${c.name}\u0000${c.source}`, { name: c.name, source: c.source }]));
        for (const c of certificates) metrics.tlsCertificateExpiry.set({ name: c.name, source: c.source }, Math.floor(c.expiresAtMs / 1000));
        for (const [key, labels] of shown) if (!now.has(key)) metrics.tlsCertificateExpiry.remove(labels);
        shown = now;
        this.useDefaultCertificate();
        logger.info({ certificates: certificates.map((c) => ({ name: c.name, names: c.names, notAfter: c.notAfter, source: c.source })) }, 'certificates in force');
      },
    }, authority?.pem);
    const source = new FileCertificateSource({
      pairs: config.tlsCert.map((cert, i) => ({ cert, key: config.tlsKey[i] as string })),
      dir: config.tlsDir,
      minVersion: config.tlsMinVersion,
      pollIntervalMs: config.tlsPollInterval,
      onInputs: (inputs) => {
        this.fileCertificates = inputs;
        this.updateCertificates();
      },
      onError: (err) => logger.error({ err }, 'reading certificate files failed; the certificates in force stay'),
    });
    return { store, source };
  }

  /**
   * Files first, so the first --tls-cert pair (else the first of --tls-dir) is the default
   * certificate; then KV, where a certificate named `default` comes first, then the others by name.
   */
  private updateCertificates(): void {
    if (!this.certificates) return;
    const kv = [...this.kvCertificates].sort((a, b) => Number(b.name === 'default') - Number(a.name === 'default'));
    const fromKv = kv.map((c): CertificateInput => ({ name: c.name, source: `kv:${c.key}`, certPem: c.certPem, keyPem: c.keyPem, minVersion: this.config.tlsMinVersion }));
    this.certificates.store.update([...this.fileCertificates, ...fromKv]);
  }

  /** The --tls-client-ca file after start: a good change re-makes every TLS context, a bad one is shown. */
  private watchClientCa(config: GatewayConfig, initial: ClientAuthority): ClientCaFile {
    const { metrics, logger } = this;
    const file = initial.view.caFile;
    return new ClientCaFile({
      file,
      mode: initial.view.mode,
      initial,
      pollIntervalMs: config.tlsPollInterval,
      onChange: (authority) => {
        this.certificates?.store.setClientCa(authority.pem);
        logger.info({ file, authorities: authority.view.authorities.map((a) => a.subject) }, 'client CA bundle in force');
      },
      onRejected: (error) => {
        metrics.tlsCertificateRejections.inc({ source: `client-ca:${file}` });
        logger.warn({ file }, `client CA bundle refused, the one in force stays: ${error}`);
      },
    });
  }

  private showLimiterState(state: BackendState): void {
    for (const s of ['redis', 'local', 'none'] as const) this.metrics.rateLimitBackend.set({ state: s }, s === state ? 1 : 0);
  }
}
