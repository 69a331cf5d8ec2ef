import type { Problem, WatchStatus } from '../core/types.ts';
import type { RegistrationStatus } from '../core/fleet.ts';
import { own } from '../core/own.ts';
import type { BuildFailureView } from '../state/build-health.ts';
import type { DataPlaneReport, ReportScope } from '../core/types.ts';
import type { PublishedSnapshot } from '../state/store.ts';
import type { StateFileView } from '../state/state-file-keeper.ts';
import type { RouteSnapshot, Snapshot } from '../state/snapshot.ts';

/**
 * JSON views served by the admin API and printed by the CLI. They are built from the snapshot
 * and runtime in force, never from Consul, so what they show is what the data plane does.
 */
export interface AdminSources {
  readonly startedAt: number;
  readonly published: () => PublishedSnapshot | undefined;
  readonly ready: () => boolean;
  /**
   * What the data planes report (this process's, or every worker's, merged): limits, breakers,
   * ejections, requests in flight. Asked for on demand, in the detail the view needs.
   */
  readonly dataPlane: (scope: ReportScope) => Promise<DataPlaneReport | undefined>;
  /** The worker processes and the snapshot each runs; null in a single process. */
  readonly workers: () => readonly WorkerView[] | null;
  /** Watch state, supplied by the gateway's Consul supervisor. */
  readonly discovery: () => DiscoveryView;
  /** Problems outside the snapshot, e.g. a suspect empty catalog read. */
  readonly discoveryProblems: () => readonly Problem[];
  readonly settings: Readonly<Record<string, unknown>>;
  /** The newest configuration failed to build (the last good one serves), or null. */
  readonly buildFailure: () => BuildFailureView | null;
  /** This gateway's own registration in Consul (`cgw fleet`); absent in tests that do not care. */
  readonly registration?: () => RegistrationStatus;
  /** --state-file: what was read, whether its (stale) snapshot serves, the last write; null without the flag. */
  readonly stateFile?: () => StateFileView | null;
}

export interface WorkerView {
  readonly id: number;
  readonly pid: number | null;
  /** The snapshot version the worker runs; null until its first. */
  readonly version: string | null;
  readonly current: boolean;
  readonly startedAt: string;
  /** Times a worker in this slot was replaced after it died. */
  readonly restarts: number;
}

export interface DiscoveryView {
  readonly mode: string;
  readonly healthWatchBudget: number;
  readonly routedServices: number;
  readonly openConnections: number;
  readonly watches: readonly WatchStatus[];
  readonly bulk: unknown;
  /** Consul refusing connections (per-client connection limit) now: since, refusals, last one (epoch ms). */
  readonly refusing: { readonly since: number; readonly count: number; readonly lastAt: number; readonly waiting: number } | null;
}

export function problemsView(src: AdminSources): Problem[] {
  return [...(src.published()?.snapshot.problems ?? []), ...src.discoveryProblems()];
}

export function statusView(src: AdminSources, plane: DataPlaneReport | undefined) {
  const published = src.published();
  const discovery = src.discovery();
  const failing = discovery.watches.filter((w) => w.state === 'failing');
  const snapshot = published?.snapshot;
  return {
    ready: src.ready(),
    // Which process answered: on a shared host, the one an operator (or a test) meant to ask.
    pid: process.pid,
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
      refusing: discovery.refusing && { ...discovery.refusing, since: new Date(discovery.refusing.since).toISOString(), lastAt: new Date(discovery.refusing.lastAt).toISOString() },
      // From watches answering now whose answers carried X-Consul-KnownLeader / X-Consul-LastContact:
      // a failing watch's last header is old news. null = unknown (no such answer, or all failing).
      leaderKnown: ((live) => (live.length === 0 ? null : !live.some((w) => w.knownLeader === false)))(
        discovery.watches.filter((w) => w.state !== 'failing' && w.knownLeader !== null),
      ),
      maxLastContactMs: ((ms) => (ms.length === 0 ? null : Math.max(...ms)))(
        discovery.watches.flatMap((w) => (w.state !== 'failing' && w.lastContactMs !== null ? [w.lastContactMs] : [])),
      ),
    },
    policies: snapshot
      ? {
          documents: snapshot.policies.documents.length,
          rejected: snapshot.policies.status.filter((d) => d.rejected !== null).length,
          consumers: Object.keys(snapshot.policies.consumers).length,
        }
      : null,
    rateLimiter: { backend: plane?.rateLimiter ?? 'unknown' },
    buildFailure: src.buildFailure(),
    registration: registrationView(src.registration?.()),
    stateFile: src.stateFile?.() ?? null,
    limits: plane?.limits ?? null,
    tls: plane?.tls ?? null,
    websocket: plane?.websocket ?? null,
    workers: src.workers(),
    circuitsNotClosed: plane?.circuitsNotClosed ?? [],
    problems: problemsView(src),
    settings: src.settings,
  };
}

function registrationView(r: RegistrationStatus | undefined) {
  if (!r) return null;
  return { ...r, lastSuccessAt: r.lastSuccessAt === null ? null : new Date(r.lastSuccessAt).toISOString() };
}

/** `/-/readyz` fields while the state file's snapshot serves: ready, but stale (README, "--state-file"). */
export function stalenessView(src: AdminSources): { stale: true; staleSince: string | null; source: 'state-file'; writtenAt: string | null } | Record<string, never> {
  const file = src.stateFile?.();
  return file?.inForce ? { stale: true, staleSince: file.staleSince, source: 'state-file', writtenAt: file.file?.writtenAt ?? null } : {};
}

export function servicesView(src: AdminSources, plane: DataPlaneReport | undefined) {
  const snapshot = src.published()?.snapshot;
  if (!snapshot) return [];
  const health = (name: string) => (plane && Object.hasOwn(plane.services, name) ? plane.services[name] : undefined);
  return Object.values(snapshot.services).map((s) => ({
    name: s.name,
    routes: snapshot.routes.filter((r) => r.service === s.name).map((r) => r.id),
    endpointsHealthy: s.healthy,
    endpointsTotal: s.endpoints.length,
    picker: health(s.name)?.picker ?? null,
    canary: s.canary ? Object.fromEntries(s.canary.subsets.map((x) => [x.tag, x.effectiveWeight])) : null,
    kind: s.kind,
    discovery: s.kind === 'static' ? 'static' : s.policy.discovery.mode,
    circuit: health(s.name)?.breaker ?? null,
    ejected: health(s.name)?.ejected ?? 0,
  }));
}

export function endpointsView(src: AdminSources, service: string, plane: DataPlaneReport | undefined) {
  const services = src.published()?.snapshot.services;
  const s = services ? own(services, service) : undefined;
  if (!s) return undefined;
  const seen = plane && Object.hasOwn(plane.services, service) ? plane.services[service] : undefined;
  const outlier = seen?.endpoints ?? {};
  return s.endpoints.map((e) => ({
    id: e.id,
    node: e.node,
    address: e.address,
    port: e.port,
    status: e.status,
    weight: e.weight,
    receivesTraffic: e.weight > 0,
    inflight: (Object.hasOwn(outlier, e.key) ? outlier[e.key]?.inflight : 0) ?? 0,
    subsets: s.canary?.subsets.filter((x) => x.endpoints.includes(e.key)).map((x) => x.tag) ?? [],
    tags: e.tags,
    ejected: outlier[e.key]?.ejected ?? false,
    ejectedUntil: outlier[e.key]?.ejectedUntil ? new Date(outlier[e.key]?.ejectedUntil ?? 0).toISOString() : null,
    consecutiveFailures: outlier[e.key]?.consecutiveFailures ?? 0,
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
    // fabio's other route options (the table's ORIGIN column shows the tag that set them).
    prepend: r.prepend,
    upstreamHost: r.upstreamHost,
    redirect: r.redirect,
    access: r.access,
    proto: r.proto,
    tlsSkipVerify: r.tlsSkipVerify,
    source: r.source.kind,
    /** The tag, the document id with its file path or KV key, or the fabio key and line. */
    origin: routeOrigin(r.source),
    refresh: r.freshness,
    heldBy: r.heldBy,
    holdReason: r.holdReason,
    /** Documents that shape this route: its own sections and its service's (breaker, discovery, ...). */
    policies: [...new Set([...Object.values(r.policy.sources), ...Object.values(own(snapshot.services, r.service)?.policy.sources ?? {})])].sort(),
    endpointsHealthy: own(snapshot.services, r.service)?.healthy ?? 0,
  }));
}

function routeOrigin(source: RouteSnapshot['source']): string {
  switch (source.kind) {
    case 'tag':
      return source.tag;
    case 'file':
      return `${source.document} (${source.path})`;
    case 'kv':
      return `${source.document} (${source.key})`;
    case 'fabio-kv':
      return source.document;
  }
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
      /** The service's stickiness policy (`{cookie, ttl}` in ms, or `{header}`), or null. */
      stickiness: s.policy.stickiness ?? null,
      rejected: snapshot.problems.filter((p) => p.kind === 'canary' && p.subject === s.canary?.key).map((p) => p.message),
    }));
}

/** Every policy and route document: what is in force, where it came from, and what was refused. */
export function policiesView(src: AdminSources) {
  const snapshot = src.published()?.snapshot;
  if (!snapshot) return [];
  const inForce = new Map(snapshot.policies.documents.map((d) => [d.id, d]));
  return snapshot.policies.status.map((st) => {
    const doc = inForce.get(st.id);
    const parsed = doc?.parsed;
    const target =
      parsed === undefined
        ? null
        : parsed.kind === 'route'
          ? `route ${parsed.doc.host ?? ''}${parsed.doc.path} -> ${parsed.doc.service ?? 'static upstreams'}`
          : parsed.doc.appliesTo === 'defaults'
            ? 'defaults'
            : 'service' in parsed.doc.appliesTo
              ? `service ${parsed.doc.appliesTo.service}`
              : `route ${parsed.doc.appliesTo.route}`;
    return {
      id: st.id,
      kind: st.kind,
      applied: doc !== undefined,
      target,
      version: st.inForce?.version ?? null,
      source: st.inForce ? originText(st.inForce.origin) : null,
      modifyIndex: st.inForce?.origin.kind === 'kv' ? st.inForce.origin.modifyIndex : null,
      overriddenFile: st.overriddenFile,
      rejected: st.rejected ? { source: originText(st.rejected.origin), error: st.rejected.error } : null,
      conflict: st.conflict ?? null,
    };
  });
}

/** Consumers in force, never their key hashes. */
export function consumersView(src: AdminSources) {
  const snapshot = src.published()?.snapshot;
  if (!snapshot) return [];
  return Object.values(snapshot.policies.consumers).map((c) => ({
    id: c.id,
    plan: c.record.plan ?? null,
    scopes: c.record.scopes,
    limits: c.record.limits ?? null,
    modifyIndex: c.modifyIndex,
  }));
}

function originText(origin: { kind: 'file'; path: string } | { kind: 'kv'; key: string; modifyIndex: number }): string {
  return origin.kind === 'file' ? `file:${origin.path}` : `kv:${origin.key}`;
}

const SECRET_FIELDS = new Set(['secret', 'keyHash', 'keyPem']);

/** The snapshot for `/v1/snapshot`, with HMAC secrets, API-key hashes and private keys blanked out. */
export function redactedJson(value: unknown): string {
  return JSON.stringify(value, (key, v: unknown) => (SECRET_FIELDS.has(key) && typeof v === 'string' ? '[redacted]' : v), 2);
}
