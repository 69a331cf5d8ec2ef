import type { KvEntry, Problem } from '../core/types.ts';
import { CACHE_PURGE_DIR, MAX_PURGE_MARKERS, parsePurgeMarker, purgeKeyName, type PurgeMarker } from '../policy/cache-purge.ts';

/** The purge generations in force: every gateway and worker keys its cache entries with them. */
export interface CachePurges {
  readonly all: number;
  /** By route id (null-prototype records: a route may be named `/__proto__`). */
  readonly routes: Readonly<Record<string, number>>;
  /** By request path. */
  readonly paths: Readonly<Record<string, number>>;
  /** The marker in force under each key: a bad new value keeps it (last good), so it purges nothing. */
  readonly markers: Readonly<Record<string, PurgeMarker>>;
}

/** `<prefix>cache-purge/<name>` markers, checked; a bad one is a problem and purges nothing. */
export function readCachePurges(kv: readonly KvEntry[], kvPrefix: string, previous: CachePurges | undefined, problems: Problem[]): CachePurges {
  const base = `${kvPrefix}${CACHE_PURGE_DIR}`;
  let all = 0;
  const routes = Object.create(null) as Record<string, number>;
  const paths = Object.create(null) as Record<string, number>;
  const markers = Object.create(null) as Record<string, PurgeMarker>;
  const apply = (key: string, { target, generation }: PurgeMarker): void => {
    markers[key] = { target, generation };
    if ('all' in target) all = generation;
    else if ('route' in target) routes[target.route] = generation;
    else paths[target.path] = generation;
  };
  const lastGood = (key: string): boolean => {
    const kept = previous !== undefined && Object.hasOwn(previous.markers, key) ? previous.markers[key] : undefined;
    if (kept !== undefined) apply(key, kept);
    return kept !== undefined;
  };
  let count = 0;
  for (const entry of kv) {
    if (!entry.key.startsWith(base)) continue;
    const name = entry.key.slice(base.length);
    if (name === '') continue;
    if (++count > MAX_PURGE_MARKERS) {
      problems.push({ kind: 'kv', subject: entry.key, message: `more than ${MAX_PURGE_MARKERS} cache purge markers; this one is ignored (delete old path markers)` });
      continue;
    }
    const parsed = parsePurgeMarker(entry.value);
    if (!parsed.ok) {
      const kept = lastGood(entry.key);
      problems.push({ kind: 'kv', subject: entry.key, message: `invalid cache purge marker at ModifyIndex ${entry.modifyIndex}: ${parsed.error}`, ...(kept ? { keptLastGood: true } : {}) });
      continue;
    }
    if (purgeKeyName(parsed.marker.target) !== name) {
      const kept = lastGood(entry.key);
      problems.push({ kind: 'kv', subject: entry.key, message: `the marker's target belongs under ${base}${purgeKeyName(parsed.marker.target)}; ignored (write it with cgw cache purge)`, ...(kept ? { keptLastGood: true } : {}) });
      continue;
    }
    apply(entry.key, parsed.marker);
  }
  return { all, routes, paths, markers };
}
