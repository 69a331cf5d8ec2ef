import type { Problem } from '../core/types.ts';
import { hostCaptures } from '../core/host-glob.ts';
import type { PolicyIndex } from '../policy/effective.ts';
import type { RoutePolicy } from '../policy/effective.ts';
import { isPathPrefix } from './tags.ts';

/**
 * Who serves a route when several claim it, and what keeps a protected route from being taken
 * over. Registering a service is not an act of authority over the routes others already serve:
 * a newcomer's `urlprefix-/admin` must not take `/admin` (and so the API keys its owner's policy
 * demands) away from the service that has it.
 */

export type RouteSourceKind = 'tag' | 'file' | 'kv' | 'fabio-kv';

export interface ClaimedRoute {
  readonly id: string;
  readonly service: string;
  /** `document` of a fabio-kv claim is `<key> line <n>`. */
  readonly source: { readonly kind: 'tag'; readonly tag: string } | { readonly kind: 'file' | 'kv' | 'fabio-kv'; readonly document: string };
}

/** A route whose authentication came from a policy of the service that served it. */
export interface RouteGuard {
  readonly service: string;
  readonly document: string;
}

export interface OwnershipMemory {
  /** Route id → service, from the snapshot before. */
  readonly owners: ReadonlyMap<string, string>;
  readonly guards: Readonly<Record<string, RouteGuard>>;
}

/**
 * One claim per route id. Documents win over fabio's KV lines, which win over tags (an operator
 * declared the route; in fabio, KV lines run after the tag lines and override them). Between
 * services claiming by tag: the service a guard protects, then the one that served the route
 * before (the incumbent), then one that a service policy targets, then the first by name. Every
 * losing claim is a problem; the claim, not the incumbent, is what is wrong.
 */
export function chooseOwners<R extends ClaimedRoute>(claims: readonly R[], memory: OwnershipMemory, index: PolicyIndex, problems: Problem[]): R[] {
  const byId = new Map<string, R[]>();
  for (const claim of claims) {
    const list = byId.get(claim.id);
    if (list) list.push(claim);
    else byId.set(claim.id, [claim]);
  }
  const winners: R[] = [];
  for (const [id, group] of byId) {
    const declared = group.find((c) => c.source.kind === 'file' || c.source.kind === 'kv') ?? group.find((c) => c.source.kind === 'fabio-kv');
    const { winner, why } = declared ? { winner: declared, why: `declared by ${sourceOf(declared)}` } : chooseTagOwner(id, group, memory, index);
    winners.push(winner);
    for (const loser of group) {
      if (loser === winner || sameClaim(winner, loser)) continue;
      problems.push(losingClaim(id, winner, loser, why));
    }
  }
  return winners.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function chooseTagOwner<R extends ClaimedRoute>(id: string, group: readonly R[], memory: OwnershipMemory, index: PolicyIndex): { winner: R; why: string } {
  const first = (service: string | undefined): R | undefined => (service === undefined ? undefined : group.find((c) => c.service === service));
  const guard = Object.hasOwn(memory.guards, id) ? memory.guards[id] : undefined;
  const guarded = first(guard?.service);
  if (guarded && guard) return { winner: guarded, why: `protected by policy ${guard.document}` };
  const incumbent = first(memory.owners.get(id));
  if (incumbent) return { winner: incumbent, why: 'it served the route first' };
  const targeted = group.find((c) => index.services.has(c.service));
  if (targeted) return { winner: targeted, why: `policy ${index.services.get(targeted.service)?.id ?? ''} targets it` };
  return { winner: group[0] as R, why: 'first by name' };
}

function losingClaim(id: string, winner: ClaimedRoute, loser: ClaimedRoute, why: string): Problem {
  const what = loser.source.kind === 'tag' ? `tag "${loser.source.tag}"` : sourceOf(loser);
  const subject = loser.source.kind === 'tag' ? loser.service : loser.source.document;
  if (winner.source.kind !== 'tag') return { kind: 'route', subject, message: `route ${id} is declared by ${sourceOf(winner)}; ${what} ignored` };
  if (winner.service !== loser.service) {
    return { kind: 'route', subject, message: `route ${id} is served by service "${winner.service}" (${why}); ${what} of service "${loser.service}" ignored` };
  }
  return { kind: 'tag', subject, message: `${what} repeats route ${id} with other options; ignored` };
}

/** The same tag of the same service, listed twice: nothing to report. */
function sameClaim(a: ClaimedRoute, b: ClaimedRoute): boolean {
  return a.service === b.service && a.source.kind === 'tag' && b.source.kind === 'tag' && a.source.tag === b.source.tag;
}

function sourceOf(claim: ClaimedRoute): string {
  if (claim.source.kind === 'tag') return `tag "${claim.source.tag}"`;
  return claim.source.kind === 'fabio-kv' ? `fabio route at ${claim.source.document}` : `document ${claim.source.document}`;
}

export interface GuardedRoute {
  readonly id: string;
  readonly service: string;
  readonly source: ClaimedRoute['source'];
  readonly policy: RoutePolicy;
}

/**
 * Guards for the next snapshot, and the routes to hold now. A route gets a guard while its
 * authentication comes from a policy of its own service. When another service takes it over by
 * tag (the owner left the catalog, or the gateway learned of the claim first) and brings no
 * authentication of its own, the route answers 503 instead of running open; the guard lasts as
 * long as that policy exists and protects the old service.
 */
export function guardRoutes(routes: readonly GuardedRoute[], memory: OwnershipMemory, index: PolicyIndex): { guards: Record<string, RouteGuard>; holds: Map<string, { document: string; reason: string }> } {
  const guards: Record<string, RouteGuard> = {};
  const holds = new Map<string, { document: string; reason: string }>();
  const current = new Map(routes.map((r) => [r.id, r]));
  for (const r of routes) {
    const from = r.policy.sources.auth;
    // A route policy follows the route id whoever serves it; its guard only matters for routes
    // that would take this one's requests under another id (holdCapturingClaims).
    if (isProtected(r.policy) && from !== undefined && (index.services.get(r.service)?.id === from || index.routes.get(r.id)?.id === from)) guards[r.id] = { service: r.service, document: from };
  }
  for (const [id, guard] of Object.entries(memory.guards)) {
    if (Object.hasOwn(guards, id)) continue;
    // The protecting policy was deleted or no longer authenticates: the protection was withdrawn.
    if (!stillProtects(index, guard)) continue;
    const route = current.get(id);
    if (route === undefined) {
      guards[id] = guard; // the route is gone for now; a later claim meets the guard
      continue;
    }
    if (route.service === guard.service || route.source.kind !== 'tag' || isProtected(route.policy)) continue;
    guards[id] = guard;
    holds.set(id, {
      document: guard.document,
      reason:
        `route ${id} was protected by ${guard.document} (service "${guard.service}"); service "${route.service}" claims it without authentication, ` +
        `so it answers 503 until that service has an auth policy, "${guard.service}" serves the route again, or ${guard.document} is deleted`,
    });
  }
  holdCapturingClaims(routes, memory, guards, holds);
  return { guards, holds };
}

/**
 * A new route can take a guarded route's requests without claiming its id: `/admin/secret` under
 * `/admin` (longest prefix wins), or `127.0.0.1/admin` over a host-less `/admin` (host routes are
 * matched first). A newcomer of another service that does so by tag without authentication of
 * its own is held like a takeover, and guarded from then on. Routes that existed before the guard
 * (a public `/admin/docs` of another service the operator set up) are left alone, and so is a
 * host route above the guarded path (`shop.example.com/`), which serves a whole host by design.
 */
function holdCapturingClaims(routes: readonly GuardedRoute[], memory: OwnershipMemory, guards: Record<string, RouteGuard>, holds: Map<string, { document: string; reason: string }>): void {
  const protectedNow: { route: GuardedRoute; guard: RouteGuard }[] = [];
  for (const r of routes) {
    const before = Object.hasOwn(memory.guards, r.id) ? memory.guards[r.id] : undefined;
    const now = Object.hasOwn(guards, r.id) ? guards[r.id] : undefined;
    // Only guards older than this build, on routes their own service serves.
    if (before && now && now.service === before.service && r.service === before.service && !holds.has(r.id)) protectedNow.push({ route: r, guard: now });
  }
  if (protectedNow.length === 0) return;
  for (const r of routes) {
    if (r.source.kind !== 'tag' || memory.owners.has(r.id) || isProtected(r.policy) || holds.has(r.id) || Object.hasOwn(guards, r.id)) continue;
    const hit = protectedNow.find(({ route }) => route.service !== r.service && captures(r.id, route.id));
    if (!hit) continue;
    guards[r.id] = hit.guard;
    holds.set(r.id, {
      document: hit.guard.document,
      reason:
        `route ${r.id} of service "${r.service}" would take requests of route ${hit.route.id}, protected by ${hit.guard.document} (service "${hit.guard.service}"), without authentication; ` +
        `it answers 503 until that service has an auth policy or ${hit.guard.document} is deleted`,
    });
  }
}

/** Whether requests the route `guarded` matched before go to the route `claim` once it exists. */
function captures(claim: string, guarded: string): boolean {
  const c = splitRouteId(claim);
  const g = splitRouteId(guarded);
  // A glob host serves what no exact host or earlier glob takes (router.ts): those capture it.
  const scope = c.host === g.host || (g.host === null && c.host !== null) || (c.host !== null && g.host !== null && hostCaptures(c.host, g.host));
  return scope && claim !== guarded && isPathPrefix(g.path, c.path);
}

/** `[host]/path` → host (null when absent) and path; hosts never contain "/". */
function splitRouteId(id: string): { host: string | null; path: string } {
  const slash = id.indexOf('/');
  return slash <= 0 ? { host: null, path: slash === 0 ? id : `/${id}` } : { host: id.slice(0, slash), path: id.slice(slash) };
}

/** The guard's document is still in force for its service or a route, and still authenticates. */
function stillProtects(index: PolicyIndex, guard: RouteGuard): boolean {
  const forService = index.services.get(guard.service);
  const doc = forService?.id === guard.document ? forService : [...index.routes.values()].find((d) => d.id === guard.document);
  return doc !== undefined && doc.parsed.kind === 'policy' && doc.parsed.doc.auth !== undefined && doc.parsed.doc.auth.methods.length > 0;
}

function isProtected(policy: RoutePolicy): boolean {
  return policy.auth !== null && policy.auth.methods.length > 0;
}
