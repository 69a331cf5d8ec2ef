import type { KvEntry, Problem } from '../core/types.ts';
import { CACHE_PURGE_DIR, MAX_PURGE_MARKERS, parsePurgeMarker, purgeKeyName } from '../policy/cache-purge.ts';

/** The purge generations in force: every gateway and worker keys its cache entries with them. */
export interface CachePurges {
  readonly all: number;
  /** By route id (null-prototype records: a route may be named `/__proto__`). */
  readonly routes: Readonly<Record<string, number>>;
  /** By request path. */
  readonly paths: Readonly<Record<string, number>>;
}

/** `<prefix>cache-purge/<name>` markers, checked; a bad one is a problem and purges nothing. */
export function readCachePurges(kv: readonly KvEntry[], kvPrefix: string, problems: Problem[]): CachePurges {
  const base = `${kvPrefix}${CACHE_PURGE_DIR}`;
  let all = 0;
  const routes = Object.create(null) as Record<string, number>;
  const paths = Object.create(null) as Record<string, number>;
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
      problems.push({ kind: 'kv', subject: entry.key, message: `invalid cache purge marker at ModifyIndex ${entry.modifyIndex}: ${parsed.error}` });
      continue;
    }
    const { target, generation } = parsed.marker;
    if (purgeKeyName(target) !== name) {
      problems.push({ kind: 'kv', subject: entry.key, message: `the marker's target belongs under ${base}${purgeKeyName(target)}; ignored (write it with cgw cache purge)` });
      continue;
    }
    if ('all' in target) all = generation;
    else if ('route' in target) routes[target.route] = generation;
    else paths[target.path] = generation;
  }
  return { all, routes, paths };
}
