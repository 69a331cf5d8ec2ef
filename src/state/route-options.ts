import { parseAccessRules, type AccessRules } from '../core/ip-rules.ts';
import { unmatchableRoutePath } from '../core/url-path.ts';

/**
 * The options after a fabio route (`urlprefix-/api strip=/api proto=https ...`), with fabio's
 * meaning (fabio docs "Route options" and its source: registry/consul/routecmd.go turns a tag into
 * `route add ... opts "..."`, route/route.go and route/target.go read the options, route/
 * access_rules.go the allow/deny lists). Shared by every route language that takes these options:
 * service tags here, and fabio's `route add ... opts "..."` lines, which call `parseRouteOptions`
 * with the same words.
 *
 * Stricter than fabio on purpose, each time so a mistake shows as a problem instead of routing
 * something nobody asked for: an option fabio would ignore or log (an unknown name, a redirect
 * code outside 301/302/303/307/308, a bad CIDR, the same option twice) makes the tag a problem.
 */
export type RouteProto = 'http' | 'https' | 'grpc' | 'grpcs';
export type RedirectCode = 301 | 302 | 303 | 307 | 308;

export interface RouteRedirect {
  readonly code: RedirectCode;
  /** Absolute http(s) URL or absolute path; `$path` at most once. */
  readonly url: string;
}

export interface RouteOptions {
  /** Prefix removed from the request path before forwarding (`strip=`). */
  readonly strip: string | null;
  /** Prefix added to the upstream path after `strip` (`prepend=`). */
  readonly prepend: string | null;
  /** Host header sent upstream (`host=`): a name, or `dst` for the endpoint's `address:port`; null keeps the client's. */
  readonly upstreamHost: string | null;
  /** The route answers this redirect itself and never forwards (`redirect=<code>,<url>`). */
  readonly redirect: RouteRedirect | null;
  /** Client IP rules (`allow=` or `deny=`, never both: fabio refuses that too). */
  readonly access: AccessRules | null;
  /** How instances are spoken to (`proto=`); grpc/grpcs are carried for the gRPC forwarder. */
  readonly proto: RouteProto;
  /** `tlsskipverify=true`: an https/grpcs upstream's certificate is not verified (self-signed services). */
  readonly tlsSkipVerify: boolean;
  /** `redirect-https`: on a plain-HTTP listener the route redirects to HTTPS instead of serving. */
  readonly redirectHttps: boolean;
}

export const DEFAULT_ROUTE_OPTIONS: RouteOptions = Object.freeze({
  strip: null,
  prepend: null,
  upstreamHost: null,
  redirect: null,
  access: null,
  proto: 'http',
  tlsSkipVerify: false,
  redirectHttps: false,
});

export type RouteOptionsParse = { readonly ok: true; readonly options: RouteOptions } | { readonly ok: false; readonly error: string };

export const KNOWN_ROUTE_OPTIONS = ['strip', 'prepend', 'host', 'redirect', 'allow', 'deny', 'proto', 'tlsskipverify', 'redirect-https'] as const;
type OptionName = (typeof KNOWN_ROUTE_OPTIONS)[number];

const REDIRECT_CODES: readonly number[] = [301, 302, 303, 307, 308];
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const PATH = /^\/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$/;
/** A redirect URL is sent as a Location header: printable ASCII only, and short. */
const MAX_REDIRECT_URL = 2048;

/**
 * Reads fabio route options, one word each (`name=value`). `routePath`, when given, is the route's
 * path: `strip` must be a prefix of it on a segment boundary, or it would never apply.
 */
export function parseRouteOptions(words: readonly string[], routePath?: string): RouteOptionsParse {
  const seen = new Set<OptionName>();
  const out: { -readonly [K in keyof RouteOptions]: RouteOptions[K] } = { ...DEFAULT_ROUTE_OPTIONS };
  for (const word of words) {
    if (word === '') continue;
    const eq = word.indexOf('=');
    const name = eq === -1 ? word : word.slice(0, eq);
    const value = eq === -1 ? '' : word.slice(eq + 1);
    // A switch on the name, never an object lookup: `__proto__` or `constructor` is just unknown.
    const known = (KNOWN_ROUTE_OPTIONS as readonly string[]).includes(name) ? (name as OptionName) : undefined;
    if (known === undefined) return fail(`unknown option "${shortText(name)}" (supported: ${KNOWN_ROUTE_OPTIONS.join(', ')})`);
    if (seen.has(known)) return fail(`option ${known} is given twice`);
    seen.add(known);
    let error: string | null = null;
    switch (known) {
      case 'strip': {
        const strip = routePathOption('strip', value);
        if (typeof strip !== 'string') return fail(strip.error);
        if (strip === '/') return fail('strip=/ would strip nothing');
        if (routePath !== undefined && !isPathPrefix(strip, routePath)) return fail(`strip=${strip} is not a prefix of the route path ${routePath}`);
        out.strip = strip;
        break;
      }
      case 'prepend': {
        const prepend = routePathOption('prepend', value);
        if (typeof prepend !== 'string') return fail(prepend.error);
        if (prepend === '/') return fail('prepend=/ would add nothing');
        out.prepend = prepend;
        break;
      }
      case 'host':
        error = upstreamHostError(value);
        out.upstreamHost = value === 'dst' ? 'dst' : value.toLowerCase();
        break;
      case 'redirect': {
        const redirect = parseRedirect(value);
        if ('error' in redirect) return fail(redirect.error);
        out.redirect = redirect;
        break;
      }
      case 'allow':
      case 'deny': {
        if (out.access !== null) return fail('allow= and deny= cannot both be given (fabio refuses this too)');
        const rules = parseAccessRules(known, value);
        if (!rules.ok) return fail(rules.error);
        out.access = rules.rules;
        break;
      }
      case 'proto': {
        const proto = parseProto(value);
        if (!proto.ok) return fail(proto.error);
        out.proto = proto.proto;
        break;
      }
      case 'tlsskipverify':
        if (value !== 'true' && value !== 'false') error = `tlsskipverify must be true or false, not "${shortText(value)}"`;
        out.tlsSkipVerify = value === 'true';
        break;
      case 'redirect-https':
        // A flag: `redirect-https` alone, or spelled out as `redirect-https=true|false`.
        if (eq !== -1 && value !== 'true' && value !== 'false') error = `redirect-https takes no value (or true/false), not "${shortText(value)}"`;
        out.redirectHttps = eq === -1 || value === 'true';
        break;
    }
    if (error !== null) return fail(error);
  }
  return { ok: true, options: out };
}

/**
 * `proto=`: fabio's http (the default), https, grpc and grpcs. `tcp` is fabio's TCP proxy, which
 * cgw does not have: refusing the tag says so, where accepting it would proxy TCP as HTTP.
 */
export function parseProto(value: string): { readonly ok: true; readonly proto: RouteProto } | { readonly ok: false; readonly error: string } {
  switch (value) {
    case 'http':
    case 'https':
    case 'grpc':
    case 'grpcs':
      return { ok: true, proto: value };
    case 'tcp':
      return { ok: false, error: 'proto=tcp: cgw proxies HTTP (and gRPC) only; TCP routes are not supported' };
    default:
      return { ok: false, error: `proto must be http, https, grpc or grpcs, not "${shortText(value)}"` };
  }
}

/**
 * `redirect=<code>,<url>` (fabio: exactly one comma, so a URL holding a comma is refused there
 * too). `$path` stands for the request path after strip and prepend, as in fabio's
 * Target.BuildRedirectURL; fabio's `$host` is not supported (the tag says so).
 */
function parseRedirect(value: string): RouteRedirect | { error: string } {
  const parts = value.split(',');
  if (parts.length !== 2) return { error: 'redirect must be <code>,<url>, e.g. redirect=301,https://example.com$path' };
  const [codeText = '', url = ''] = parts;
  const code = /^\d{3}$/.test(codeText) ? Number(codeText) : NaN;
  if (!REDIRECT_CODES.includes(code)) return { error: `redirect code must be 301, 302, 303, 307 or 308, not "${shortText(codeText)}"` };
  if (url === '') return { error: 'redirect needs a URL after the code' };
  if (url.length > MAX_REDIRECT_URL) return { error: `redirect URL is ${url.length} characters; at most ${MAX_REDIRECT_URL}` };
  if (!/^[\x21-\x7e]+$/.test(url)) return { error: 'redirect URL may hold printable ASCII only (escape the rest)' };
  if (url.split('$path').length > 2) return { error: 'redirect URL may hold $path once' };
  if (/\$(?!path)/.test(url)) return { error: 'redirect URL: only $path is replaced ($host and other variables are not supported)' };
  const at = url.indexOf('$path');
  if (at !== -1 && [url.indexOf('?'), url.indexOf('#')].some((i) => i !== -1 && i < at)) return { error: 'redirect URL: $path belongs in the path, before any ? or #' };
  const probe = url.replace('$path', '/p');
  if (probe.startsWith('/')) {
    // A path on this host. `//x` or `/\x` would be read by browsers as another host.
    if (probe.startsWith('//') || probe.startsWith('/\\')) return { error: 'redirect URL starting with // names another host: write it with https://' };
    return { code: code as RedirectCode, url };
  }
  let parsed: URL;
  try {
    parsed = new URL(probe);
  } catch {
    return { error: `redirect URL "${shortText(url)}" is not an absolute http(s) URL or a path starting with /` };
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return { error: `redirect URL scheme must be http or https, not ${shortText(parsed.protocol)}` };
  if (!/^https?:\/\//i.test(url)) return { error: 'redirect URL must be written http(s)://host/...' };
  if (parsed.username !== '' || parsed.password !== '') return { error: 'redirect URL must not hold credentials (user:password@)' };
  if (parsed.hostname === '') return { error: 'redirect URL has no host' };
  return { code: code as RedirectCode, url };
}

function upstreamHostError(value: string): string | null {
  if (value === '') return 'host needs a value: a host name, host:port, or dst (the endpoint\'s address:port)';
  if (value === 'dst') return null;
  const m = /^(.*?)(?::(\d{1,5}))?$/.exec(value.toLowerCase());
  const name = m?.[1] ?? '';
  const port = m?.[2];
  if (!HOST_NAME.test(name) && !isIpv4(name) && !/^\[[0-9a-f:.]+\]$/.test(name)) return `host "${shortText(value)}" is not a valid host name (or dst)`;
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) return `host "${shortText(value)}": port must be 1-65535`;
  return null;
}

function isIpv4(text: string): boolean {
  return /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(text) && text.split('.').every((n) => Number(n) <= 255);
}

/** A path option (strip, prepend) normalised like a route path, or why it cannot be one. */
function routePathOption(name: string, value: string): string | { error: string } {
  const error = checkRoutePath(value);
  if (error) return { error: `${name}: ${error}` };
  const path = normaliseRoutePath(value);
  const unmatchable = unmatchableRoutePath(path);
  if (unmatchable) return { error: `${name}: ${unmatchable}` };
  return path;
}

export function checkRoutePath(path: string): string | null {
  if (!path.startsWith('/')) return `path "${shortText(path)}" must start with "/"`;
  if (!PATH.test(path)) return `path "${shortText(path)}" contains characters not allowed in a URL path`;
  if (path.split('/').some((s) => s === '.' || s === '..')) return `path "${shortText(path)}" contains a "." or ".." segment`;
  return null;
}

export function normaliseRoutePath(path: string): string {
  const collapsed = path.replace(/\/{2,}/g, '/');
  return collapsed.length > 1 && collapsed.endsWith('/') ? collapsed.slice(0, -1) : collapsed;
}

/** True when `prefix` matches `path` on a segment boundary: /web matches /web and /web/x, not /webx. */
export function isPathPrefix(prefix: string, path: string): boolean {
  if (prefix === '/') return path.startsWith('/');
  return path === prefix || (path.startsWith(prefix) && path.charCodeAt(prefix.length) === 47 /* "/" */);
}

function fail(error: string): RouteOptionsParse {
  return { ok: false, error };
}

/** Errors quote what they were given, cut: a tag can be kilobytes long. */
export function shortText(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
