import { parseCacheControl, type Directives } from './cache-control.ts';

/**
 * What a shared cache may store and serve (RFC 9111). Pure functions of headers and times, so
 * every rule is tested by a table; times are milliseconds since the epoch, passed in.
 */

/** Response fields as stored: lower-case names, one value per field (Set-Cookie is never stored merged). */
export type FieldLookup = (name: string) => string | undefined;

/**
 * Statuses stored: those RFC 9110 §15.1 calls heuristically cacheable that a gateway sees in
 * practice, minus 206 (ranges are not assembled here) and 405/414/501 (answers to requests the
 * cache bypasses anyway). 302/307 and the rest are passed through unstored.
 */
export const STORED_STATUSES: ReadonlySet<number> = new Set([200, 203, 204, 300, 301, 308, 404, 410]);

/** Fields describing one hop or one exchange, never kept in an entry. */
export const NOT_STORED_FIELDS: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings',
  // Per exchange: the gateway sets its own on every answer.
  'x-request-id', 'x-cache', 'age',
]);

/** At most this many Vary fields; a response varying on more is not stored (bounded key work). */
export const MAX_VARY_FIELDS = 16;

export type Bypass = 'method' | 'upgrade' | 'body' | 'range' | 'no-store' | 'authorized' | 'grpc';

export interface RequestFacts {
  readonly method: string;
  readonly directives: Directives;
  readonly hasBody: boolean;
  readonly upgrade: boolean;
  readonly grpc: boolean;
  readonly range: boolean;
  /** The request carries credentials (Authorization, or the route authenticated it). */
  readonly authorized: boolean;
}

/** Why a request neither reads nor fills the cache, or null when it may. */
export function bypassReason(r: RequestFacts, cacheAuthorized: boolean): Bypass | null {
  if (r.method !== 'GET' && r.method !== 'HEAD') return 'method';
  if (r.upgrade) return 'upgrade';
  if (r.grpc) return 'grpc';
  if (r.hasBody) return 'body';
  if (r.range) return 'range';
  if (r.directives.noStore) return 'no-store';
  if (r.authorized && !cacheAuthorized) return 'authorized';
  return null;
}

/** Request Cache-Control; `Pragma: no-cache` only counts without one (RFC 9111 §5.4). */
export function requestDirectives(cacheControl: string | readonly string[] | undefined, pragma: string | readonly string[] | undefined): Directives {
  const d = parseCacheControl(cacheControl);
  if (cacheControl === undefined && pragma !== undefined && /(^|,)\s*no-cache\s*(,|$)/i.test(typeof pragma === 'string' ? pragma : pragma.join(','))) return { ...d, noCache: true };
  return d;
}

export type NotStored = 'status' | 'no-store' | 'private' | 'no-cache' | 'set-cookie' | 'vary-star' | 'vary-too-many' | 'too-large' | 'incomplete' | 'head' | 'zero-freshness';

export interface StorableFacts {
  readonly status: number;
  readonly fields: FieldLookup;
  readonly hasSetCookie: boolean;
  readonly request: Directives;
  readonly cacheSetCookie: boolean;
}

/**
 * RFC 9111 §3: may a shared cache store this response? `no-cache` responses would need
 * revalidation on every use, which this cache does not do, so they are not stored at all.
 */
export function notStoredReason(f: StorableFacts): NotStored | null {
  if (!STORED_STATUSES.has(f.status)) return 'status';
  const d = parseCacheControl(f.fields('cache-control'));
  if (d.noStore || f.request.noStore) return 'no-store';
  if (d.private) return 'private';
  if (d.noCache) return 'no-cache';
  if (f.hasSetCookie && !f.cacheSetCookie) return 'set-cookie';
  const vary = varyFields(f.fields('vary'));
  if (vary === '*') return 'vary-star';
  if (vary === 'too-many') return 'vary-too-many';
  return null;
}

/** The response's Vary as lower-case field names; `*` (never matches, §4.1) or too many fields say so. */
export function varyFields(value: string | undefined): readonly string[] | '*' | 'too-many' {
  if (value === undefined) return [];
  const names = new Set<string>();
  for (const part of value.split(',')) {
    const name = part.trim().toLowerCase();
    if (name === '') continue;
    if (name === '*') return '*';
    // A name that is not a token matches nothing a client could send reliably: treat as `*`.
    if (!/^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$/.test(name)) return '*';
    names.add(name);
    if (names.size > MAX_VARY_FIELDS) return 'too-many';
  }
  return [...names].sort();
}

/** HTTP-date (RFC 9110 §5.6.7) in ms, or undefined; Date.parse reads all three formats. */
export function httpDate(value: string | undefined): number | undefined {
  if (value === undefined || value.length > 64) return undefined;
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * Freshness lifetime (RFC 9111 §4.2.1) for a shared cache: s-maxage, then max-age, then Expires
 * minus Date, else the policy's `ttl` (the heuristic freshness §4.2.2 leaves to the cache).
 */
export function freshnessLifetimeMs(fields: FieldLookup, ttlMs: number, responseTimeMs: number): number {
  const d = parseCacheControl(fields('cache-control'));
  if (d.sMaxAge !== undefined) return d.sMaxAge * 1000;
  if (d.maxAge !== undefined) return d.maxAge * 1000;
  const expiresField = fields('expires');
  if (expiresField !== undefined) {
    const expires = httpDate(expiresField);
    // §5.3: an invalid Expires (e.g. "0") means already expired.
    if (expires === undefined) return 0;
    const date = httpDate(fields('date')) ?? responseTimeMs;
    return Math.max(0, expires - date);
  }
  return ttlMs;
}

/** s-maxage implies proxy-revalidate (§5.2.2.10): a shared cache never serves such a response stale. */
export function mustRevalidate(fields: FieldLookup): boolean {
  const d = parseCacheControl(fields('cache-control'));
  return d.mustRevalidate || d.proxyRevalidate || d.sMaxAge !== undefined;
}

/**
 * The age the response had when received (RFC 9111 §4.2.3): the larger of the apparent age
 * (response time minus Date) and the Age field plus the time the request took.
 */
export function initialAgeMs(fields: FieldLookup, requestTimeMs: number, responseTimeMs: number): number {
  const date = httpDate(fields('date'));
  const apparent = date === undefined ? 0 : Math.max(0, responseTimeMs - date);
  const ageField = fields('age');
  const ageValue = ageField !== undefined && /^\d{1,10}$/.test(ageField.trim()) ? Number(ageField.trim()) * 1000 : 0;
  const corrected = ageValue + Math.max(0, responseTimeMs - requestTimeMs);
  return Math.max(apparent, corrected);
}

export interface Freshness {
  readonly initialAgeMs: number;
  readonly lifetimeMs: number;
  /** When the entry was received. */
  readonly responseTimeMs: number;
  readonly mustRevalidate: boolean;
}

export function currentAgeMs(f: Freshness, nowMs: number): number {
  return f.initialAgeMs + Math.max(0, nowMs - f.responseTimeMs);
}

export type Usability = 'fresh' | 'stale-allowed' | 'unusable';

/**
 * May the entry answer this request (RFC 9111 §4.2, §5.2.1)? Request max-age and min-fresh
 * narrow freshness; max-stale widens it unless the response said must-revalidate.
 */
export function usability(f: Freshness, request: Directives, nowMs: number): Usability {
  if (request.noCache) return 'unusable';
  const age = currentAgeMs(f, nowMs);
  if (request.maxAge !== undefined && age > request.maxAge * 1000) return 'unusable';
  const left = f.lifetimeMs - age;
  if (request.minFresh !== undefined && left < request.minFresh * 1000) return 'unusable';
  if (left > 0) return 'fresh';
  if (!f.mustRevalidate && request.maxStale !== undefined && -left <= request.maxStale * 1000) return 'stale-allowed';
  return 'unusable';
}

/** The Age field of an answer from the cache: whole seconds (§5.1). */
export function ageSeconds(f: Freshness, nowMs: number): number {
  return Math.floor(currentAgeMs(f, nowMs) / 1000);
}

/**
 * A client's conditional GET/HEAD against a stored entry (RFC 9110 §13.2.2): If-None-Match by weak
 * comparison, else If-Modified-Since against Last-Modified. True: answer 304.
 */
export function notModified(ifNoneMatch: string | undefined, ifModifiedSince: string | undefined, etag: string | undefined, lastModified: string | undefined): boolean {
  if (ifNoneMatch !== undefined) {
    if (etag === undefined) return false;
    if (ifNoneMatch.trim() === '*') return true;
    const own = weak(etag);
    return ifNoneMatch.split(',').some((candidate) => weak(candidate.trim()) === own);
  }
  if (ifModifiedSince === undefined || lastModified === undefined) return false;
  const since = httpDate(ifModifiedSince);
  const modified = httpDate(lastModified);
  return since !== undefined && modified !== undefined && modified <= since;
}

function weak(tag: string): string {
  return tag.startsWith('W/') ? tag.slice(2) : tag;
}
