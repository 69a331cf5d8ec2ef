import type { Problem } from '../core/types.ts';
import type { EndpointSnapshot } from './endpoints.ts';
import { shareOf, slotsOf, summarise, type FabioTable } from './fabio-kv.ts';

/**
 * What fabio KV lines do to the instances of one Consul service: `route del [svc] tags "..."`
 * takes instances carrying all the tags out of rotation, `route weight` gives the instances
 * carrying its tags a fixed share of the service's traffic (fabio's weighTargets over the healthy
 * instances, so a share follows health as in fabio, whose table holds passing instances only).
 * In cgw a service is balanced once for all its routes, so a weight line applies to the whole
 * service; the line must still name one of its routes, as fabio's does.
 */
export interface ServiceShaping {
  /** Tag sets: an instance carrying every tag of one of them gets no traffic. */
  readonly exclusions: readonly (readonly string[])[];
  readonly weights: readonly { readonly weight: number; readonly tags: readonly string[]; readonly where: string }[];
}

/** The shaping of one service, or undefined when no fabio line touches it. */
export function shapingFor(table: FabioTable, service: string, weights: readonly ServiceShaping['weights'][number][]): ServiceShaping | undefined {
  const exclusions = table.exclusions.filter((e) => e.service === null || e.service === service).map((e) => e.tags);
  if (exclusions.length === 0 && weights.length === 0) return undefined;
  return { exclusions, weights };
}

/** Endpoints with fabio's exclusions and weights applied (Consul's own weights give way to them). */
export function shapeEndpoints(service: string, endpoints: readonly EndpointSnapshot[], shaping: ServiceShaping, problems: Problem[]): EndpointSnapshot[] {
  const out = endpoints.map((e) => (e.weight > 0 && shaping.exclusions.some((tags) => tags.every((t) => e.tags.includes(t))) ? { ...e, weight: 0 } : e));
  if (shaping.weights.length === 0) return out;
  const admitted = out.map((e, i) => ({ e, i })).filter(({ e }) => e.weight > 0);
  const fixed = admitted.map(() => 0);
  const idle: Problem[] = [];
  for (const rule of shaping.weights) {
    const matching = admitted.map(({ e }, j) => (rule.tags.every((t) => e.tags.includes(t)) ? j : -1)).filter((j) => j >= 0);
    if (matching.length === 0) {
      idle.push({ kind: 'fabio-kv', subject: rule.where, message: `no healthy instance of service "${service}" carries ${rule.tags.length > 0 ? `tags ${rule.tags.join(',')}` : 'any tag'}; the weight has no effect until one does` });
      continue;
    }
    for (const j of matching) fixed[j] = rule.weight / matching.length;
  }
  summarise(`route weight lines of service "${service}"`, idle, problems);
  const slots = slotsOf(shareOf(fixed));
  admitted.forEach(({ e, i }, j) => {
    out[i] = { ...e, weight: slots[j] ?? 0 };
  });
  return out;
}
