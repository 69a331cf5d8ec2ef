import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import { OutlierDetector } from './outlier.ts';
import { CircuitBreaker, type BreakerState } from './circuit-breaker.ts';
import { RetryBudget } from './retry-budget.ts';
import type { RoutePolicy, ServiceSnapshot } from '../state/snapshot.ts';

/** Per-service passive health: what a failing endpoint or service has taught us so far. */
export interface ServiceResilience {
  readonly outlier: OutlierDetector;
  readonly breaker: CircuitBreaker;
}

const BREAKER_GAUGE: Record<BreakerState, number> = { closed: 0, open: 1, half_open: 2 };

/**
 * Learned state must outlive snapshots: a Consul change elsewhere must not forget that an
 * endpoint was ejected, that a circuit is open or how much retry budget is spent. So the runtime
 * keeps these per service (breaker, outlier) and per route (retry budget) and only reconfigures
 * them from each new snapshot; they are dropped when their service or route goes away.
 */
export class ResilienceRegistry {
  private readonly services = new Map<string, ServiceResilience>();
  private readonly budgets = new Map<string, RetryBudget>();

  constructor(
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {
    // Reading a breaker's state makes it notice that its open time is over (and report it).
    metrics.hooks.beforeCircuitScrape = () => {
      for (const entry of this.services.values()) void entry.breaker.state;
    };
  }

  forService(service: ServiceSnapshot): ServiceResilience {
    let entry = this.services.get(service.name);
    if (!entry) {
      entry = this.create(service.name);
      this.services.set(service.name, entry);
    }
    entry.outlier.configure(service.policy.outlierDetection);
    entry.outlier.setEndpoints(service.endpoints.filter((e) => e.weight > 0).map((e) => e.key));
    entry.breaker.configure(service.policy.circuitBreaker);
    this.metrics.endpointsEjected.set({ service: service.name }, entry.outlier.ejectedCount);
    return entry;
  }

  budgetFor(routeId: string, retries: RoutePolicy['retries']): RetryBudget {
    let budget = this.budgets.get(routeId);
    if (!budget) {
      budget = new RetryBudget();
      this.budgets.set(routeId, budget);
    }
    budget.configure(retries.budget);
    return budget;
  }

  peek(service: string): ServiceResilience | undefined {
    return this.services.get(service);
  }

  /** Forgets services and routes that left the snapshot. */
  retain(services: ReadonlySet<string>, routes: ReadonlySet<string>): void {
    for (const name of [...this.services.keys()]) {
      if (services.has(name)) continue;
      this.services.delete(name);
      this.metrics.circuitState.remove({ service: name });
      this.metrics.endpointsEjected.remove({ service: name });
    }
    for (const id of [...this.budgets.keys()]) if (!routes.has(id)) this.budgets.delete(id);
  }

  private create(service: string): ServiceResilience {
    const { metrics, logger } = this;
    const outlier = new OutlierDetector(null, {
      onEject: (endpoint, info) => {
        metrics.outlierEjections.inc({ service });
        metrics.endpointsEjected.set({ service }, outlier.ejectedCount);
        logger.warn({ service, endpoint, ejectedForMs: info.durationMs, ejections: info.ejections }, 'endpoint ejected after consecutive failures');
      },
      onReturn: (endpoint, reason) => {
        metrics.endpointsEjected.set({ service }, outlier.ejectedCount);
        logger.info({ service, endpoint, reason }, 'ejected endpoint back in rotation');
      },
    });
    const breaker = new CircuitBreaker();
    metrics.circuitState.set({ service }, 0);
    breaker.onStateChange((state, previous) => {
      metrics.circuitState.set({ service }, BREAKER_GAUGE[state]);
      metrics.circuitTransitions.inc({ service, state });
      logger.warn({ service, from: previous, to: state }, 'circuit breaker state changed');
    });
    return { outlier, breaker };
  }
}
