import type { Metrics } from '../core/metrics.ts';
import { removeSeriesMatching } from '../core/metrics.ts';
import { serializedBindings, type Logger } from '../core/logger.ts';
import { ServiceBalancer, type PickerKind } from '../balancer/service-balancer.ts';
import type { UpstreamPools } from '../balancer/upstream-pools.ts';

/** The proxy reaches endpoints only through the runtime (house map: proxy imports core, runtime). */
export type { UpstreamEndpoint } from '../balancer/upstream-pools.ts';
export type { StickySubsets } from '../balancer/sticky-subsets.ts';
import { compileRouter, type Router } from '../router/router.ts';
import { changedServices, type RouteSnapshot, type Snapshot } from '../state/snapshot.ts';
import { own } from '../core/own.ts';
import { hstsHeaderValue } from '../filters/hsts.ts';
import { compileRouteAuth, type ConsumerIndex, type JwtKeyCache, type RouteAuth } from '../filters/auth.ts';
import { compileRateLimits, type RateLimiterBackend, type RouteRateLimits } from '../filters/rate-limit.ts';
import type { RetryBudget } from '../resilience/retry-budget.ts';
import { compileAccessRules, type AccessCheck } from '../core/ip-rules.ts';
import { compileRedirect, type CompiledRedirect } from './redirect.ts';
import { compileMirror, mirrorTargetLabel, type CompiledMirror } from './mirror.ts';
import { compileRouteCache, policyFingerprint, type RouteCache } from '../cache/route-cache.ts';
import { NO_PURGES, type CachePurges, type ResponseCache } from '../cache/response-cache.ts';

export type { CompiledMirror, MirrorOutcome } from './mirror.ts';

export type { AccessCheck } from '../core/ip-rules.ts';
export type { CompiledRedirect } from './redirect.ts';
export { redirectsToItself } from './redirect.ts';
import type { ResilienceRegistry, ServiceResilience } from '../resilience/registry.ts';

export type { Identity, AuthOutcome, ClientCertificate } from '../filters/auth.ts';
export { clientCertificateFrom } from '../filters/auth.ts';
export type { RateLimitOutcome } from '../filters/rate-limit.ts';
export type { ServiceResilience } from '../resilience/registry.ts';

/** The retry policy as the proxy uses it: sets instead of lists, all numbers in ms. */
export interface CompiledRetry {
  /** Retries after the first attempt. */
  readonly attempts: number;
  readonly onConnectFailure: boolean;
  readonly onReset: boolean;
  readonly onTimeout: boolean;
  readonly statuses: ReadonlySet<number>;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly nonIdempotent: boolean;
  readonly maxBodyBytes: number;
  readonly budget: RetryBudget;
}

/** What a request needs once its route is known, all prepared when the snapshot is applied. */
export interface CompiledRoute {
  readonly id: string;
  readonly host: string | null;
  readonly path: string;
  readonly service: string;
  readonly strip: string | null;
  /** `proto=grpc` or `grpcs`: forwarded over HTTP/2, gateway answers are gRPC statuses, never retried. */
  readonly grpc: boolean;
  /** Counts a finished gRPC call by its grpc-status. */
  readonly countGrpcStatus: (grpcStatus: string) => void;
  /** The path the upstream sees: `strip` removed, then `prepend` added (fabio's order). */
  readonly upstreamPath: (path: string) => string;
  /** Host header sent upstream: a name, `dst` (the endpoint's address:port), or null for the client's. */
  readonly upstreamHost: string | null;
  /** fabio's `proto=`: carried for the forwarders (https is dialled through the service's endpoints). */
  readonly proto: RouteSnapshot['proto'];
  /** The route answers a redirect itself (`redirect=`), or null. */
  readonly redirect: CompiledRedirect | null;
  /** Client IP rules (`allow=` / `deny=`), or null. */
  readonly access: AccessCheck | null;
  readonly countIpDenied: () => void;
  /** The access log's `route` and `service` fields of this route, serialised once. */
  readonly accessBindings: string;
  readonly balancer: ServiceBalancer;
  /** Why this route answers 503 policy_unavailable (see RouteSnapshot.heldBy), or null. */
  readonly holdReason: string | null;
  readonly auth: RouteAuth;
  /** The Strict-Transport-Security value for answers over TLS, or null. */
  readonly hsts: string | null;
  /** The same as a response header pair, shared by every TLS answer of the route (never changed). */
  readonly hstsHeader: readonly string[] | null;
  /** On plain HTTP, answer with a redirect to HTTPS (when the gateway has an HTTPS listener). */
  readonly redirectHttps: boolean;
  readonly countRedirect: () => void;
  readonly rateLimits: RouteRateLimits;
  readonly maxBodyBytes: number | null;
  readonly maxHeaderBytes: number | null;
  readonly responseHeadersTimeoutMs: number;
  /** The whole exchange, retries included; null: no overall limit. */
  readonly requestTimeoutMs: number | null;
  readonly retry: CompiledRetry;
  /** Limits of upgraded (WebSocket) connections on this route. */
  readonly websocket: { readonly idleTimeoutMs: number; readonly maxLifetimeMs: number };
  readonly resilience: ServiceResilience;
  /** Shadow traffic of the route, or null (no per-request work then). */
  readonly mirror: CompiledMirror | null;
  /** The route's response cache, or null (no per-request work then). */
  readonly cache: RouteCache | null;
  readonly countResponse: (status: number) => void;
  readonly observeDuration: (seconds: number) => void;
  readonly countAuthRejection: (reason: string) => void;
  readonly countRateLimit: (result: 'allowed' | 'limited' | 'unavailable') => void;
  readonly countSizeRejection: (kind: 'body' | 'headers') => void;
  /** A request of a sticky service kept on the client's subset, or given one by weight. */
  readonly countSticky: (outcome: 'kept' | 'assigned') => void;
}

export interface Runtime {
  readonly snapshot: Snapshot;
  readonly router: Router<CompiledRoute>;
  /** The balancer of each service in this runtime. */
  readonly balancers: ReadonlyMap<string, ServiceBalancer>;
  /** The per-service slots compiled routes read their balancer from (shared by runtimes of one configuration). */
  readonly slots: ReadonlyMap<string, ServiceSlot>;
  /** Services whose balancer this runtime replaced without recompiling routes; null: all compiled anew. */
  readonly changed: readonly string[] | null;
  /** For those services, the balancer each had before (the balancers map is updated in place). */
  readonly replaced: ReadonlyMap<string, ServiceBalancer>;
}

/**
 * What a route needs of its service, behind one indirection: a health change of one service
 * puts a new balancer in its slot and leaves every compiled route, filter and the router as
 * they are (Envoy's split of clusters and endpoints, CDS/EDS).
 */
export interface ServiceSlot {
  balancer: ServiceBalancer;
  readonly resilience: ServiceResilience;
}

export interface RuntimeDeps {
  readonly pools: UpstreamPools;
  readonly metrics: Metrics;
  readonly pickerKind: PickerKind;
  readonly keys: JwtKeyCache;
  readonly limiter: RateLimiterBackend;
  readonly resilience: ResilienceRegistry;
  /** `--response-timeout`, for routes whose policy sets none. */
  readonly responseTimeoutMs: number;
  /** `--connect-timeout`, for services whose policy sets none. */
  readonly connectTimeoutMs: number;
  /** Parent of every route's access logger. */
  readonly logger: Logger;
  /** The process's response cache (routes with a cache policy use it); absent: no route caches. */
  readonly cache?: ResponseCache;
}

/**
 * Compiles a snapshot into the request-path structures. Work follows the change: when the routes
 * and documents are those of the runtime in force, only services whose snapshot changed get a new
 * balancer (in their slot) and nothing else is compiled; otherwise routes are compiled again,
 * reusing each unchanged service's balancer. Learned state (ejections, open circuits, spent retry
 * budget) lives in the resilience registry across builds.
 */
export function buildRuntime(snapshot: Snapshot, previous: Runtime | undefined, deps: RuntimeDeps): Runtime {
  if (previous && previous.snapshot.routes === snapshot.routes && previous.snapshot.policies === snapshot.policies) {
    return updateServices(snapshot, previous, deps);
  }
  const slots = new Map<string, ServiceSlot>();
  const balancers = new Map<string, ServiceBalancer>();
  for (const service of Object.values(snapshot.services)) {
    const balancer = balancerFor(service, previous?.balancers.get(service.name), deps);
    slots.set(service.name, { balancer: balancer.balancer, resilience: balancer.resilience });
    balancers.set(service.name, balancer.balancer);
  }
  const consumers: ConsumerIndex = new Map(Object.values(snapshot.policies.consumers).map((c) => [c.id, c.record]));
  const routes = snapshot.routes.flatMap((r) => {
    const slot = slots.get(r.service);
    return slot ? [compileRoute(r, slot, slots, consumers, deps, snapshot.cachePurges)] : [];
  });
  deps.resilience.retain(new Set(slots.keys()), new Set(snapshot.routes.map((r) => r.id)));
  return { snapshot, router: compileRouter(routes), balancers, slots, changed: null, replaced: new Map() };
}

/** The health-change path: new balancers in the slots of the services that changed, nothing else. */
function updateServices(snapshot: Snapshot, previous: Runtime, deps: RuntimeDeps): Runtime {
  // Updated in place, like the slots the compiled routes read: a runtime of this configuration is
  // only ever replaced by the next one, and copying the map cost a millisecond at 5,000 services.
  const balancers = previous.balancers as Map<string, ServiceBalancer>;
  const changed: string[] = [];
  const replaced = new Map<string, ServiceBalancer>();
  const before = previous.snapshot.services;
  for (const name of changedServices(previous.snapshot, snapshot) ?? Object.keys(snapshot.services)) {
    const service = own(snapshot.services, name);
    if (!service || (Object.hasOwn(before, name) && before[name] === service)) continue;
    const slot = previous.slots.get(name);
    if (!slot) continue;
    const next = balancerFor(service, slot.balancer, deps);
    replaced.set(name, slot.balancer);
    slot.balancer = next.balancer;
    balancers.set(name, next.balancer);
    changed.push(name);
  }
  return { snapshot, router: previous.router, balancers, slots: previous.slots, changed, replaced };
}

/** The service's balancer: the old one when its fingerprint is unchanged, else a new one. */
function balancerFor(service: Runtime['snapshot']['services'][string], old: ServiceBalancer | undefined, deps: RuntimeDeps): { balancer: ServiceBalancer; resilience: ServiceResilience } {
  const resilience = deps.resilience.forService(service);
  const connectTimeoutMs = service.policy.connectTimeout ?? deps.connectTimeoutMs;
  // Hashed once: compared with the old balancer's, then handed to the new one.
  const fingerprint = ServiceBalancer.fingerprintOf(service, deps.pickerKind, connectTimeoutMs);
  const balancer = old && old.fingerprint === fingerprint ? old : new ServiceBalancer(service, deps.pools, deps.pickerKind, resilience.outlier, connectTimeoutMs, fingerprint);
  return { balancer, resilience };
}

function compileRoute(route: RouteSnapshot, slot: ServiceSlot, slots: ReadonlyMap<string, ServiceSlot>, consumers: ConsumerIndex, deps: RuntimeDeps, purges: CachePurges | undefined): CompiledRoute {
  const { metrics } = deps;
  const labels = { route: route.id, service: route.service };
  const byStatus = new Map<number, { inc(): void }>();
  const duration = metrics.requestDuration.labels(labels);
  const { policy } = route;
  const retries = policy.retries;
  const hsts = policy.hsts === null ? null : hstsHeaderValue(policy.hsts);
  return {
    id: route.id,
    host: route.host,
    path: route.path,
    service: route.service,
    strip: route.strip,
    upstreamPath: upstreamPathOf(route.strip, route.prepend),
    upstreamHost: route.upstreamHost,
    proto: route.proto,
    redirect: route.redirect ? compileRedirect(route.redirect) : null,
    access: route.access ? compileAccessRules(route.access) : null,
    countIpDenied: boundOnce(() => metrics.ipDenied.labels({ route: route.id })),
    grpc: route.proto === 'grpc' || route.proto === 'grpcs',
    countGrpcStatus: boundPerValue((grpcStatus: string) => metrics.grpcResponses.labels({ route: route.id, service: route.service, grpc_status: grpcStatus })),
    accessBindings: serializedBindings({ route: route.id, service: route.service }),
    get balancer() {
      return slot.balancer;
    },
    holdReason: route.heldBy === null ? null : (route.holdReason ?? `policy document ${route.heldBy} holds this route`),
    auth: compileRouteAuth(policy.auth, policy.authorize, { keys: deps.keys, consumers }),
    hsts: hsts,
    hstsHeader: hsts === null ? null : Object.freeze(['strict-transport-security', hsts]),
    redirectHttps: route.redirectHttps,
    countRedirect: boundPerValue(() => metrics.httpsRedirects.labels({ route: route.id })).bind(null, 'redirect'),
    rateLimits: compileRateLimits(policy.rateLimits, { routeId: route.id, service: route.service }, deps.limiter),
    maxBodyBytes: policy.limits.maxBodyBytes ?? null,
    maxHeaderBytes: policy.limits.maxHeaderBytes ?? null,
    responseHeadersTimeoutMs: policy.timeouts.responseHeaders ?? deps.responseTimeoutMs,
    requestTimeoutMs: policy.timeouts.request ?? null,
    retry: {
      attempts: retries.attempts,
      onConnectFailure: retries.on.includes('connect-failure'),
      onReset: retries.on.includes('reset'),
      onTimeout: retries.on.includes('timeout'),
      statuses: new Set(retries.statuses),
      backoffBaseMs: retries.backoff.base,
      backoffMaxMs: retries.backoff.max,
      nonIdempotent: retries.nonIdempotent,
      maxBodyBytes: retries.maxBodyBytes,
      budget: deps.resilience.budgetFor(route.id, retries),
    },
    websocket: { idleTimeoutMs: policy.websocket.idleTimeout, maxLifetimeMs: policy.websocket.maxLifetime },
    resilience: slot.resilience,
    mirror: compileMirror(route, slot, slots, metrics, policy.timeouts.responseHeaders ?? deps.responseTimeoutMs),
    cache: policy.cache !== null && deps.cache !== undefined ? compileRouteCache(route.id, policy.cache, deps.cache, purges ?? NO_PURGES, metrics) : null,
    countAuthRejection: boundPerValue((reason: string) => metrics.authRejections.labels({ route: route.id, reason })),
    countRateLimit: boundPerValue((result: 'allowed' | 'limited' | 'unavailable') => metrics.rateLimitDecisions.labels({ route: route.id, result })),
    countSizeRejection: boundPerValue((kind: 'body' | 'headers') => metrics.requestLimitRejections.labels({ route: route.id, kind })),
    countSticky: boundPerValue((outcome: 'kept' | 'assigned') => metrics.stickySubsets.labels({ service: route.service, outcome })),
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

/** Each cached route's policy fingerprint: the cache keeps only entries of these. */
function cacheFingerprints(snapshot: Snapshot): Map<string, string> {
  const out = new Map<string, string>();
  for (const r of snapshot.routes) if (r.policy.cache !== null) out.set(r.id, policyFingerprint(r.policy.cache));
  return out;
}

function samePath(path: string): string {
  return path;
}

function upstreamPathOf(strip: string | null, prepend: string | null): (path: string) => string {
  const stripped = strip === null ? samePath : stripper(strip);
  if (prepend === null) return stripped;
  // fabio's PrependPath + path (target.go); prepend is kept without a trailing slash, so the
  // two never meet as "//", and "/" after strip becomes "<prepend>/" as in fabio.
  return (path) => prepend + stripped(path);
}

/** A counter child of one route bound on first use. */
function boundOnce(bind: () => { inc(): void }): () => void {
  let child: { inc(): void } | undefined;
  return () => {
    child ??= bind();
    child.inc();
  };
}

/** Removes the route's `strip` prefix (fabio's `strip=`); the rest always starts with `/`. */
function stripper(strip: string): (path: string) => string {
  return (path) => {
    if (!path.startsWith(strip)) return path;
    const rest = path.slice(strip.length);
    return rest.startsWith('/') ? rest : `/${rest}`;
  };
}

/**
 * A counter of one route whose last label takes a few values: each value's child is bound on its
 * first use (like `countResponse` per status), so a request builds no label object.
 */
function boundPerValue<V extends string>(bind: (value: V) => { inc(): void }): (value: V) => void {
  const children = new Map<V, { inc(): void }>();
  return (value) => {
    let child = children.get(value);
    if (!child) {
      child = bind(value);
      children.set(value, child);
    }
    child.inc();
  };
}

/**
 * The runtime in force. Swapping is one assignment; afterwards pools of vanished endpoints are
 * closed gracefully and metric series of vanished services and routes are deleted.
 */
export class RuntimeHolder {
  current: Runtime | undefined;
  /** Pool id → balancers in force that use it. */
  private readonly poolUsers = new Map<string, number>();

  constructor(
    private readonly deps: RuntimeDeps,
    private readonly logger: Logger,
  ) {}

  /** Compiles without swapping: a snapshot that cannot be compiled leaves the one in force alone. */
  prepare(snapshot: Snapshot): Runtime {
    return buildRuntime(snapshot, this.current, this.deps);
  }

  /** Puts a prepared runtime in force (one assignment), then tidies what the old one used. */
  swap(next: Runtime): void {
    const previous = this.current;
    this.current = next;
    this.afterSwap(previous, next);
  }

  apply(snapshot: Snapshot): Runtime {
    const next = this.prepare(snapshot);
    this.swap(next);
    return next;
  }

  private afterSwap(previous: Runtime | undefined, next: Runtime): void {
    const { metrics } = this.deps;
    const changed = next.changed ?? Object.keys(next.snapshot.services);
    for (const name of changed) {
      const service = next.snapshot.services[name];
      if (!service) continue;
      metrics.endpointsHealthy.set({ service: name }, service.healthy);
      metrics.endpointsTotal.set({ service: name }, service.endpoints.length);
    }
    this.trackPools(previous, next);
    if (next.changed === null) this.deps.cache?.retain(cacheFingerprints(next.snapshot), next.snapshot.cachePurges ?? NO_PURGES);
    if (!previous || next.changed !== null) return;
    for (const name of Object.keys(previous.snapshot.services)) {
      if (Object.hasOwn(next.snapshot.services, name)) continue;
      metrics.endpointsHealthy.remove({ service: name });
      metrics.endpointsTotal.remove({ service: name });
      void removeSeriesMatching(metrics.upstreamRetries, { service: name });
      void removeSeriesMatching(metrics.circuitTransitions, { service: name });
      metrics.outlierEjections.remove({ service: name });
      metrics.retryBudgetExhausted.remove({ service: name });
      void removeSeriesMatching(metrics.stickySubsets, { service: name });
      void removeSeriesMatching(metrics.websocketBytes, { service: name });
      void removeSeriesMatching(metrics.websocketCloses, { service: name });
    }
    // Mirror series go with their route or with the target they counted (a policy changed it).
    const nextMirrors = new Map(next.snapshot.routes.map((r) => [r.id, mirrorTargetLabel(r.policy.mirror)]));
    for (const r of previous.snapshot.routes) {
      const target = mirrorTargetLabel(r.policy.mirror);
      if (target === null || nextMirrors.get(r.id) === target) continue;
      void removeSeriesMatching(metrics.mirrorRequests, { route: r.id, target });
      metrics.mirrorDuration.remove({ route: r.id, target });
    }
    const nextRoutes = new Set(next.snapshot.routes.map((r) => `${r.id}\u0000${r.service}`));
    for (const r of previous.snapshot.routes) {
      if (nextRoutes.has(`${r.id}\u0000${r.service}`)) continue;
      void removeSeriesMatching(metrics.requests, { route: r.id, service: r.service });
      void removeSeriesMatching(metrics.authRejections, { route: r.id });
      void removeSeriesMatching(metrics.rateLimitDecisions, { route: r.id });
      void removeSeriesMatching(metrics.requestLimitRejections, { route: r.id });
      metrics.ipDenied.remove({ route: r.id });
      metrics.httpsRedirects.remove({ route: r.id });
      void removeSeriesMatching(metrics.grpcResponses, { route: r.id, service: r.service });
      metrics.requestDuration.remove({ route: r.id, service: r.service });
      // The open-connections gauge stays while upgraded connections of the route are open: the
      // relays set it until their last one closes.
      void removeSeriesMatching(metrics.websocketUpgrades, { route: r.id });
      void removeSeriesMatching(metrics.cacheRequests, { route: r.id });
    }
  }

  /**
   * Pools are counted by the balancers that use them; a pool no balancer in force uses closes
   * after its in-flight requests. A health change adjusts the counts of the services it replaced;
   * a configuration change counts afresh (and closes pools made for a runtime never put in force).
   */
  private trackPools(previous: Runtime | undefined, next: Runtime): void {
    const { pools } = this.deps;
    if (previous && next.changed !== null) {
      const unused: string[] = [];
      for (const name of next.changed) {
        const old = next.replaced.get(name);
        const now = next.balancers.get(name);
        if (old === now) continue;
        if (now) for (const id of now.poolIds) this.poolUsers.set(id, (this.poolUsers.get(id) ?? 0) + 1);
        if (old) {
          for (const id of old.poolIds) {
            const left = (this.poolUsers.get(id) ?? 1) - 1;
            if (left > 0) this.poolUsers.set(id, left);
            else {
              this.poolUsers.delete(id);
              unused.push(id);
            }
          }
        }
      }
      const closed = pools.retire(unused);
      if (closed.length > 0) this.logger.debug({ endpoints: closed }, 'closing pools of removed endpoints after in-flight requests');
      return;
    }
    this.poolUsers.clear();
    for (const balancer of next.balancers.values()) for (const id of balancer.poolIds) this.poolUsers.set(id, (this.poolUsers.get(id) ?? 0) + 1);
    const closed = pools.retain(new Set(this.poolUsers.keys()));
    if (closed.length > 0) this.logger.debug({ endpoints: closed }, 'closing pools of removed endpoints after in-flight requests');
  }
}
