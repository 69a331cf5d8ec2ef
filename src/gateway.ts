import type { GatewayConfig } from './config.ts';
import { formatAddress } from './core/net.ts';
import { createLogger, type Logger } from './core/logger.ts';
import { createMetrics, type Metrics } from './core/metrics.ts';
import { ControlPlane } from './control-plane.ts';
import { DataPlane } from './data-plane.ts';

/** Files `cgw start` checks before anything listens (the --tls-client-ca bundle); throws naming the problem. */
export { clientAuthorityOf as checkStartFiles } from './data-plane.ts';

/**
 * The gateway in one process (`--workers 1`): the control plane hands each snapshot straight to
 * the data plane beside it. `cluster/` runs the same two halves as a primary and its workers.
 */
export class Gateway {
  readonly logger: Logger;
  readonly metrics: Metrics;
  private readonly control: ControlPlane;
  private readonly data: DataPlane;
  private closed: Promise<{ unfinished: number }> | undefined;

  constructor(
    readonly config: GatewayConfig,
    options: { logger?: Logger } = {},
  ) {
    this.logger = options.logger ?? createLogger(config.logLevel, config.logFormat);
    this.metrics = createMetrics();
    const data = new DataPlane(config, this.logger, this.metrics);
    this.data = data;
    this.control = new ControlPlane(config, this.logger, this.metrics, {
      offer: (snapshot) => data.apply(snapshot),
      ready: () => data.version !== undefined && data.version === this.control.current?.version,
      report: (scope) => Promise.resolve(data.report(scope)),
      workers: () => null,
      metricsText: () => this.metrics.registry.metrics(),
    });
  }

  get ready(): boolean {
    return this.control.ready;
  }

  get proxyPort(): number {
    return this.data.port;
  }

  get adminPort(): number {
    return this.control.adminPort;
  }

  async start(): Promise<void> {
    await this.control.start();
    await this.data.start();
    this.control.watch(this.data.port);
    this.logger.info(
      { listen: formatAddress(this.config.listen.host, this.data.port), listenTls: this.config.listenTls.map((a, i) => formatAddress(a.host, this.data.tlsPorts[i] ?? a.port)), admin: this.control.adminAddress, consul: this.config.consul, workers: 1 },
      'gateway started',
    );
  }

  /** Graceful stop: refuse new requests, finish in-flight ones (bounded), then stop watching. */
  close(): Promise<{ unfinished: number }> {
    this.closed ??= (async () => {
      this.control.beginClose();
      this.logger.info({ inflight: this.data.requestsInFlight, drainTimeoutMs: this.config.drainTimeout }, 'draining');
      const result = await this.data.drain(this.config.drainTimeout);
      await this.control.close();
      await this.data.close();
      this.logger.info({ unfinished: result.unfinished }, 'gateway stopped');
      return result;
    })();
    return this.closed;
  }
}
