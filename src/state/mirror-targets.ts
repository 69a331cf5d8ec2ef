import type { CatalogView, Problem } from '../core/types.ts';
import { own } from '../core/own.ts';
import type { RoutePolicy } from '../policy/effective.ts';
import type { PolicySet } from '../policy/resolve.ts';
import type { RouteProto } from './route-options.ts';

/** What the mirror checks need of a route. */
interface MirroredRoute {
  readonly id: string;
  readonly service: string;
  readonly proto: RouteProto;
  readonly policy: RoutePolicy;
}

/**
 * Why a route's mirror section cannot apply, or null. The runtime compiles no mirror for such a
 * route (and the build reports the reason): mirroring a service onto itself doubles its
 * production traffic, and a gRPC call's body streams, so there is nothing buffered to copy.
 */
export function mirrorUnusable(route: MirroredRoute): string | null {
  const mirror = route.policy.mirror;
  if (mirror === null) return null;
  if (route.proto === 'grpc' || route.proto === 'grpcs') return `route ${route.id} is a gRPC route (proto=${route.proto}); gRPC bodies stream, so it is not mirrored`;
  if (mirror.service === route.service) return `route ${route.id} would mirror to its own service "${route.service}" (doubling its traffic); use subset: <tag> for some of its instances. Not mirrored`;
  return null;
}

/** Consul services that routes in force mirror to, so the snapshot carries their instances. */
export function mirrorTargetsOf(routes: readonly MirroredRoute[]): Set<string> {
  const out = new Set<string>();
  for (const r of routes) {
    const target = r.policy.mirror?.service;
    if (target !== undefined && mirrorUnusable(r) === null) out.add(target);
  }
  return out;
}

/**
 * Consul services every policy document in force mirrors to: the supervisor watches them like
 * services route documents name, so a shadow service nothing routes to has known instances.
 */
export function mirrorServicesOf(policies: PolicySet): Set<string> {
  const out = new Set<string>();
  for (const d of policies.documents) {
    const target = d.parsed.kind === 'policy' ? d.parsed.doc.mirror?.service : undefined;
    if (target !== undefined) out.add(target);
  }
  return out;
}

/**
 * Mirrors that cannot send anything as things stand: a target service Consul does not know, a
 * subset tag no instance of the service carries (the catalog lists every tag in use), a mirror that
 * cannot apply. Shadows are skipped and counted meanwhile; the client never notices.
 */
export function mirrorProblems(routes: readonly MirroredRoute[], catalog: CatalogView, problems: Problem[]): void {
  for (const r of routes) {
    const mirror = r.policy.mirror;
    if (mirror === null) continue;
    const subject = r.policy.sources.mirror ?? r.id;
    const unusable = mirrorUnusable(r);
    if (unusable !== null) {
      problems.push({ kind: 'policy', subject, message: unusable });
      continue;
    }
    if (mirror.service !== undefined && own(catalog, mirror.service) === undefined) {
      problems.push({ kind: 'policy', subject, message: `route ${r.id} mirrors to service "${mirror.service}", which is not registered in Consul; shadow requests are skipped (no_target) until it is` });
    }
    if (mirror.subset !== undefined && !(own(catalog, r.service) ?? []).includes(mirror.subset)) {
      problems.push({ kind: 'policy', subject, message: `route ${r.id} mirrors to subset "${mirror.subset}", a tag no instance of service "${r.service}" carries; shadow requests are skipped (no_target) until one does` });
    }
  }
}
