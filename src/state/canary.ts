import type { ConsulViews, Problem } from '../core/types.ts';
import { parseCanaryValue, type CanaryWeights } from '../policy/canary.ts';
import type { EndpointSnapshot } from './endpoints.ts';

/** Canary weights of one service as the data plane applies them. */
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

export interface CanaryKey {
  readonly key: string;
  readonly value: string | null;
  readonly modifyIndex: number;
}

/** `<prefix>canary/<service>` keys by service. */
export function readCanaryKeys(views: ConsulViews, prefix: string): Map<string, CanaryKey> {
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

/**
 * The weights in force for a service. A value is refused (last good kept, problem shown) when it
 * does not parse, or when it gives a positive weight to a tag that no instance of the service
 * carries, healthy or not: `V1=90 v2=10` for tags `v1`/`v2` would otherwise send everything to
 * v2. A subset whose instances exist but are all unhealthy is fine: its share moves to the others.
 */
export function resolveCanary(
  entry: CanaryKey | undefined,
  endpoints: readonly EndpointSnapshot[],
  previous: CanarySnapshot | null,
  problems: Problem[],
): CanarySnapshot | null {
  // Deleting the key returns the service to plain balancing.
  if (!entry) return null;
  const parsed = parseCanaryValue(entry.value);
  const error = parsed.ok ? missingTags(parsed.value.weights, endpoints) : parsed.error;
  if (parsed.ok && error === null) return canaryFor(entry.key, entry.modifyIndex, parsed.value.weights, endpoints);
  const kept = previous && previous.key === entry.key ? previous : null;
  problems.push({
    kind: 'canary',
    subject: entry.key,
    message: `invalid canary weights at ModifyIndex ${entry.modifyIndex}: ${error ?? 'invalid'}`,
    keptLastGood: kept !== null,
  });
  // The last good weights stay, re-applied to today's endpoints (health may have moved since).
  return kept ? canaryFor(kept.key, kept.modifyIndex, kept.weights, endpoints) : null;
}

function missingTags(weights: CanaryWeights['weights'], endpoints: readonly EndpointSnapshot[]): string | null {
  const carried = new Set<string>();
  for (const e of endpoints) for (const t of e.tags) carried.add(t);
  const missing = Object.keys(weights)
    .filter((tag) => (weights[tag] ?? 0) > 0 && !carried.has(tag))
    .sort();
  if (missing.length === 0) return null;
  const known = [...carried].filter((t) => !t.startsWith('urlprefix-')).sort();
  return `no instance of the service carries tag${missing.length === 1 ? '' : 's'} ${missing.map((t) => `"${t}"`).join(', ')} (tags are case-sensitive; instances carry ${known.length > 0 ? known.map((t) => `"${t}"`).join(', ') : 'no other tags'})`;
}

export function canaryFor(key: string, modifyIndex: number, weights: CanaryWeights['weights'], endpoints: readonly EndpointSnapshot[]): CanarySnapshot {
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
