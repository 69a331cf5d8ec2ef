import type { RouteRedirect } from '../state/snapshot.ts';

/**
 * A `redirect=<code>,<url>` route's answer, compiled once per snapshot. `$path` is replaced as
 * fabio's Target.BuildRedirectURL does (route/target.go): by the request path after strip and
 * prepend; a `/` just before `$path` is dropped (the path brings its own), as is the `$path`
 * written straight after the host; the request's query is kept when the URL has none of its own.
 * Without `$path` the URL is sent as written.
 */
export interface CompiledRedirect {
  readonly status: number;
  /** The Location for this request: `upstreamPath` is the path after strip and prepend. */
  location(upstreamPath: string, query: string): string;
}

export function compileRedirect(redirect: RouteRedirect): CompiledRedirect {
  const { code, url } = redirect;
  const at = url.indexOf('$path');
  if (at === -1) return { status: code, location: () => url };
  let before = url.slice(0, at);
  const after = url.slice(at + '$path'.length);
  if (before.endsWith('/')) before = before.slice(0, -1);
  const ownQuery = after.includes('?');
  return {
    status: code,
    location(upstreamPath, query) {
      return `${before}${upstreamPath}${after}${ownQuery ? '' : query}`;
    },
  };
}

/**
 * fabio skips a redirect that points at the request itself (same scheme, host and path: its
 * "Skipping redirect with same scheme, host and path"), so an http→https redirect route does not
 * loop once the client is on https.
 */
export function redirectsToItself(location: string, scheme: 'http' | 'https', host: string | undefined, path: string): boolean {
  const q = location.search(/[?#]/);
  const bare = q === -1 ? location : location.slice(0, q);
  if (bare.startsWith('/')) return bare === path;
  const expected = `${scheme}://${(host ?? '').toLowerCase()}${path}`;
  return bare.toLowerCase() === expected.toLowerCase();
}
