import type { Metrics } from '../core/metrics.ts';
import { removeSeriesMatching } from '../core/metrics.ts';
import type { Logger } from '../core/logger.ts';
import { ServiceBalancer, type PickerKind } from '../balancer/service-balancer.ts';
import type { UpstreamPools } from '../balancer/upstream-pools.ts';

/** The proxy reaches endpoints only through the runtime (house map: proxy imports core, runtime). */
export type { UpstreamEndpoint } from '../balancer/upstream-pools.ts';
import { compileRouter, type Router } from '../router/router.ts';
import type { RouteSnapshot, Snapshot } from '../state/snapshot.ts';

/** What a request needs once its route is known, all prepared when the snapshot is applied. */
export interface CompiledRoute {
  readonly id: string;
  readonly host: string | null;
  readonly path: string;
  readonly service: string;
  readonly strip: string | null;
  readonly balancer: ServiceBalancer;
  readonly countResponse: (status: number) => void;
  readonly observeDuration: (seconds: number) => void;
}

export interface Runtime {
  readonly snapshot: Snapshot;
  readonly router: Router<CompiledRoute>;
  readonly balancers: ReadonlyMap<string, ServiceBalancer>;
}

export interface RuntimeDeps {
  readonly pools: UpstreamPools;
  readonly metrics: Metrics;
  readonly pickerKind: PickerKind;
}

/**
 * Compiles a snapshot into the request-path structures. Balancers whose service did not change are
 * reused as they are, so an unrelated change does not reset round-robin positions.
 */
export function buildRuntime(snapshot: Snapshot, previous: Runtime | undefined, deps: RuntimeDeps): Runtime {
  const balancers = new Map<string, ServiceBalancer>();
  for (const service of Object.values(snapshot.services)) {
    const old = previous?.balancers.get(service.name);
    const reuse = old && old.fingerprint === ServiceBalancer.fingerprintOf(service, deps.pickerKind);
    balancers.set(service.name, reuse ? old : new ServiceBalancer(service, deps.pools, deps.pickerKind));
  }
  const routes = snapshot.routes.flatMap((r) => {
    const balancer = balancers.get(r.service);
    return balancer ? [compileRoute(r, balancer, deps.metrics)] : [];
  });
  return { snapshot, router: compileRouter(routes), balancers };
}

function compileRoute(route: RouteSnapshot, balancer: ServiceBalancer, metrics: Metrics): CompiledRoute {
  const labels = { route: route.id, service: route.service };
  const byStatus = new Map<number, { inc(): void }>();
  const duration = metrics.requestDuration.labels(labels);
  return {
    id: route.id,
    host: route.host,
    path: route.path,
    service: route.service,
    strip: route.strip,
    balancer,
    countResponse(status) {
      let child = byStatus.get(status);
      if (!child) {
        child = metrics.requests.labels({ ...labels, code: String(status) });
        byStatus.set(status, child);
      }
      child.inc();
    },
    observeDuration(seconds) {
      duration.observe(seconds);
    },
  };
}

/**
 * The runtime in force. Swapping is one assignment; afterwards pools of vanished endpoints are
 * closed gracefully and metric series of vanished services and routes are deleted.
 */
export class RuntimeHolder {
  current: Runtime | undefined;

  constructor(
    private readonly deps: RuntimeDeps,
    private readonly logger: Logger,
  ) {}

  apply(snapshot: Snapshot): Runtime {
    const previous = this.current;
    const next = buildRuntime(snapshot, previous, this.deps);
    this.current = next;
    this.afterSwap(previous, next);
    return next;
  }

  private afterSwap(previous: Runtime | undefined, next: Runtime): void {
    const { metrics, pools } = this.deps;
    const live = new Set<string>();
    for (const service of Object.values(next.snapshot.services)) {
      for (const e of service.endpoints) if (e.weight > 0) live.add(e.key);
      metrics.endpointsHealthy.set({ service: service.name }, service.healthy);
      metrics.endpointsTotal.set({ service: service.name }, service.endpoints.length);
    }
    const closed = pools.retain(live);
    if (closed.length > 0) this.logger.debug({ endpoints: closed }, 'closing pools of removed endpoints after in-flight requests');

    if (!previous) return;
    for (const name of Object.keys(previous.snapshot.services)) {
      if (next.snapshot.services[name]) continue;
      metrics.endpointsHealthy.remove({ service: name });
      metrics.endpointsTotal.remove({ service: name });
      void removeSeriesMatching(metrics.upstreamRetries, { service: name });
    }
    const nextRoutes = new Set(next.snapshot.routes.map((r) => `${r.id}\u0000${r.service}`));
    for (const r of previous.snapshot.routes) {
      if (nextRoutes.has(`${r.id}\u0000${r.service}`)) continue;
      void removeSeriesMatching(metrics.requests, { route: r.id, service: r.service });
      metrics.requestDuration.remove({ route: r.id, service: r.service });
    }
  }
}
