/**
 * Route lookup compiled once per snapshot. A lookup walks the request path's segment boundaries
 * from longest to shortest, one Map probe each, so the cost grows with path depth, not with the
 * number of routes. Host-specific routes are tried before host-less ones.
 */
export interface RoutableRoute {
  readonly host: string | null;
  readonly path: string;
}

export interface Router<R extends RoutableRoute> {
  match(host: string | undefined, path: string): R | undefined;
}

export function compileRouter<R extends RoutableRoute>(routes: readonly R[]): Router<R> {
  const byHost = new Map<string, Map<string, R>>();
  const anyHost = new Map<string, R>();
  for (const route of routes) {
    let table = anyHost;
    if (route.host !== null) {
      table = byHost.get(route.host) ?? new Map<string, R>();
      byHost.set(route.host, table);
    }
    if (!table.has(route.path)) table.set(route.path, route);
  }

  return {
    match(host, path) {
      const hostTable = byHost.size > 0 && host ? byHost.get(normaliseHost(host)) : undefined;
      if (hostTable) {
        const hit = longestPrefix(hostTable, path);
        if (hit) return hit;
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
