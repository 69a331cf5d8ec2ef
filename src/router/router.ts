import { fabioGlobOrder, globMatches, isHostGlob } from '../core/host-glob.ts';

/**
 * Route lookup compiled once per snapshot. A lookup walks the request path's segment boundaries
 * from longest to shortest, one Map probe each, so the cost grows with path depth, not with the
 * number of routes. Hosts are tried in fabio's order: the exact host, then host globs
 * (`*.example.com`) most specific first (host-glob.ts), then host-less routes; the first host
 * whose routes have a matching path prefix answers.
 *
 * Which globs match a host is worked out once per host name and remembered (a bounded cache, as
 * fabio's glob cache), so a request does not scan every glob.
 */
export interface RoutableRoute {
  readonly host: string | null;
  readonly path: string;
}

export interface Router<R extends RoutableRoute> {
  match(host: string | undefined, path: string): R | undefined;
}

/** Host names whose matching globs are remembered; past it the memory starts again (Host is the client's). */
const GLOB_CACHE_SIZE = 4096;
const NO_GLOBS: readonly never[] = [];

export function compileRouter<R extends RoutableRoute>(routes: readonly R[]): Router<R> {
  const byHost = new Map<string, Map<string, R>>();
  const byGlob = new Map<string, Map<string, R>>();
  const anyHost = new Map<string, R>();
  for (const route of routes) {
    let table = anyHost;
    if (route.host !== null) {
      const tables = isHostGlob(route.host) ? byGlob : byHost;
      table = tables.get(route.host) ?? new Map<string, R>();
      tables.set(route.host, table);
    }
    if (!table.has(route.path)) table.set(route.path, route);
  }
  const globs = [...byGlob.keys()].sort(fabioGlobOrder).map((pattern) => ({ pattern, table: byGlob.get(pattern) as Map<string, R> }));
  const globsByHost = new Map<string, readonly Map<string, R>[]>();
  const globTablesFor = (name: string): readonly Map<string, R>[] => {
    let found = globsByHost.get(name);
    if (found === undefined) {
      const tables = globs.filter((g) => globMatches(g.pattern, name)).map((g) => g.table);
      found = tables.length === 0 ? NO_GLOBS : tables;
      if (globsByHost.size >= GLOB_CACHE_SIZE) globsByHost.clear();
      globsByHost.set(name, found);
    }
    return found;
  };

  return {
    match(host, path) {
      if (host && (byHost.size > 0 || globs.length > 0)) {
        const name = normaliseHost(host);
        const hostTable = byHost.get(name);
        if (hostTable) {
          const hit = longestPrefix(hostTable, path);
          if (hit) return hit;
        }
        if (globs.length > 0 && name.length <= 253) {
          for (const table of globTablesFor(name)) {
            const hit = longestPrefix(table, path);
            if (hit) return hit;
          }
        }
      }
      return anyHost.size > 0 ? longestPrefix(anyHost, path) : undefined;
    },
  };
}

/** Host header → lower case, without port (also for bracketed IPv6 literals). */
export function normaliseHost(host: string): string {
  const lower = host.toLowerCase();
  if (lower.startsWith('[')) {
    const end = lower.indexOf(']');
    return end === -1 ? lower : lower.slice(0, end + 1);
  }
  const colon = lower.indexOf(':');
  const name = colon === -1 ? lower : lower.slice(0, colon);
  return name.endsWith('.') ? name.slice(0, -1) : name;
}

function longestPrefix<R>(table: Map<string, R>, path: string): R | undefined {
  // A trailing slash belongs to no segment: /web/ matches like /web.
  let end = path.length > 1 && path.endsWith('/') ? path.length - 1 : path.length;
  while (end > 0) {
    const hit = table.get(end === path.length ? path : path.slice(0, end));
    if (hit) return hit;
    end = path.lastIndexOf('/', end - 1);
  }
  return table.get('/');
}
