import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { WebSocketView } from '../core/types.ts';
import { WebSocketRelay, type CloseReason, type RelayEnds, type RelayOwner } from './websocket-relay.ts';

/**
 * The open upgraded connections of one proxy listener: counted per route for metrics and
 * `cgw status`, and closed with 1001 when the gateway drains.
 */
export class WebSocketSessions implements RelayOwner {
  private readonly open = new Set<WebSocketRelay>();
  private readonly byRoute = new Map<string, number>();
  private idleWaiters: (() => void)[] = [];
  /** Connections the drain had to cut. */
  private cutByDrain = 0;

  constructor(
    private readonly metrics: Metrics,
    readonly logger: Logger,
  ) {
    metrics.hooks.beforeWebSocketScrape = () => {
      for (const relay of this.open) this.reportBytes(relay);
    };
  }

  get size(): number {
    return this.open.size;
  }

  relay(ends: RelayEnds): WebSocketRelay {
    const relay = new WebSocketRelay(ends, this);
    this.open.add(relay);
    this.byRoute.set(ends.route, (this.byRoute.get(ends.route) ?? 0) + 1);
    this.metrics.websocketConnections.inc({ route: ends.route, service: ends.service });
    return relay;
  }

  closed(relay: WebSocketRelay, reason: CloseReason, seconds: number): void {
    if (!this.open.delete(relay)) return;
    const { route, service } = relay.ends;
    const left = (this.byRoute.get(route) ?? 1) - 1;
    if (left > 0) {
      this.byRoute.set(route, left);
      this.metrics.websocketConnections.dec({ route, service });
    } else {
      this.byRoute.delete(route);
      this.metrics.websocketConnections.remove({ route, service });
    }
    this.reportBytes(relay);
    this.metrics.websocketCloses.inc({ service, reason });
    if (relay.cut && reason === 'drain') this.cutByDrain += 1;
    this.logger.debug({ route, service, reason, cut: relay.cut, seconds: Math.round(seconds) }, 'WebSocket connection closed');
    if (this.open.size === 0) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  private reportBytes(relay: WebSocketRelay): void {
    const { toUpstream, toClient } = relay.takeBytes();
    const { service } = relay.ends;
    if (toUpstream > 0) this.metrics.websocketBytes.inc({ service, direction: 'to_upstream' }, toUpstream);
    if (toClient > 0) this.metrics.websocketBytes.inc({ service, direction: 'to_client' }, toClient);
  }

  view(): WebSocketView {
    const byRoute: Record<string, number> = Object.create(null) as Record<string, number>;
    for (const [route, n] of this.byRoute) byRoute[route] = n;
    return { open: this.open.size, byRoute };
  }

  /**
   * Closes every connection with 1001 at frame boundaries and waits up to `timeoutMs` for the peers
   * to close; what is left then is cut. Resolves with the number cut.
   */
  async drain(timeoutMs: number): Promise<number> {
    if (this.open.size === 0) return 0;
    const idle = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    for (const relay of this.open) relay.end('drain', 'gateway shutting down', timeoutMs);
    await idle;
    return this.cutByDrain;
  }
}
