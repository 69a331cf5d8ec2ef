import type { ConsulViews, Problem, ServiceInstance } from '../core/types.ts';
import { contentHash } from '../core/hash.ts';
import { own, unroutableServiceName } from '../core/own.ts';
import { EMPTY_POLICY_SET, type PolicySet } from '../policy/resolve.ts';
import { indexPolicies, routePolicy, servicePolicy, type PolicyIndex, type RoutePolicy, type ServicePolicy } from '../policy/effective.ts';
import type { RouteDocument } from '../policy/schema.ts';
import { isUrlprefixTag, parseUrlprefixTag, type TagEnvironment } from './tags.ts';
import { DEFAULT_ROUTE_OPTIONS, type RouteOptions } from './route-options.ts';
import { buildEndpoints, PLAIN_HTTP, staticEndpoints, transportKey, type EndpointSnapshot, type UpstreamTransport } from './endpoints.ts';
import { listenerProblems, type ListenerFacts } from './listener-problems.ts';

export type { ListenerFacts } from './listener-problems.ts';
import { readCanaryKeys, resolveCanary, type CanaryKey, type CanarySnapshot } from './canary.ts';
import { chooseOwners, guardRoutes, type OwnershipMemory, type RouteGuard } from './route-owners.ts';
import { resolveKvCertificates, type KvCertificate } from './certificates.ts';
import { rolloutsInForce, type RolloutInForce } from './rollouts-in-force.ts';
import { readCachePurges, type CachePurges } from './cache-purges.ts';
import { EMPTY_FABIO_TABLE, evaluateFabio, FABIO_SERVICE_PREFIX, shareOf, slotsOf, summarise, type FabioRoute, type FabioSource, type FabioTable } from './fabio-kv.ts';
import { shapeEndpoints, shapingFor, type ServiceShaping } from './fabio-shaping.ts';
import { mirrorProblems, mirrorServicesOf, mirrorTargetsOf } from './mirror-targets.ts';

export type { RoutePolicy, ServicePolicy } from '../policy/effective.ts';
export type { PolicySet } from '../policy/resolve.ts';
export type { EndpointSnapshot, UpstreamTransport } from './endpoints.ts';
export type { RouteOptions, RouteProto, RouteRedirect } from './route-options.ts';
export type { CanarySnapshot, CanarySubset } from './canary.ts';
export { instanceStatus } from './endpoints.ts';
export { canaryFor } from './canary.ts';
export type { RouteGuard } from './route-owners.ts';
export type { KvCertificate } from './certificates.ts';
export type { RolloutInForce } from './rollouts-in-force.ts';

/**
 * The snapshot: everything the data plane needs, as plain frozen data. It is built by a pure
 * function of the watchers' views, the options and the previous snapshot (for last-known-good
 * values), so it can be tested without Consul and shipped to worker processes as JSON.
 */
export interface ServiceSnapshot {
  readonly name: string;
  /** `static`: upstream URLs from a route document (named `static:<document>`), health is passive only. */
  readonly kind: 'consul' | 'static';
  readonly tags: readonly string[];
  readonly endpoints: readonly EndpointSnapshot[];
  readonly healthy: number;
  readonly canary: CanarySnapshot | null;
  readonly policy: ServicePolicy;
}

export type RouteSource =
  | { readonly kind: 'tag'; readonly tag: string }
  | { readonly kind: 'file'; readonly document: string; readonly path: string }
  | { readonly kind: 'kv'; readonly document: string; readonly key: string; readonly modifyIndex: number }
  /** A fabio `route add` line (the first that added the route); `document` is `<key> line <n>`. */
  | FabioSource;

/** How the route's endpoints are kept fresh. */
export type Freshness = 'watched' | 'polled' | 'pinned' | 'static';

/** A route and its fabio options (route-options.ts; route documents set only `strip`). */
export interface RouteSnapshot extends RouteOptions {
  /** `[host]/path`, unique; used as the metric label and in `cgw routes`. */
  readonly id: string;
  /** Lower-case host, a host glob (`*.example.com`), or null for every host. */
  readonly host: string | null;
  readonly path: string;
  readonly service: string;
  readonly source: RouteSource;
  /** Plain-HTTP requests are redirected to HTTPS: the tag's `redirect-https` or the policy's `redirectHttps`. */
  readonly redirectHttps: boolean;
  readonly freshness: Freshness;
  readonly policy: RoutePolicy;
  /**
   * The document that holds this route (it answers 503 policy_unavailable): a rejected policy
   * with no good version, or the policy that protected the route before another service took it.
   */
  readonly heldBy: string | null;
  /** Why the route is held, as the client and `cgw status` are told. */
  readonly holdReason: string | null;
}

export interface Snapshot {
  /** Content hash: equal versions mean equal snapshots, so a rebuild can be skipped. */
  readonly version: string;
  readonly services: Readonly<Record<string, ServiceSnapshot>>;
  readonly routes: readonly RouteSnapshot[];
  readonly problems: readonly Problem[];
  /** Policy and route documents and consumers in force (the next build's last-known-good). */
  readonly policies: PolicySet;
  /** Routes protected by a policy of the service serving them (see route-owners.ts). */
  readonly routeGuards: Readonly<Record<string, RouteGuard>>;
  /** Certificates from `<prefix>certs/<name>`, checked, by name (keys redacted by `/v1/snapshot`). */
  readonly certificates: readonly KvCertificate[];
  /** Rollouts under way (`<prefix>rollouts/<service>`), by service: what the data plane counts. */
  readonly rollouts: Readonly<Record<string, RolloutInForce>>;
  /** Cache purge generations from `<prefix>cache-purge/` (absent in snapshots made before them). */
  readonly cachePurges?: CachePurges;
}

export const STATIC_SERVICE_PREFIX = 'static:';

export interface BuildOptions {
  readonly allowWarning: boolean;
  readonly kvPrefix: string;
  /** The datacenter `$DC` in route tags stands for; null or absent while it is not known. */
  readonly datacenter?: string | null;
  /** What the listeners offer, so routes asking for more are shown as problems (absent: nothing is checked). */
  readonly listeners?: ListenerFacts;
}


/**
 * What a snapshot was built from, kept beside it (never inside: the snapshot is plain data) so the
 * next build can reuse what did not change. A health change of one service rebuilds that service
 * and nothing else; routes, ownership and policies are built again only when the catalog, the KV
 * view or the documents changed. The result is the same as a build from scratch.
 */
interface ConfigPart {
  readonly catalog: ConsulViews['catalog'];
  readonly kv: ConsulViews['kv'];
  readonly fabio: ConsulViews['fabio'];
  /** What fabio's KV lines say, with each key's last good lines. */
  readonly fabioTable: FabioTable;
  readonly policies: PolicySet;
  readonly allowWarning: boolean;
  readonly kvPrefix: string;
  readonly datacenter: string | null;
  readonly listeners: ListenerFacts | undefined;
  readonly routes: readonly RouteSnapshot[];
  readonly routeGuards: Readonly<Record<string, RouteGuard>>;
  readonly certificates: readonly KvCertificate[];
  readonly rollouts: Readonly<Record<string, RolloutInForce>>;
  readonly cachePurges: CachePurges;
  readonly problems: readonly Problem[];
  readonly version: string;
  /** Routed services in name order, with what their build depends on besides health. */
  readonly services: readonly ServicePlan[];
  readonly planByName: ReadonlyMap<string, ServicePlan>;
}

interface ServicePlan {
  readonly name: string;
  readonly policy: ServicePolicy;
  /** Versions of the documents the policy comes from: equal keys, equal policies. */
  readonly policyKey: string;
  readonly staticDoc: NamedRouteDocument | undefined;
  readonly canary: CanaryKey | undefined;
  /** How its instances are dialled (from its route tags), and that as a comparable key. */
  readonly transport: UpstreamTransport;
  readonly transportKey: string;
  /** fabio KV lines that exclude or weigh this Consul service's instances. */
  readonly shaping: ServiceShaping | undefined;
  readonly shapingKey: string;
}

interface ServiceBuild {
  readonly instances: readonly ServiceInstance[] | undefined;
  readonly tags: readonly string[] | undefined;
  readonly canaryKey: string;
  readonly shapingKey: string;
  readonly policyKey: string;
  readonly tagsKey: string;
  readonly transportKey: string;
  readonly allowWarning: boolean;
  readonly problems: readonly Problem[];
  /** The service's content hash as two 32-bit words, summed into the snapshot version. */
  readonly digest: readonly [number, number];
}

/** What the version and the problems of a snapshot are summed from, for the next incremental build. */
interface ServiceTotals {
  readonly sumA: number;
  readonly sumB: number;
  /** Services whose build has problems, with them (usually none or a few). */
  readonly problems: ReadonlyMap<string, readonly Problem[]>;
}

const CONFIG = new WeakMap<Snapshot, ConfigPart>();
const TOTALS = new WeakMap<Snapshot, ServiceTotals>();
const BUILT = new WeakMap<ServiceSnapshot, ServiceBuild>();
/**
 * For a snapshot built from another with the same configuration: the services that are other
 * objects. The other snapshot is held weakly: a strong reference would chain every snapshot ever
 * built to the one in force.
 */
const CHANGES = new WeakMap<Snapshot, { readonly from: WeakRef<Snapshot>; readonly services: readonly string[] }>();
const NO_INSTANCES: readonly ServiceInstance[] = Object.freeze([]);

/**
 * Builds the snapshot. `healthChanged` (optional) names every service whose entry in
 * `views.health` was set or removed since the views `previous` was built from: with it, and the
 * same configuration as `previous`, only those services are looked at, so a health change costs
 * the same at 5,000 services as at 5 (but for one shallow copy of the services record). Without
 * it every service is compared. Either way the result is the same as a build from scratch.
 */
export function buildSnapshot(
  views: ConsulViews,
  options: BuildOptions,
  previous?: Snapshot,
  policies: PolicySet = EMPTY_POLICY_SET,
  healthChanged?: ReadonlySet<string>,
): Snapshot {
  const before = previous ? CONFIG.get(previous) : undefined;
  const config =
    before &&
    before.catalog === views.catalog &&
    before.kv === views.kv &&
    before.fabio === views.fabio &&
    before.policies === policies &&
    before.allowWarning === options.allowWarning &&
    before.kvPrefix === options.kvPrefix &&
    before.datacenter === (options.datacenter ?? null) &&
    before.listeners === options.listeners
      ? before
      : buildConfig(views, options, previous, policies);
  const totals = previous ? TOTALS.get(previous) : undefined;
  if (previous && config === before && healthChanged && totals) return updateHealth(previous, config, totals, views, options, healthChanged);

  const services: Record<string, ServiceSnapshot> = {};
  const problems = new Map<string, readonly Problem[]>();
  const changed: string[] = [];
  let sumA = 0;
  let sumB = 0;
  for (const plan of config.services) {
    const known = previous ? own(previous.services, plan.name) : undefined;
    const service = serviceOf(plan, views, options, known);
    const built = BUILT.get(service) as ServiceBuild;
    services[plan.name] = service;
    if (service !== known) changed.push(plan.name);
    if (built.problems.length > 0) problems.set(plan.name, built.problems);
    sumA = (sumA + built.digest[0]) >>> 0;
    sumB = (sumB + built.digest[1]) >>> 0;
  }
  const snapshot = finish(config, services, { sumA, sumB, problems }, policies, undefined);
  if (previous && config === before) CHANGES.set(snapshot, { from: new WeakRef(previous), services: changed });
  return snapshot;
}

/** The health-change path: the named services are built again, every other one is kept. */
function updateHealth(
  previous: Snapshot,
  config: ConfigPart,
  totals: ServiceTotals,
  views: ConsulViews,
  options: BuildOptions,
  healthChanged: ReadonlySet<string>,
): Snapshot {
  const changed: string[] = [];
  let { sumA, sumB } = totals;
  let problems = totals.problems;
  let problemsMoved = false;
  const replaced: ServiceSnapshot[] = [];
  for (const name of healthChanged) {
    const plan = config.planByName.get(name);
    const known = own(previous.services, name);
    if (!plan || !known) continue;
    const service = serviceOf(plan, views, options, known);
    if (service === known) continue;
    const was = BUILT.get(known) as ServiceBuild;
    const now = BUILT.get(service) as ServiceBuild;
    sumA = (sumA - was.digest[0] + now.digest[0]) >>> 0;
    sumB = (sumB - was.digest[1] + now.digest[1]) >>> 0;
    if (was.problems.length > 0 || now.problems.length > 0) {
      if (!problemsMoved) problems = new Map(problems);
      problemsMoved = true;
      const next = problems as Map<string, readonly Problem[]>;
      if (now.problems.length > 0) next.set(name, now.problems);
      else next.delete(name);
    }
    changed.push(name);
    replaced.push(service);
  }
  if (changed.length === 0) return previous;
  const services: Record<string, ServiceSnapshot> = { ...previous.services };
  for (const service of replaced) services[service.name] = service;
  const snapshot = finish(config, services, { sumA, sumB, problems }, previous.policies, problemsMoved ? undefined : previous.problems);
  CHANGES.set(snapshot, { from: new WeakRef(previous), services: changed });
  return snapshot;
}

function finish(config: ConfigPart, services: Record<string, ServiceSnapshot>, totals: ServiceTotals, policies: PolicySet, keptProblems: readonly Problem[] | undefined): Snapshot {
  let problems = keptProblems;
  if (!problems) {
    const serviceProblems = [...totals.problems.values()].flat();
    problems = serviceProblems.length === 0 ? config.problems : Object.freeze(sortProblems([...config.problems, ...serviceProblems]));
  }
  const snapshot: Snapshot = {
    version: contentHash([config.version, totals.sumA, totals.sumB, config.services.length]),
    services,
    routes: config.routes,
    problems,
    policies,
    routeGuards: config.routeGuards,
    certificates: config.certificates,
    rollouts: config.rollouts,
    cachePurges: config.cachePurges,
  };
  Object.freeze(services);
  Object.freeze(snapshot);
  CONFIG.set(snapshot, config);
  TOTALS.set(snapshot, totals);
  return snapshot;
}

/**
 * The services that are other objects in `to` than in `from`, when `to` was built from `from`
 * with the same routes and documents; undefined when that is not known (compare them all).
 */
export function changedServices(from: Snapshot | undefined, to: Snapshot): readonly string[] | undefined {
  const change = CHANGES.get(to);
  return from && change?.from.deref() === from ? change.services : undefined;
}

/**
 * A snapshot received as a change of `base` (a worker's delta): `base` with these services
 * replaced, remembered as such so what follows looks at those services only.
 */
export function withServices(base: Snapshot, version: string, replaced: Readonly<Record<string, ServiceSnapshot>>, problems: readonly Problem[]): Snapshot {
  const services: Record<string, ServiceSnapshot> = { ...base.services, ...replaced };
  const snapshot: Snapshot = Object.freeze({ ...base, version, services: Object.freeze(services), problems });
  CHANGES.set(snapshot, { from: new WeakRef(base), services: Object.keys(replaced) });
  return snapshot;
}

/** One service: the one in `known` when nothing it is built from changed, else a new build. */
function serviceOf(plan: ServicePlan, views: ConsulViews, options: BuildOptions, known: ServiceSnapshot | undefined): ServiceSnapshot {
  const { name, policy, staticDoc } = plan;
  const instances = staticDoc ? undefined : (views.health.get(name) ?? NO_INSTANCES);
  const canaryKey = plan.canary ? `${plan.canary.modifyIndex}\u0000${plan.canary.value ?? ''}` : '';
  const tags = staticDoc ? undefined : own(views.catalog, name);
  const was = known ? BUILT.get(known) : undefined;
  // The catalog is parsed anew on each of its changes: compare the tags themselves only then.
  const tagsKey = staticDoc ? `static\u0000${JSON.stringify(staticDoc.upstreams)}` : was && was.tags === tags ? was.tagsKey : (tags ?? []).join('\u0000');
  if (
    known &&
    was &&
    was.instances === instances &&
    was.canaryKey === canaryKey &&
    was.shapingKey === plan.shapingKey &&
    was.policyKey === plan.policyKey &&
    was.tagsKey === tagsKey &&
    was.transportKey === plan.transportKey &&
    was.allowWarning === options.allowWarning
  ) {
    return known;
  }
  const problems: Problem[] = [];
  let service: ServiceSnapshot;
  if (staticDoc?.upstreams) {
    const endpoints = staticEndpoints(staticDoc.upstreams);
    service = { name, kind: 'static', tags: [], endpoints, healthy: endpoints.length, canary: null, policy };
  } else {
    const built = buildEndpoints(name, instances ?? NO_INSTANCES, options.allowWarning, problems, plan.transport);
    // Canary weights are cgw's own and win over fabio's weight lines for the same service.
    const shaping = plan.shaping && plan.canary && plan.shaping.weights.length > 0 ? reportCanaryWins(name, plan.shaping, problems) : plan.shaping;
    const endpoints = shaping ? shapeEndpoints(name, built, shaping, problems) : built;
    const canary = resolveCanary(plan.canary, endpoints, known?.canary ?? null, problems);
    service = {
      name,
      kind: 'consul',
      tags: [...(own(views.catalog, name) ?? [])],
      endpoints,
      healthy: endpoints.filter((e) => e.weight > 0).length,
      canary,
      policy,
    };
  }
  deepFreeze(service);
  // Problems count too: a refused value that keeps the last good one changes no endpoint, but must show.
  const hash = contentHash([service, problems]);
  BUILT.set(service, {
    instances,
    tags,
    canaryKey,
    shapingKey: plan.shapingKey,
    policyKey: plan.policyKey,
    tagsKey,
    transportKey: plan.transportKey,
    allowWarning: options.allowWarning,
    problems: Object.freeze(problems),
    digest: [parseInt(hash.slice(0, 8), 16), parseInt(hash.slice(8, 16), 16)],
  });
  return service;
}

/** Routes, their owners and policies, and the problems they have: everything but health. */
function buildConfig(views: ConsulViews, options: BuildOptions, previous: Snapshot | undefined, policies: PolicySet): ConfigPart {
  const problems: Problem[] = [...policies.problems];
  const index = indexPolicies(policies);
  const routeDocuments = routeDocumentsOf(policies);
  const staticByService = new Map(routeDocuments.filter((d) => d.upstreams).map((d) => [d.service, d]));
  // The lines are run again only when fabio's keys changed, not on every catalog change.
  const before = previous ? CONFIG.get(previous) : undefined;
  const fabioTable = !views.fabio ? EMPTY_FABIO_TABLE : before?.fabio === views.fabio ? before.fabioTable : evaluateFabio(views.fabio, before?.fabioTable.good ?? EMPTY_FABIO_TABLE.good);
  for (const p of fabioTable.problems) problems.push(p);
  const fabioDocs = fabioTable.routes.map(fabioRouteDocument);
  const memory: OwnershipMemory = {
    owners: new Map((previous?.routes ?? []).map((r) => [r.id, r.service])),
    guards: previous?.routeGuards ?? {},
  };
  const tagRoutes = collectRoutes(views, problems, { datacenter: options.datacenter ?? null });
  const draftRoutes = [...collectDocumentRoutes(routeDocuments), ...collectFabioRoutes(fabioDocs), ...withoutRemoved(tagRoutes.routes, fabioTable)];
  const routes = chooseOwners(draftRoutes, memory, index, problems);
  const servedBy = new Set(routes.map((r) => r.service));
  for (const d of fabioDocs) if (servedBy.has(d.service)) staticByService.set(d.service, d);
  const fabioWeights = weightsByService(fabioTable, routes, problems);
  const policyRoutes = routes.map((r) => ({ ...r, policy: routePolicy(index, r.service, r.id) }));
  // Shadow services are built like routed ones (instances, health, canary), so a mirror can pick them.
  const routedServices = [...new Set([...routes.map((r) => r.service), ...mirrorTargetsOf(policyRoutes)])].sort();
  const canaryValues = readCanaryKeys(views, options.kvPrefix);
  const plans: ServicePlan[] = routedServices.map((name) => ({
    name,
    policy: servicePolicy(index, name),
    policyKey: `${index.services.get(name)?.version ?? ''}|${index.defaults?.version ?? ''}`,
    staticDoc: staticByService.get(name),
    canary: canaryValues.get(name),
    transport: tagRoutes.transports.get(name) ?? PLAIN_HTTP,
    transportKey: transportKey(tagRoutes.transports.get(name) ?? PLAIN_HTTP),
    ...shapingOf(staticByService.has(name) ? undefined : shapingFor(fabioTable, name, fabioWeights.get(name) ?? [])),
  }));
  const planByName = new Map(plans.map((p) => [p.name, p]));

  const { guards, holds } = guardRoutes(policyRoutes, memory, index);
  const finalRoutes = policyRoutes.map((r) => finishRoute(r, planByName.get(r.service), policies.held, holds.get(r.id)));
  for (const [id, hold] of holds) problems.push({ kind: 'route', subject: id, message: hold.reason });
  reportUnusedPolicies(index, new Set(routes.map((r) => r.id)), planByName, problems);
  reportAuthorizeWithoutAuth(finalRoutes, problems);
  mirrorProblems(finalRoutes, views.catalog, problems);
  if (options.listeners) problems.push(...listenerProblems(finalRoutes, options.listeners));
  reportUnknownPlans(policies, problems);
  for (const [service, entry] of canaryValues) {
    if (!planByName.has(service)) {
      problems.push({ kind: 'canary', subject: entry.key, message: `service "${service}" is not routed by the gateway; weights ignored` });
    }
  }
  const certificates = resolveKvCertificates(views.kv, options.kvPrefix, previous?.certificates ?? [], problems);
  const rollouts = rolloutsInForce(views.kv, options.kvPrefix, (service) => planByName.has(service), problems);
  const cachePurges = readCachePurges(views.kv, options.kvPrefix, previous?.cachePurges, problems);
  const body = { routes: finalRoutes, problems: sortProblems(problems), policies, routeGuards: guards, certificates, rollouts, cachePurges };
  deepFreeze(body);
  return {
    catalog: views.catalog,
    kv: views.kv,
    fabio: views.fabio,
    fabioTable,
    policies,
    allowWarning: options.allowWarning,
    kvPrefix: options.kvPrefix,
    datacenter: options.datacenter ?? null,
    listeners: options.listeners,
    routes: body.routes,
    routeGuards: body.routeGuards,
    certificates: body.certificates,
    rollouts: body.rollouts,
    cachePurges: body.cachePurges,
    problems: body.problems,
    version: contentHash(body),
    services: plans,
    planByName,
  };
}

type DraftRoute = Omit<RouteSnapshot, 'freshness' | 'policy' | 'heldBy' | 'holdReason'>;

interface NamedRouteDocument extends RouteDocument {
  readonly id: string;
  /** The Consul service, or `static:<name>` for upstream URLs. */
  readonly service: string;
  readonly source: RouteSource;
}

function routeDocumentsOf(policies: PolicySet): NamedRouteDocument[] {
  const out: NamedRouteDocument[] = [];
  for (const d of policies.documents) {
    if (d.parsed.kind !== 'route') continue;
    const doc = d.parsed.doc;
    const source: RouteSource =
      d.origin.kind === 'file'
        ? { kind: 'file', document: d.id, path: d.origin.path }
        : { kind: 'kv', document: d.id, key: d.origin.key, modifyIndex: d.origin.modifyIndex };
    out.push({ ...doc, id: d.id, service: doc.service ?? `${STATIC_SERVICE_PREFIX}${d.name}`, source });
  }
  return out;
}

function collectDocumentRoutes(docs: readonly NamedRouteDocument[]): DraftRoute[] {
  return docs.map((d) => {
    const host = d.host ?? null;
    return { id: `${host ?? ''}${d.path}`, host, path: d.path, ...DEFAULT_ROUTE_OPTIONS, strip: d.strip ?? null, service: d.service, source: d.source };
  });
}

/** A fabio route as a route document with fixed upstreams, served by the static service `fabio:<route id>`. */
function fabioRouteDocument(r: FabioRoute): NamedRouteDocument & { readonly fabio: FabioRoute } {
  // Targets with the same URL (added under two service names) are one endpoint with their shares summed.
  const slots = slotsOf(shareOf(r.targets.map((t) => t.fixedWeight)));
  const byUrl = new Map<string, number>();
  r.targets.forEach((t, i) => byUrl.set(t.url, (byUrl.get(t.url) ?? 0) + (slots[i] ?? 0)));
  const upstreams = [...byUrl].filter(([, weight]) => weight > 0).map(([url, weight]) => ({ url, weight }));
  return { id: r.source.document, service: `${FABIO_SERVICE_PREFIX}${r.id}`, source: r.source, path: r.route.path, upstreams, fabio: r };
}

function collectFabioRoutes(docs: readonly (NamedRouteDocument & { readonly fabio: FabioRoute })[]): DraftRoute[] {
  // Every option the tag parser read (strip today, more as tags learn them) comes along.
  return docs.map((d) => ({ ...d.fabio.route, id: d.fabio.id, service: d.service, source: d.source }));
}

/** Tag routes that `route del <svc>[ <src>]` lines remove (fabio runs its KV lines after the tag lines). */
function withoutRemoved(routes: DraftRoute[], table: FabioTable): DraftRoute[] {
  if (table.removals.length === 0) return routes;
  // Service → route ids removed, or null for all of them (Maps: names come from outside).
  const removed = new Map<string, Set<string> | null>();
  for (const d of table.removals) {
    const ids = removed.get(d.service);
    if (d.routeId === null) removed.set(d.service, null);
    else if (ids === undefined) removed.set(d.service, new Set([d.routeId]));
    else ids?.add(d.routeId);
  }
  return routes.filter((r) => {
    const ids = removed.get(r.service);
    return ids === undefined ? true : ids !== null && !ids.has(r.id);
  });
}

/**
 * `route weight` lines for routes that fabio lines did not add: each applies to the service
 * serving the route, when it is a Consul service the line names (or any, without a name).
 */
function weightsByService(table: FabioTable, routes: readonly DraftRoute[], problems: Problem[]): Map<string, ServiceShaping['weights'][number][]> {
  const out = new Map<string, ServiceShaping['weights'][number][]>();
  const byId = new Map(routes.map((r) => [r.id, r]));
  const ineffective: Problem[] = [];
  for (const rule of table.weights) {
    const route = byId.get(rule.routeId);
    const fits = route !== undefined && route.source.kind === 'tag' && (rule.service === null || rule.service === route.service);
    if (!route || !fits) {
      const why = !route
        ? `no route ${rule.routeId}`
        : route.source.kind === 'fabio-kv'
          ? `route ${rule.routeId} is added by ${route.source.document}, after this line (lines apply in order)`
          : route.source.kind !== 'tag'
            ? `route ${rule.routeId} is declared by document ${route.source.document}, whose upstreams fabio lines do not weigh`
          : `route ${rule.routeId} is served by service "${route.service}", not "${rule.service ?? ''}"`;
      ineffective.push({ kind: 'fabio-kv', subject: rule.where, message: `route weight: ${why}; line has no effect` });
      continue;
    }
    const list = out.get(route.service) ?? [];
    list.push({ weight: rule.weight, tags: rule.tags, where: rule.where });
    out.set(route.service, list);
  }
  summarise('route weight lines', ineffective, problems);
  return out;
}

function shapingOf(shaping: ServiceShaping | undefined): { shaping: ServiceShaping | undefined; shapingKey: string } {
  return { shaping, shapingKey: shaping ? JSON.stringify(shaping) : '' };
}

function reportCanaryWins(service: string, shaping: ServiceShaping, problems: Problem[]): ServiceShaping {
  for (const w of shaping.weights) problems.push({ kind: 'fabio-kv', subject: w.where, message: `service "${service}" has canary weights, which win over fabio route weight lines; line has no effect` });
  return { exclusions: shaping.exclusions, weights: [] };
}

function collectRoutes(views: ConsulViews, problems: Problem[], env: TagEnvironment): { routes: DraftRoute[]; transports: Map<string, UpstreamTransport> } {
  const out: DraftRoute[] = [];
  const transports = new Map<string, UpstreamTransport>();
  for (const service of Object.keys(views.catalog).sort()) {
    const tags = own(views.catalog, service) ?? [];
    const unroutable = unroutableServiceName(service);
    if (unroutable !== null) {
      if (tags.some(isUrlprefixTag)) problems.push({ kind: 'service', subject: service, message: `service name "${service}" cannot be routed (${unroutable}); its tags are ignored` });
      continue;
    }
    // Sorted, so which tag sets the service's transport does not depend on Consul's tag order.
    let transport: { readonly tag: string; readonly transport: UpstreamTransport; readonly key: string } | undefined;
    for (const tag of [...tags].filter(isUrlprefixTag).sort()) {
      const parsed = parseUrlprefixTag(tag, env);
      if (!parsed.ok) {
        problems.push({ kind: 'tag', subject: service, message: `tag "${shownTag(tag)}": ${parsed.error}` });
        continue;
      }
      const { host, path, ...options } = parsed.route;
      if (options.redirect !== null) {
        // A redirect route answers itself and never dials: it has no say in how instances are.
        out.push({ id: `${host ?? ''}${path}`, host, path, ...options, service, source: { kind: 'tag', tag } });
        continue;
      }
      const wanted = transportOf(options);
      const key = transportKey(wanted);
      if (transport && transport.key !== key) {
        problems.push({
          kind: 'tag',
          subject: service,
          message: `tag "${shownTag(tag)}": asks to dial the instances ${describeTransport(wanted)}, but tag "${shownTag(transport.tag)}" of the same service dials them ${describeTransport(transport.transport)}; a service is dialled one way (route skipped)`,
        });
        continue;
      }
      transport ??= { tag, transport: wanted, key };
      out.push({ id: `${host ?? ''}${path}`, host, path, ...options, service, source: { kind: 'tag', tag } });
    }
    if (transport && transport.key !== transportKey(PLAIN_HTTP)) transports.set(service, transport.transport);
  }
  return { routes: out, transports };
}

/**
 * fabio: proto=https (and grpcs) dials the instance over TLS, tlsskipverify=true skips the
 * certificate check, and host=<name> (not dst) is also the TLS server name (route/route.go,
 * addTarget: `tls.Config{ServerName: t.Host, ...}`); without it the instance address is verified.
 */
function transportOf(options: RouteOptions): UpstreamTransport {
  if (options.proto !== 'https' && options.proto !== 'grpcs') return PLAIN_HTTP;
  const named = options.upstreamHost !== null && options.upstreamHost !== 'dst' ? options.upstreamHost.replace(/:\d+$/, '') : null;
  return { scheme: 'https', tlsSkipVerify: options.tlsSkipVerify, serverName: named };
}

function describeTransport(t: UpstreamTransport): string {
  if (t.scheme === 'http') return 'over plain HTTP';
  return `over TLS${t.tlsSkipVerify ? ' without verifying certificates' : ''}${t.serverName ? ` as ${t.serverName}` : ''}`;
}

/** A tag as shown in a problem: cut, since a tag can be kilobytes long. */
function shownTag(tag: string): string {
  return tag.length > 200 ? `${tag.slice(0, 197)}...` : tag;
}

/** A policy whose target does not exist is in force but does nothing: most often a typo in appliesTo. */
function reportUnusedPolicies(index: PolicyIndex, routeIds: ReadonlySet<string>, services: ReadonlyMap<string, unknown>, problems: Problem[]): void {
  for (const [route, doc] of index.routes) {
    if (!routeIds.has(route)) problems.push({ kind: 'policy', subject: doc.id, message: `applies to route ${route}, which does not exist (route ids as \`cgw routes\` shows them); it has no effect` });
  }
  for (const [service, doc] of index.services) {
    if (!services.has(service)) problems.push({ kind: 'policy', subject: doc.id, message: `applies to service "${service}", which is not routed; it has no effect until it is` });
  }
}

/** Requirements on a public route are never checked; an operator who wrote them meant to protect it. */
function reportAuthorizeWithoutAuth(routes: readonly RouteSnapshot[], problems: Problem[]): void {
  for (const r of routes) {
    const { auth, authorize, sources } = r.policy;
    const demands = authorize !== null && (authorize.scopes.length > 0 || Object.keys(authorize.claims).length > 0);
    if (!demands || (auth !== null && auth.methods.length > 0)) continue;
    problems.push({
      kind: 'policy',
      subject: sources.authorize ?? r.id,
      message: `route ${r.id} is public (${sources.auth ? `auth.methods is empty in ${sources.auth}` : 'no auth section applies'}), so its authorize requirements are never checked`,
    });
  }
}

/** A consumer's plan that no rate limit defines gets each rule's own limit: usually a typo. */
function reportUnknownPlans(policies: PolicySet, problems: Problem[]): void {
  const defined = new Set<string>();
  for (const d of policies.documents) {
    if (d.parsed.kind !== 'policy') continue;
    for (const rule of d.parsed.doc.rateLimits ?? []) for (const plan of Object.keys(rule.plans ?? {})) defined.add(plan);
  }
  for (const c of Object.values(policies.consumers)) {
    const plan = c.record.plan;
    if (plan === undefined || defined.has(plan)) continue;
    problems.push({
      kind: 'consumer',
      subject: c.id,
      message: `plan "${plan}" is not defined by any rate limit in force (${defined.size > 0 ? `plans: ${[...defined].sort().join(', ')}` : 'no policy defines plans'}); the consumer gets each rule's own limit`,
    });
  }
}

const FRESHNESS: Record<ServicePolicy['discovery']['mode'], Freshness> = { watch: 'watched', poll: 'polled', pinned: 'pinned' };

function finishRoute(
  route: DraftRoute & { readonly policy: RoutePolicy },
  service: ServicePlan | undefined,
  held: PolicySet['held'],
  takeover: { readonly document: string; readonly reason: string } | undefined,
): RouteSnapshot {
  const freshness: Freshness = service?.staticDoc?.upstreams ? 'static' : FRESHNESS[service?.policy.discovery.mode ?? 'watch'];
  const holder = held.find(({ target }) => target === 'defaults' || ('service' in target ? target.service === route.service : target.route === route.id));
  const heldBy = holder?.document ?? takeover?.document ?? null;
  const holdReason = holder ? `policy document ${holder.document} for this route is invalid and no good version is known` : (takeover?.reason ?? null);
  return { ...route, redirectHttps: route.redirectHttps || route.policy.redirectHttps, freshness, heldBy, holdReason };
}

/** Consul services the snapshot needs beyond those with urlprefix- tags: the ones route documents name. */
export function servicesNamedByRoutes(policies: PolicySet): Set<string> {
  const out = new Set<string>();
  for (const d of policies.documents) if (d.parsed.kind === 'route' && d.parsed.doc.service) out.add(d.parsed.doc.service);
  return out;
}

/** Consul services to watch beyond those with urlprefix- tags: named by route documents or mirrored to. */
export function servicesNamedByDocuments(policies: PolicySet): Set<string> {
  const out = servicesNamedByRoutes(policies);
  for (const name of mirrorServicesOf(policies)) out.add(name);
  return out;
}

/** Discovery mode per Consul service whose policy chooses one (absent: blocking watch). */
export function discoveryModes(policies: PolicySet): Map<string, ServicePolicy['discovery']> {
  const out = new Map<string, ServicePolicy['discovery']>();
  const index = indexPolicies(policies);
  for (const name of index.services.keys()) {
    const policy = servicePolicy(index, name);
    if (policy.discovery.mode !== 'watch') out.set(name, policy.discovery);
  }
  return out;
}

function sortProblems(problems: Problem[]): Problem[] {
  return problems.sort((a, b) => (a.kind + a.subject + a.message < b.kind + b.subject + b.message ? -1 : 1));
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
