import { unmatchableRoutePath } from '../core/url-path.ts';
import { checkRoutePath, isPathPrefix, normaliseRoutePath, parseRouteOptions, shortText, type RouteOptions } from './route-options.ts';

export { isPathPrefix } from './route-options.ts';

/**
 * Routes from service tags, in fabio's syntax so fabio users can switch without retagging:
 * `urlprefix-[host]/path [option=value ...]` (options: route-options.ts). Hand-written: a
 * regex-sized grammar, and the errors must name exactly what is wrong with the one tag.
 *
 * As fabio's registry/consul/routecmd.go does: the tag is trimmed first (a leading space is seen
 * in real registrations), `$DC` / `${DC}` in the host and path become the datacenter of the
 * gateway's Consul agent, the host is lower-cased. A host may be a glob (`*.example.com`, fabio's
 * glob routes; only `*` is supported, matching any run of characters, dots included, as fabio's
 * gobwas glob without separators does).
 */
export const URLPREFIX = 'urlprefix-';

/** Longer tags are refused whole: a route and a few options fit in far less. */
export const MAX_TAG_LENGTH = 4096;

export interface TagRoute extends RouteOptions {
  /** Lower-case host (or host glob) without port, or null for a host-less route. */
  readonly host: string | null;
  /** Path prefix without trailing slash ("/" for the root). */
  readonly path: string;
}

export interface TagEnvironment {
  /** Datacenter of the gateway's Consul agent, for `$DC`; null while it is not known. */
  readonly datacenter: string | null;
}

export type TagParse = { readonly ok: true; readonly route: TagRoute } | { readonly ok: false; readonly error: string };

const HOST = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const NO_ENVIRONMENT: TagEnvironment = { datacenter: null };

/** fabio trims tags before it looks for the prefix (routecmd.go: strings.TrimSpace). */
export function isUrlprefixTag(tag: string): boolean {
  return tag.trimStart().startsWith(URLPREFIX);
}

export function parseUrlprefixTag(tag: string, env: TagEnvironment = NO_ENVIRONMENT): TagParse {
  if (tag.length > MAX_TAG_LENGTH) return { ok: false, error: `tag is ${tag.length} characters; at most ${MAX_TAG_LENGTH}` };
  const [rawTarget = '', ...options] = tag.trim().slice(URLPREFIX.length).trim().split(/\s+/);
  if (rawTarget === '') return { ok: false, error: 'empty route: expected urlprefix-/path or urlprefix-host/path' };
  const expanded = expandVariables(rawTarget, env);
  if (typeof expanded !== 'string') return { ok: false, error: expanded.error };
  const target = expanded;
  const slash = target.indexOf('/');
  if (slash === -1) return { ok: false, error: `"${shortText(target)}" has no path: expected urlprefix-${shortText(target)}/` };

  let host: string | null = null;
  if (slash > 0) {
    const hostPort = target.slice(0, slash).toLowerCase();
    const m = /^(.*?)(:\d{1,5})?$/.exec(hostPort);
    const name = m?.[1] ?? '';
    const hostError = checkHost(name, hostPort);
    if (hostError) return { ok: false, error: hostError };
    host = name;
  }

  const rawPath = target.slice(slash);
  const pathError = checkRoutePath(rawPath);
  if (pathError) return { ok: false, error: pathError };
  const path = normaliseRoutePath(rawPath);
  const unmatchable = unmatchableRoutePath(path);
  if (unmatchable) return { ok: false, error: unmatchable };

  const parsed = parseRouteOptions(options, path);
  if (!parsed.ok) return parsed;
  return { ok: true, route: { host, path, ...parsed.options } };
}

function checkHost(name: string, hostPort: string): string | null {
  // fabio's gobwas globs also know ? [..] {..}; cgw takes * only, and says so.
  if (/[?[\]{}]/.test(name)) return `"${shortText(hostPort)}" is not a valid host name or host glob (only * is supported)`;
  if (!name.includes('*')) return HOST.test(name) ? null : `"${shortText(hostPort)}" is not a valid host name`;
  // A glob is a host name with `*` standing for any characters: checked as one with `*` → `a`.
  if (!HOST.test(name.replace(/\*+/g, 'a'))) return `"${shortText(hostPort)}" is not a valid host name or host glob (only * is supported)`;
  if (/\*\*/.test(name)) return `host glob "${shortText(hostPort)}": write * once (** means the same)`;
  // `*`, `*.*.*`: no name at all, nearly every host; a host-less route says that plainly.
  if (/^[*.]*$/.test(name)) return `host glob "${shortText(hostPort)}" names no domain: write one (*.example.com), or leave the host out (urlprefix-/path)`;
  return null;
}

/**
 * `$DC` and `${DC}` as fabio's os.Expand reads them. Any other variable is refused: fabio would
 * expand it to nothing and route a path nobody wrote.
 */
function expandVariables(target: string, env: TagEnvironment): string | { error: string } {
  if (!target.includes('$')) return target;
  let unknown: string | null = null;
  const out = target.replace(/\$(\{[^}]*\}?|[A-Za-z0-9_]*)/g, (match: string, name: string) => {
    const bare = name.startsWith('{') ? name.slice(1, name.endsWith('}') ? -1 : undefined) : name;
    if (bare === 'DC' && (!name.startsWith('{') || name.endsWith('}'))) return env.datacenter ?? match;
    unknown ??= match;
    return match;
  });
  if (unknown !== null) return { error: `unknown variable ${shortText(unknown)}: only $DC (the Consul datacenter) is expanded in a route` };
  if (out.includes('$DC') || out.includes('${DC}')) return { error: '$DC: the datacenter of the gateway\'s Consul agent is not known yet (GET /v1/agent/self failed); the route follows once it is' };
  return out;
}
