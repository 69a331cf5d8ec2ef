import type { ConsulViews, HealthStatus, Problem, ServiceInstance } from '../core/types.ts';
import { contentHash } from '../core/hash.ts';
import { parseCanaryValue, type CanaryWeights } from '../policy/canary.ts';
import { EMPTY_POLICY_SET, type PolicySet } from '../policy/resolve.ts';
import { indexPolicies, routePolicy, servicePolicy, type PolicyIndex, type RoutePolicy, type ServicePolicy } from '../policy/effective.ts';
import type { RouteDocument } from '../policy/schema.ts';
import { isUrlprefixTag, parseUrlprefixTag } from './tags.ts';

export type { RoutePolicy, ServicePolicy } from '../policy/effective.ts';
export type { PolicySet } from '../policy/resolve.ts';

/**
 * The snapshot: everything the data plane needs, as plain frozen data. It is built by a pure
 * function of the watchers' views, the options and the previous snapshot (for last-known-good
 * values), so it can be tested without Consul and shipped to worker processes as JSON.
 */
export interface EndpointSnapshot {
  readonly id: string;
  readonly node: string;
  readonly address: string;
  readonly port: number;
  /** `address:port`; endpoints with the same key share one connection pool. */
  readonly key: string;
  readonly tags: readonly string[];
  readonly status: HealthStatus;
  /** Traffic weight: Consul's `Weights.Passing` or `Weights.Warning`, 0 when not admitted. */
  readonly weight: number;
  /** Only static upstreams can be https; absent means http. */
  readonly scheme?: 'https';
}

export interface CanarySubset {
  readonly tag: string;
  readonly configuredWeight: number;
  /** Share after empty subsets were removed and the rest renormalised to 100; 0 when empty. */
  readonly effectiveWeight: number;
  /** Keys of the admitted endpoints carrying the tag. */
  readonly endpoints: readonly string[];
}

export interface CanarySnapshot {
  readonly key: string;
  readonly modifyIndex: number;
  readonly weights: CanaryWeights['weights'];
  readonly subsets: readonly CanarySubset[];
  /** True when no subset has a healthy endpoint, so plain balancing over all endpoints applies. */
  readonly fallback: boolean;
}

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
  | { readonly kind: 'kv'; readonly document: string; readonly key: string; readonly modifyIndex: number };

/** How the route's endpoints are kept fresh. */
export type Freshness = 'watched' | 'polled' | 'pinned' | 'static';

export interface RouteSnapshot {
  /** `[host]/path`, unique; used as the metric label and in `cgw routes`. */
  readonly id: string;
  readonly host: string | null;
  readonly path: string;
  readonly strip: string | null;
  readonly service: string;
  readonly source: RouteSource;
  readonly freshness: Freshness;
  readonly policy: RoutePolicy;
  /** A rejected policy document with no good version targets this route: it answers 503. */
  readonly heldBy: string | null;
}

export interface Snapshot {
  /** Content hash: equal versions mean equal snapshots, so a rebuild can be skipped. */
  readonly version: string;
  readonly services: Readonly<Record<string, ServiceSnapshot>>;
  readonly routes: readonly RouteSnapshot[];
  readonly problems: readonly Problem[];
  /** Policy and route documents and consumers in force (the next build's last-known-good). */
  readonly policies: PolicySet;
}

export const STATIC_SERVICE_PREFIX = 'static:';

export interface BuildOptions {
  readonly allowWarning: boolean;
  readonly kvPrefix: string;
}

const STATUS_RANK: Record<HealthStatus, number> = { passing: 0, warning: 1, critical: 2 };

/** An instance is as healthy as its worst check: service checks, node checks, maintenance. */
export function instanceStatus(instance: ServiceInstance): HealthStatus {
  let worst: HealthStatus = 'passing';
  for (const c of instance.checks) if (STATUS_RANK[c.status] > STATUS_RANK[worst]) worst = c.status;
  return worst;
}

export function buildSnapshot(views: ConsulViews, options: BuildOptions, previous?: Snapshot, policies: PolicySet = EMPTY_POLICY_SET): Snapshot {
  const problems: Problem[] = [...policies.problems];
  const index = indexPolicies(policies);
  const routeDocuments = routeDocumentsOf(policies);
  const staticByService = new Map(routeDocuments.filter((d) => d.upstreams).map((d) => [d.service, d]));
  const draftRoutes = [...collectDocumentRoutes(routeDocuments), ...collectRoutes(views, problems)];
  const routes = dedupeRoutes(draftRoutes, problems);
  const routedServices = [...new Set(routes.map((r) => r.service))].sort();
  const canaryValues = readCanaryKeys(views, options.kvPrefix);

  const services: Record<string, ServiceSnapshot> = {};
  for (const name of routedServices) {
    const policy = servicePolicy(index, name);
    const staticDoc = staticByService.get(name);
    if (staticDoc?.upstreams) {
      const endpoints = staticEndpoints(staticDoc.upstreams);
      services[name] = { name, kind: 'static', tags: [], endpoints, healthy: endpoints.length, canary: null, policy };
      continue;
    }
    const endpoints = buildEndpoints(views.health.get(name) ?? [], options);
    const canary = resolveCanary(canaryValues.get(name), endpoints, previous?.services[name]?.canary ?? null, problems);
    services[name] = {
      name,
      kind: 'consul',
      tags: [...(views.catalog[name] ?? [])],
      endpoints,
      healthy: endpoints.filter((e) => e.weight > 0).length,
      canary,
      policy,
    };
  }
  const finalRoutes = routes.map((r) => finishRoute(r, services[r.service], index, policies.held));
  reportUnusedPolicies(index, new Set(routes.map((r) => r.id)), services, problems);
  reportAuthorizeWithoutAuth(finalRoutes, problems);
  for (const [service, entry] of canaryValues) {
    if (!Object.hasOwn(services, service)) {
      problems.push({ kind: 'canary', subject: entry.key, message: `service "${service}" is not routed by the gateway; weights ignored` });
    }
  }

  const body = { services, routes: finalRoutes, problems: sortProblems(problems), policies };
  return deepFreeze({ version: contentHash(body), ...body });
}

type DraftRoute = Omit<RouteSnapshot, 'freshness' | 'policy' | 'heldBy'>;

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
    return { id: `${host ?? ''}${d.path}`, host, path: d.path, strip: d.strip ?? null, service: d.service, source: d.source };
  });
}

function collectRoutes(views: ConsulViews, problems: Problem[]): DraftRoute[] {
  const out: DraftRoute[] = [];
  for (const service of Object.keys(views.catalog).sort()) {
    for (const tag of views.catalog[service] ?? []) {
      if (!isUrlprefixTag(tag)) continue;
      const parsed = parseUrlprefixTag(tag);
      if (!parsed.ok) {
        problems.push({ kind: 'tag', subject: service, message: `tag "${tag}": ${parsed.error}` });
        continue;
      }
      const { host, path, strip } = parsed.route;
      out.push({ id: `${host ?? ''}${path}`, host, path, strip, service, source: { kind: 'tag', tag } });
    }
  }
  return out;
}

/** Documents come first, so a declared route wins over a tag; between tags, the first service by name. */
function dedupeRoutes(drafts: readonly DraftRoute[], problems: Problem[]): DraftRoute[] {
  const byId = new Map<string, DraftRoute>();
  for (const route of drafts) {
    const existing = byId.get(route.id);
    if (!existing) {
      byId.set(route.id, route);
      continue;
    }
    const what = route.source.kind === 'tag' ? `tag "${route.source.tag}"` : `document ${route.source.document}`;
    if (existing.source.kind !== 'tag') {
      problems.push({
        kind: 'route',
        subject: route.source.kind === 'tag' ? route.service : route.source.document,
        message: `route ${route.id} is declared by document ${existing.source.document}; ${what} ignored`,
      });
    } else if (existing.service !== route.service) {
      problems.push({
        kind: 'route',
        subject: route.service,
        message: `route ${route.id} is already served by service "${existing.service}" (first by name wins); ${what} ignored`,
      });
    } else if (route.source.kind === 'tag' && existing.source.tag !== route.source.tag) {
      problems.push({ kind: 'tag', subject: route.service, message: `tag "${route.source.tag}" repeats route ${route.id} with other options; ignored` });
    }
  }
  return [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** A policy whose target does not exist is in force but does nothing: most often a typo in appliesTo. */
function reportUnusedPolicies(index: PolicyIndex, routeIds: ReadonlySet<string>, services: Readonly<Record<string, ServiceSnapshot>>, problems: Problem[]): void {
  for (const [route, doc] of index.routes) {
    if (!routeIds.has(route)) problems.push({ kind: 'policy', subject: doc.id, message: `applies to route ${route}, which does not exist (route ids as \`cgw routes\` shows them); it has no effect` });
  }
  for (const [service, doc] of index.services) {
    if (!Object.hasOwn(services, service)) problems.push({ kind: 'policy', subject: doc.id, message: `applies to service "${service}", which is not routed; it has no effect until it is` });
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

const FRESHNESS: Record<ServicePolicy['discovery']['mode'], Freshness> = { watch: 'watched', poll: 'polled', pinned: 'pinned' };

function finishRoute(route: DraftRoute, service: ServiceSnapshot | undefined, index: PolicyIndex, held: PolicySet['held']): RouteSnapshot {
  const freshness: Freshness = service?.kind === 'static' ? 'static' : FRESHNESS[service?.policy.discovery.mode ?? 'watch'];
  const holder = held.find(({ target }) => target === 'defaults' || ('service' in target ? target.service === route.service : target.route === route.id));
  return { ...route, freshness, policy: routePolicy(index, route.service, route.id), heldBy: holder?.document ?? null };
}

function staticEndpoints(upstreams: NonNullable<RouteDocument['upstreams']>): EndpointSnapshot[] {
  return upstreams.map((u) => {
    const url = new URL(u.url);
    const https = url.protocol === 'https:';
    const address = url.hostname.replace(/^\[|\]$/g, '');
    const port = url.port ? Number(url.port) : https ? 443 : 80;
    const hostPort = `${url.hostname}:${port}`;
    return {
      id: u.url,
      node: '',
      address,
      port,
      key: https ? `https://${hostPort}` : hostPort,
      tags: [],
      status: 'passing',
      weight: u.weight,
      ...(https ? { scheme: 'https' as const } : {}),
    };
  });
}

/** Consul services the snapshot needs beyond those with urlprefix- tags: the ones route documents name. */
export function servicesNamedByRoutes(policies: PolicySet): Set<string> {
  const out = new Set<string>();
  for (const d of policies.documents) if (d.parsed.kind === 'route' && d.parsed.doc.service) out.add(d.parsed.doc.service);
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

function buildEndpoints(instances: readonly ServiceInstance[], options: BuildOptions): EndpointSnapshot[] {
  // Sorted so the version does not depend on the order Consul lists instances in.
  return instances
    .map((i) => {
      const status = instanceStatus(i);
      const weight =
        status === 'passing' ? i.weights.passing : status === 'warning' && options.allowWarning ? i.weights.warning : 0;
      return { id: i.id, node: i.node, address: i.address, port: i.port, key: `${i.address}:${i.port}`, tags: [...i.tags], status, weight };
    })
    .sort((a, b) => (a.node + '\u0000' + a.id < b.node + '\u0000' + b.id ? -1 : a.node === b.node && a.id === b.id ? 0 : 1));
}

interface CanaryKey {
  readonly key: string;
  readonly value: string | null;
  readonly modifyIndex: number;
}

function readCanaryKeys(views: ConsulViews, prefix: string): Map<string, CanaryKey> {
  const canaryPrefix = `${prefix}canary/`;
  const out = new Map<string, CanaryKey>();
  for (const entry of views.kv) {
    if (!entry.key.startsWith(canaryPrefix)) continue;
    const service = entry.key.slice(canaryPrefix.length);
    if (service === '' || service.includes('/')) continue;
    out.set(service, entry);
  }
  return out;
}

function resolveCanary(
  entry: CanaryKey | undefined,
  endpoints: readonly EndpointSnapshot[],
  previous: CanarySnapshot | null,
  problems: Problem[],
): CanarySnapshot | null {
  // Deleting the key returns the service to plain balancing.
  if (!entry) return null;
  const parsed = parseCanaryValue(entry.value);
  if (parsed.ok) return canaryFor(entry.key, entry.modifyIndex, parsed.value.weights, endpoints);
  const kept = previous && previous.key === entry.key ? previous : null;
  problems.push({
    kind: 'canary',
    subject: entry.key,
    message: `invalid canary weights at ModifyIndex ${entry.modifyIndex}: ${parsed.error}`,
    keptLastGood: kept !== null,
  });
  // The last good weights stay, re-applied to today's endpoints (health may have moved since).
  return kept ? canaryFor(kept.key, kept.modifyIndex, kept.weights, endpoints) : null;
}

export function canaryFor(
  key: string,
  modifyIndex: number,
  weights: CanaryWeights['weights'],
  endpoints: readonly EndpointSnapshot[],
): CanarySnapshot {
  const tags = Object.keys(weights).sort();
  const members = tags.map((tag) => endpoints.filter((e) => e.weight > 0 && e.tags.includes(tag)).map((e) => e.key));
  // An empty subset gets no traffic: its share is spread over the others in proportion.
  const liveTotal = tags.reduce((sum, tag, i) => sum + ((members[i]?.length ?? 0) > 0 ? (weights[tag] ?? 0) : 0), 0);
  const subsets = tags.map((tag, i) => {
    const keys = members[i] ?? [];
    const configured = weights[tag] ?? 0;
    const effective = keys.length > 0 && liveTotal > 0 ? (configured * 100) / liveTotal : 0;
    return { tag, configuredWeight: configured, effectiveWeight: Math.round(effective * 1000) / 1000, endpoints: keys };
  });
  return { key, modifyIndex, weights, subsets, fallback: liveTotal === 0 };
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
