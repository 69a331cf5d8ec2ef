import { unmatchableRoutePath } from '../core/url-path.ts';

/**
 * Routes from service tags, in fabio's syntax so fabio users can switch without retagging:
 * `urlprefix-[host]/path [option=value ...]`. Hand-written: a regex-sized grammar, and the
 * errors must name exactly what is wrong with the one tag.
 */
export const URLPREFIX = 'urlprefix-';

export interface TagRoute {
  /** Lower-case host without port, or null for a host-less route. */
  readonly host: string | null;
  /** Path prefix without trailing slash ("/" for the root). */
  readonly path: string;
  readonly strip: string | null;
  /** How the instances are dialled (fabio's `proto=`); `http` when the tag does not say. */
  readonly proto: UpstreamProto;
}

export type TagParse = { readonly ok: true; readonly route: TagRoute } | { readonly ok: false; readonly error: string };

const KNOWN_OPTIONS = ['strip', 'proto'] as const;

/**
 * fabio's `proto=` values cgw dials: HTTP/1.1 in clear or over TLS, gRPC over HTTP/2 in clear
 * (prior-knowledge h2c, as gRPC servers without TLS speak it) or over TLS.
 */
export const UPSTREAM_PROTOS = ['http', 'https', 'grpc', 'grpcs'] as const;
export type UpstreamProto = (typeof UPSTREAM_PROTOS)[number];

/** The value of one `proto=` option, or an error naming the values allowed. */
export function parseProtoOption(value: string): { readonly ok: true; readonly proto: UpstreamProto } | { readonly ok: false; readonly error: string } {
  // Compared against the list, never looked up on an object: `proto=__proto__` is just unknown.
  const proto = UPSTREAM_PROTOS.find((p) => p === value);
  return proto ? { ok: true, proto } : { ok: false, error: `proto: "${value.slice(0, 40)}" is not one of ${UPSTREAM_PROTOS.join(', ')}` };
}
const HOST = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$/;

export function isUrlprefixTag(tag: string): boolean {
  return tag.startsWith(URLPREFIX);
}

export function parseUrlprefixTag(tag: string): TagParse {
  const [target = '', ...options] = tag.slice(URLPREFIX.length).trim().split(/\s+/);
  if (target === '') return { ok: false, error: 'empty route: expected urlprefix-/path or urlprefix-host/path' };
  const slash = target.indexOf('/');
  if (slash === -1) return { ok: false, error: `"${target}" has no path: expected urlprefix-${target}/` };

  let host: string | null = null;
  if (slash > 0) {
    const hostPort = target.slice(0, slash).toLowerCase();
    const m = /^(.*?)(:\d{1,5})?$/.exec(hostPort);
    const name = m?.[1] ?? '';
    if (!HOST.test(name)) return { ok: false, error: `"${hostPort}" is not a valid host name` };
    host = name;
  }

  const rawPath = target.slice(slash);
  const pathError = checkPath(rawPath);
  if (pathError) return { ok: false, error: pathError };
  const path = normalisePath(rawPath);
  const unmatchable = unmatchableRoutePath(path);
  if (unmatchable) return { ok: false, error: unmatchable };

  let strip: string | null = null;
  let proto: UpstreamProto = 'http';
  for (const option of options) {
    const eq = option.indexOf('=');
    const name = eq === -1 ? option : option.slice(0, eq);
    const value = eq === -1 ? '' : option.slice(eq + 1);
    if (!(KNOWN_OPTIONS as readonly string[]).includes(name)) {
      return { ok: false, error: `unknown option "${name}" (supported: ${KNOWN_OPTIONS.join(', ')})` };
    }
    if (name === 'proto') {
      const parsed = parseProtoOption(value);
      if (!parsed.ok) return parsed;
      proto = parsed.proto;
      continue;
    }
    const stripError = checkPath(value);
    if (stripError) return { ok: false, error: `strip: ${stripError}` };
    strip = normalisePath(value);
    const stripUnmatchable = unmatchableRoutePath(strip);
    if (stripUnmatchable) return { ok: false, error: `strip: ${stripUnmatchable}` };
    if (strip === '/') return { ok: false, error: 'strip=/ would strip nothing' };
    if (!isPathPrefix(strip, path)) return { ok: false, error: `strip=${strip} is not a prefix of the route path ${path}` };
  }
  return { ok: true, route: { host, path, strip, proto } };
}

function checkPath(path: string): string | null {
  if (!path.startsWith('/')) return `path "${path}" must start with "/"`;
  if (!PATH.test(path)) return `path "${path}" contains characters not allowed in a URL path`;
  if (path.split('/').some((s) => s === '.' || s === '..')) return `path "${path}" contains a "." or ".." segment`;
  return null;
}

function normalisePath(path: string): string {
  const collapsed = path.replace(/\/{2,}/g, '/');
  return collapsed.length > 1 && collapsed.endsWith('/') ? collapsed.slice(0, -1) : collapsed;
}

/** True when `prefix` matches `path` on a segment boundary: /web matches /web and /web/x, not /webx. */
export function isPathPrefix(prefix: string, path: string): boolean {
  if (prefix === '/') return path.startsWith('/');
  return path === prefix || (path.startsWith(prefix) && path.charCodeAt(prefix.length) === 47 /* "/" */);
}
