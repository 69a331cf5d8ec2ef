import type { IncomingHttpHeaders } from 'node:http';
import type { CompiledRoute } from '../runtime/runtime.ts';
import { ageSeconds, bypassReason, CacheFill, notModified, principalOf, requestDirectives, usability, type CacheEntry, type CacheResult, type RouteCache } from '../runtime/cache.ts';
import type { PreparedBody } from './body.ts';
import type { Exchange } from './pipeline.ts';

/** Fields a 304 from the cache carries (RFC 9110 §15.4.5), besides Age, X-Cache and the request id. */
const NOT_MODIFIED_FIELDS: ReadonlySet<string> = new Set(['cache-control', 'content-location', 'date', 'etag', 'expires', 'vary', 'last-modified']);
/** Statuses whose answer has no body, so no Content-Length either (RFC 9110 §8.6). */
const BODILESS: ReadonlySet<number> = new Set([204, 304]);

/**
 * The cache step of a route with a cache policy, after authentication and rate limits (a hit
 * still counts against a client's limits) and before the breaker (a hit needs no upstream).
 * It answers from a stored entry, waits for a concurrent miss of the same key, or sends the
 * request on (`ex.pass`) with a tap that stores the response while it streams to the client.
 */
export function cacheStep(ex: Exchange, route: CompiledRoute, cache: RouteCache, body: PreparedBody | null): void {
  const { req } = ex;
  const headers = req.headers;
  const method = req.method ?? 'GET';
  const directives = requestDirectives(headers['cache-control'], headers.pragma);
  const authorization = headers.authorization;
  const bypass = bypassReason(
    {
      method,
      directives,
      hasBody: body !== null || ex.hasBody,
      upgrade: headers.upgrade !== undefined,
      grpc: ex.grpc,
      range: headers.range !== undefined,
      authorized: ex.identity !== null || authorization !== undefined,
    },
    cache.cacheAuthorized,
  );
  if (bypass !== null) return goUpstream(ex, route, cache, body, 'bypass', null);
  const target = ex.target as NonNullable<Exchange['target']>;
  const key = cache.keyFor(target.host, target.path, target.query, principalOf(ex.identity, authorization));
  let stale: CacheEntry | null = null;
  if (!directives.noCache) {
    const found = usableEntry(ex, cache, key);
    if (found !== undefined && found.usable) return serve(ex, cache, found.entry, 'hit', found.stale);
    if (found !== undefined && method === 'GET' && revalidatable(found.entry, headers)) stale = found.entry;
  }
  if (directives.onlyIfCached) {
    cache.count('only_if_cached');
    ex.cacheResult = 'miss';
    return ex.refuse('not_cached');
  }
  if (cache.l2 && !directives.noCache && cache.store.l2 !== null) {
    cache.store.l2.get(key).then(
      (entry) => {
        if (entry !== undefined && entry.routeId === route.id) cache.store.store(key, cache.fingerprint, entry);
        if (!serveStored(ex, cache, key, 'hit')) miss(ex, route, cache, body, key, directives.noCache, stale);
      },
      (err: unknown) => ex.fail(err),
    );
    return;
  }
  miss(ex, route, cache, body, key, directives.noCache, stale);
}

function miss(ex: Exchange, route: CompiledRoute, cache: RouteCache, body: PreparedBody | null, key: string, refresh: boolean, stale: CacheEntry | null): void {
  if (cache.coalesceMs > 0 && !refresh) {
    if (cache.store.join(key, () => afterWait(ex, route, cache, body, key))) return;
    // A full flight (MAX_WAITERS) is not this request's to land: it goes upstream as a plain miss.
    if (ex.req.method === 'GET' && cache.store.lead(key, cache.coalesceMs)) return goUpstream(ex, route, cache, body, 'miss', key, true, stale);
  }
  goUpstream(ex, route, cache, body, 'miss', key, false, stale);
}

/** The miss this request waited on is over: its entry answers, else the request goes itself. */
function afterWait(ex: Exchange, route: CompiledRoute, cache: RouteCache, body: PreparedBody | null, key: string): void {
  try {
    if (ex.res.destroyed || ex.res.writableEnded) return ex.finish(499);
    if (serveStored(ex, cache, key, 'coalesced')) return;
    goUpstream(ex, route, cache, body, 'miss', key);
  } catch (err) {
    ex.fail(err);
  }
}

function goUpstream(ex: Exchange, route: CompiledRoute, cache: RouteCache, body: PreparedBody | null, result: 'miss' | 'bypass', key: string | null, leading = false, stale: CacheEntry | null = null): void {
  cache.count(result);
  ex.cacheResult = result;
  ex.extraHeaders = ex.extraHeaders === null ? ['x-cache', result] : [...ex.extraHeaders, 'x-cache', result];
  // HEAD misses are forwarded unstored: their empty body must never answer a GET.
  if (key !== null && ex.req.method === 'GET') {
    const target = ex.target as NonNullable<Exchange['target']>;
    const headers = ex.req.headers;
    if (stale !== null) {
      // RFC 9111 §4.3.1: the stored validators go upstream; a 304 makes the entry fresh again.
      if (stale.etag !== undefined) headers['if-none-match'] = stale.etag;
      else if (stale.lastModified !== undefined) headers['if-modified-since'] = stale.lastModified;
    }
    ex.responseTap = new CacheFill(cache, key, {
      routeId: route.id,
      path: target.path,
      requestTimeMs: Date.now(),
      directives: requestDirectives(headers['cache-control'], headers.pragma),
      header: (name) => ownHeader(headers, name),
      leading,
      stale,
      serve: (entry) => {
        cache.count('revalidated');
        return writeAnswer(ex, entry, Date.now(), false);
      },
    });
  }
  ex.pass(route, body);
}

/** The entry stored for the request, and whether it may answer it now. */
function usableEntry(ex: Exchange, cache: RouteCache, key: string): { entry: CacheEntry; usable: boolean; stale: boolean } | undefined {
  const headers = ex.req.headers;
  const entry = cache.store.lookup(key, (name) => ownHeader(headers, name));
  if (entry === undefined) return undefined;
  const usable = usability(entry.freshness, requestDirectives(headers['cache-control'], headers.pragma), Date.now());
  return { entry, usable: usable !== 'unusable', stale: usable === 'stale-allowed' };
}

/** Answers from a usable stored entry; false when there is none. */
function serveStored(ex: Exchange, cache: RouteCache, key: string, result: 'hit' | 'coalesced'): boolean {
  const found = usableEntry(ex, cache, key);
  if (found === undefined || !found.usable) return false;
  serve(ex, cache, found.entry, result, found.stale);
  return true;
}

function serve(ex: Exchange, cache: RouteCache, entry: CacheEntry, result: 'hit' | 'coalesced', stale: boolean): void {
  const headers = ex.req.headers;
  const conditional = notModified(single(headers['if-none-match']), single(headers['if-modified-since']), entry.etag, entry.lastModified);
  cache.count(conditional ? 'not_modified' : stale ? 'stale' : result);
  ex.finish(writeAnswer(ex, entry, Date.now(), conditional));
}

/** A stale entry can be revalidated when it has a validator and the client sent none of its own. */
function revalidatable(entry: CacheEntry, headers: IncomingHttpHeaders): boolean {
  return (entry.etag !== undefined || entry.lastModified !== undefined) && headers['if-none-match'] === undefined && headers['if-modified-since'] === undefined;
}

/** Writes an answer from an entry (the exchange is finished by the caller); returns the status. */
function writeAnswer(ex: Exchange, entry: CacheEntry, now: number, conditional: boolean): number {
  const { res } = ex;
  const status = conditional ? 304 : entry.status;
  const out: string[] = [];
  const fields = entry.fields;
  const own = ex.extraHeaders;
  for (let i = 0; i < fields.length; i += 2) {
    const name = fields[i] as string;
    if (name === 'content-length' || (conditional && !NOT_MODIFIED_FIELDS.has(name))) continue;
    if (own !== null && isOwn(own, name)) continue;
    out.push(name, fields[i + 1] as string);
  }
  if (!BODILESS.has(status)) out.push('content-length', String(entry.body.length));
  out.push('age', String(ageSeconds(entry.freshness, now)), 'x-cache', 'hit', 'x-request-id', ex.requestId);
  // The route's own headers (HSTS, rate limits); a revalidation had already said `miss`.
  if (own !== null) for (let i = 0; i < own.length; i += 2) if (own[i] !== 'x-cache') out.push(own[i] as string, own[i + 1] as string);
  if (ex.mustClose()) out.push('connection', 'close');
  ex.cacheResult = 'hit';
  res.writeHead(status, out);
  if (ex.req.method === 'HEAD' || BODILESS.has(status)) res.end();
  else res.end(entry.body);
  return status;
}

function isOwn(own: readonly string[], name: string): boolean {
  if (name === 'set-cookie') return false;
  for (let i = 0; i < own.length; i += 2) if ((own[i] as string).toLowerCase() === name) return true;
  return false;
}

/** A request field by name; `__proto__` and `constructor` are names like any other, never inherited values. */
function ownHeader(headers: IncomingHttpHeaders, name: string): string | string[] | undefined {
  return Object.hasOwn(headers, name) ? headers[name] : undefined;
}

function single(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(',') : v;
}

export type { CacheResult };
