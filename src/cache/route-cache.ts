import type { Metrics } from '../core/metrics.ts';
import { contentHash } from '../core/hash.ts';
import type { CachePolicy } from '../policy/cache-schema.ts';
import { primaryKey } from './key.ts';
import type { CachePurges, ResponseCache } from './response-cache.ts';

export type CacheResult = 'hit' | 'stale' | 'coalesced' | 'revalidated' | 'miss' | 'bypass' | 'not_modified' | 'only_if_cached';

/** A route's cache as the proxy uses it, compiled with the snapshot. */
export interface RouteCache {
  readonly store: ResponseCache;
  readonly ttlMs: number;
  readonly maxEntryBytes: number;
  /** The policy's `vary`, lower-case. */
  readonly vary: readonly string[];
  readonly cacheAuthorized: boolean;
  readonly cacheSetCookie: boolean;
  readonly l2: boolean;
  readonly coalesceMs: number;
  /** The policy's hash: entries of another version of the policy are never read. */
  readonly fingerprint: string;
  readonly keyFor: (host: string | undefined, path: string, query: string, principal: string) => string;
  readonly count: (result: CacheResult) => void;
}

export function policyFingerprint(policy: CachePolicy): string {
  return contentHash(policy).slice(0, 16);
}

export function compileRouteCache(routeId: string, policy: CachePolicy, store: ResponseCache, purges: CachePurges, metrics: Metrics): RouteCache {
  const fingerprint = policyFingerprint(policy);
  if (policy.l2) store.l2?.prepare();
  const routeGeneration = Object.hasOwn(purges.routes, routeId) ? purges.routes[routeId] : 0;
  const prefix = `${routeId}\u0000${fingerprint}\u0000${purges.all}.${routeGeneration}`;
  const paths = new Map(Object.entries(purges.paths));
  const children = new Map<CacheResult, { inc(): void }>();
  return {
    store,
    ttlMs: policy.ttl,
    maxEntryBytes: policy.maxEntryBytes,
    vary: policy.vary,
    cacheAuthorized: policy.cacheAuthorized,
    cacheSetCookie: policy.cacheSetCookie,
    l2: policy.l2 && store.l2 !== null,
    coalesceMs: policy.coalesceTimeout,
    fingerprint,
    // A purged path's generation is part of its keys, so L2 entries of other gateways are left behind too.
    // (The same key text with and without path markers, so the first path purge leaves other paths alone.)
    keyFor: paths.size === 0 ? (host, path, query, principal) => primaryKey(`${prefix}.0`, host, path, query, principal) : (host, path, query, principal) => primaryKey(`${prefix}.${paths.get(path) ?? 0}`, host, path, query, principal),
    count(result) {
      let child = children.get(result);
      if (!child) {
        child = metrics.cacheRequests.labels({ route: routeId, result });
        children.set(result, child);
      }
      child.inc();
    },
  };
}
