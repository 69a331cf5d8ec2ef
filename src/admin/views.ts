import type { Problem, WatchStatus } from '../core/types.ts';
import type { PublishedSnapshot } from '../state/store.ts';
import type { Snapshot } from '../state/snapshot.ts';
import type { Runtime } from '../runtime/runtime.ts';

/**
 * JSON views served by the admin API and printed by the CLI. They are built from the snapshot
 * and runtime in force, never from Consul, so what they show is what the data plane does.
 */
export interface AdminSources {
  readonly startedAt: number;
  readonly published: () => PublishedSnapshot | undefined;
  readonly runtime: () => Runtime | undefined;
  readonly ready: () => boolean;
  /** In-flight requests per endpoint key (for `cgw endpoints`). */
  readonly endpointInflight: (key: string) => number | undefined;
  /** Watch state, supplied by the gateway's Consul supervisor. */
  readonly discovery: () => DiscoveryView;
  /** Problems outside the snapshot, e.g. a suspect empty catalog read. */
  readonly discoveryProblems: () => readonly Problem[];
  readonly settings: Readonly<Record<string, unknown>>;
}

export interface DiscoveryView {
  readonly mode: string;
  readonly healthWatchBudget: number;
  readonly routedServices: number;
  readonly openConnections: number;
  readonly watches: readonly WatchStatus[];
  readonly bulk: unknown;
}

export function problemsView(src: AdminSources): Problem[] {
  return [...(src.published()?.snapshot.problems ?? []), ...src.discoveryProblems()];
}

export function statusView(src: AdminSources) {
  const published = src.published();
  const discovery = src.discovery();
  const failing = discovery.watches.filter((w) => w.state === 'failing');
  const snapshot = published?.snapshot;
  return {
    ready: src.ready(),
    uptimeSeconds: Math.round((Date.now() - src.startedAt) / 1000),
    snapshot: snapshot
      ? { version: snapshot.version, appliedAt: new Date(published.appliedAt).toISOString(), services: Object.keys(snapshot.services).length, routes: snapshot.routes.length }
      : null,
    consul: {
      healthMode: discovery.mode,
      healthWatchBudget: discovery.healthWatchBudget,
      routedServices: discovery.routedServices,
      openConnections: discovery.openConnections,
      watches: discovery.watches.length,
      watchesFailing: failing.map((w) => ({ name: w.name, error: w.lastError, consecutiveErrors: w.consecutiveErrors })),
      leaderKnown: !discovery.watches.some((w) => w.knownLeader === false),
      maxLastContactMs: Math.max(0, ...discovery.watches.map((w) => w.lastContactMs ?? 0)),
    },
    problems: problemsView(src),
    settings: src.settings,
  };
}

export function servicesView(src: AdminSources) {
  const snapshot = src.published()?.snapshot;
  const runtime = src.runtime();
  if (!snapshot) return [];
  return Object.values(snapshot.services).map((s) => ({
    name: s.name,
    routes: snapshot.routes.filter((r) => r.service === s.name).map((r) => r.id),
    endpointsHealthy: s.healthy,
    endpointsTotal: s.endpoints.length,
    picker: runtime?.balancers.get(s.name)?.pickerKind ?? null,
    canary: s.canary ? Object.fromEntries(s.canary.subsets.map((x) => [x.tag, x.effectiveWeight])) : null,
  }));
}

export function endpointsView(src: AdminSources, service: string) {
  const s = src.published()?.snapshot.services[service];
  if (!s) return undefined;
  return s.endpoints.map((e) => ({
    id: e.id,
    node: e.node,
    address: e.address,
    port: e.port,
    status: e.status,
    weight: e.weight,
    receivesTraffic: e.weight > 0,
    inflight: src.endpointInflight(e.key) ?? 0,
    subsets: s.canary?.subsets.filter((x) => x.endpoints.includes(e.key)).map((x) => x.tag) ?? [],
    tags: e.tags,
  }));
}

export function routesView(src: AdminSources) {
  const snapshot = src.published()?.snapshot;
  if (!snapshot) return [];
  return snapshot.routes.map((r) => ({
    route: r.id,
    host: r.host,
    path: r.path,
    service: r.service,
    strip: r.strip,
    source: r.source.kind,
    /** The tag, or the document id with its file path or KV key. */
    origin: r.source.kind === 'tag' ? r.source.tag : r.source.kind === 'file' ? `${r.source.document} (${r.source.path})` : `${r.source.document} (${r.source.key})`,
    refresh: r.freshness,
    policies: [...new Set(Object.values(r.policy.sources))].sort(),
    endpointsHealthy: snapshot.services[r.service]?.healthy ?? 0,
  }));
}

export function canaryView(src: AdminSources) {
  const snapshot: Snapshot | undefined = src.published()?.snapshot;
  if (!snapshot) return [];
  return Object.values(snapshot.services)
    .filter((s) => s.canary)
    .map((s) => ({
      service: s.name,
      key: s.canary?.key,
      modifyIndex: s.canary?.modifyIndex,
      weights: s.canary?.weights,
      fallback: s.canary?.fallback,
      subsets: s.canary?.subsets.map((x) => ({ tag: x.tag, configured: x.configuredWeight, effective: x.effectiveWeight, endpoints: x.endpoints.length })),
      rejected: snapshot.problems.filter((p) => p.kind === 'canary' && p.subject === s.canary?.key).map((p) => p.message),
    }));
}
