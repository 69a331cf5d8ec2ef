import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { LimitHits, ListenerLimitsView } from '../core/types.ts';


const LOG_EVERY_MS = 10_000;

/**
 * The connection cap of the proxy listener and the per-endpoint request cap as operators see them:
 * counted in metrics, shown in `cgw status`, logged at most once per 10 s per kind so a flood
 * cannot flood the log too.
 */
export class ListenerLimits {
  private open = 0;
  private refused = { count: 0, lastAt: 0 };
  private readonly busy = new Map<string, { count: number; lastAt: number }>();
  private lastLogAt = new Map<string, number>();

  constructor(
    private readonly maxConnections: number | undefined,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {}

  /** Counts and caps the connections of one more listener (the cap holds per listener). */
  watch(server: Server): void {
    const { maxConnections, metrics } = this;
    if (maxConnections !== undefined) server.maxConnections = maxConnections;
    server.on('connection', (socket: Socket) => {
      this.open += 1;
      metrics.clientConnections.set(this.open);
      socket.once('close', () => {
        this.open -= 1;
        metrics.clientConnections.set(this.open);
      });
    });
    // Node closes connections beyond maxConnections itself and tells us here.
    server.on('drop', () => {
      this.refused.count += 1;
      this.refused.lastAt = Date.now();
      metrics.clientConnectionsRefused.inc();
      this.logSometimes('connections', { maxConnections }, 'connection refused: --max-connections client connections are open');
    });
    // Accept can fail (EMFILE when file descriptors run out); without a listener that would end the process.
    server.on('error', (err: NodeJS.ErrnoException) => {
      this.logSometimes(`accept:${err.code ?? ''}`, { err: err.message, code: err.code ?? null }, 'proxy listener error (raise the open-file limit or lower --max-connections)');
    });
  }

  endpointsBusy(service: string): void {
    let hit = this.busy.get(service);
    if (!hit) {
      hit = { count: 0, lastAt: 0 };
      this.busy.set(service, hit);
    }
    hit.count += 1;
    hit.lastAt = Date.now();
    this.metrics.upstreamBusy.inc({ service });
    this.logSometimes(`busy:${service}`, { service }, 'request refused: every endpoint of the service is at --max-requests-per-endpoint');
  }

  /** Forgets services that are gone, so the view and the map stay bounded. */
  retainServices(live: ReadonlySet<string>): void {
    for (const service of this.busy.keys()) {
      if (!live.has(service)) {
        this.busy.delete(service);
        this.lastLogAt.delete(`busy:${service}`);
        this.metrics.upstreamBusy.remove({ service });
      }
    }
  }

  view(): ListenerLimitsView {
    const hits = (h: { count: number; lastAt: number }): LimitHits => ({ count: h.count, lastAt: h.lastAt === 0 ? null : new Date(h.lastAt).toISOString() });
    const upstreamBusy: Record<string, LimitHits> = Object.create(null) as Record<string, LimitHits>;
    for (const [service, h] of this.busy) upstreamBusy[service] = hits(h);
    return { maxConnections: this.maxConnections ?? null, openConnections: this.open, connectionsRefused: hits(this.refused), upstreamBusy };
  }

  private logSometimes(kind: string, fields: Record<string, unknown>, message: string): void {
    const now = Date.now();
    if (now - (this.lastLogAt.get(kind) ?? 0) < LOG_EVERY_MS) return;
    this.lastLogAt.set(kind, now);
    this.logger.warn(fields, message);
  }
}
