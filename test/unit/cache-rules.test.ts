import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseCacheControl, NO_DIRECTIVES } from '../../src/cache/cache-control.ts';
import {
  bypassReason,
  freshnessLifetimeMs,
  initialAgeMs,
  mustRevalidate,
  notModified,
  notStoredReason,
  requestDirectives,
  usability,
  varyFields,
  type Freshness,
  type RequestFacts,
} from '../../src/cache/freshness.ts';
import { primaryKey, principalOf } from '../../src/cache/key.ts';
import { selectingValues } from '../../src/cache/entry.ts';
import { cacheSchema } from '../../src/policy/cache-schema.ts';
import { policyDocumentSchema } from '../../src/policy/schema.ts';

const fields = (record: Record<string, string>) => (name: string) => (Object.hasOwn(record, name) ? record[name] : undefined);
const T0 = Date.parse('Thu, 03 Dec 2026 10:00:00 GMT');

describe('Cache-Control (RFC 9111 §5.2)', () => {
  const cases: [string, Partial<typeof NO_DIRECTIVES>][] = [
    ['max-age=60', { maxAge: 60 }],
    ['MAX-AGE=60, public', { maxAge: 60, public: true }],
    ['max-age="30"', { maxAge: 30 }],
    ['max-age=abc', { maxAge: 0 }],
    ['max-age=60, max-age=10', { maxAge: 10 }],
    ['s-maxage=5', { sMaxAge: 5 }],
    ['no-store', { noStore: true }],
    ['no-cache="set-cookie"', { noCache: true }],
    ['private', { private: true }],
    ['must-revalidate, proxy-revalidate', { mustRevalidate: true, proxyRevalidate: true }],
    ['max-stale', { maxStale: Infinity }],
    ['max-stale=20', { maxStale: 20 }],
    ['min-fresh=5', { minFresh: 5 }],
    ['only-if-cached', { onlyIfCached: true }],
    ['max-age=99999999999999', { maxAge: 2 ** 31 }],
    [' , ,, ', {}],
    ['__proto__=1, constructor', {}],
  ];
  for (const [field, want] of cases) {
    test(field, () => assert.deepEqual(parseCacheControl(field), { ...NO_DIRECTIVES, ...want }));
  }
  test('an oversized field reads as no-store', () => assert.equal(parseCacheControl('a,'.repeat(5000)).noStore, true));
  test('Pragma: no-cache counts only without Cache-Control', () => {
    assert.equal(requestDirectives(undefined, 'no-cache').noCache, true);
    assert.equal(requestDirectives('max-age=5', 'no-cache').noCache, false);
  });
});

describe('what a request may do', () => {
  const base: RequestFacts = { method: 'GET', directives: NO_DIRECTIVES, hasBody: false, upgrade: false, grpc: false, range: false, authorized: false };
  const cases: [string, Partial<RequestFacts>, boolean, string | null][] = [
    ['plain GET', {}, false, null],
    ['HEAD', { method: 'HEAD' }, false, null],
    ['POST', { method: 'POST' }, false, 'method'],
    ['DELETE', { method: 'DELETE' }, false, 'method'],
    ['GET with a body', { hasBody: true }, false, 'body'],
    ['WebSocket upgrade', { upgrade: true }, false, 'upgrade'],
    ['gRPC', { grpc: true }, false, 'grpc'],
    ['Range', { range: true }, false, 'range'],
    ['no-store', { directives: { ...NO_DIRECTIVES, noStore: true } }, false, 'no-store'],
    ['authorized, policy says no', { authorized: true }, false, 'authorized'],
    ['authorized, cacheAuthorized', { authorized: true }, true, null],
  ];
  for (const [what, facts, cacheAuthorized, want] of cases) {
    test(what, () => assert.equal(bypassReason({ ...base, ...facts }, cacheAuthorized), want));
  }
});

describe('what a response may be stored as (RFC 9111 §3)', () => {
  const cases: [string, number, Record<string, string>, boolean, string | null][] = [
    ['200 plain', 200, {}, false, null],
    ['404', 404, {}, false, null],
    ['301', 301, {}, false, null],
    ['206 (ranges are not assembled)', 206, {}, false, 'status'],
    ['302', 302, { 'cache-control': 'max-age=60' }, false, 'status'],
    ['500', 500, {}, false, 'status'],
    ['no-store', 200, { 'cache-control': 'no-store' }, false, 'no-store'],
    ['private', 200, { 'cache-control': 'private, max-age=60' }, false, 'private'],
    ['no-cache', 200, { 'cache-control': 'no-cache' }, false, 'no-cache'],
    ['Vary: *', 200, { vary: 'accept, *' }, false, 'vary-star'],
    ['Vary with a non-token', 200, { vary: 'a b' }, false, 'vary-star'],
    ['Vary on 17 fields', 200, { vary: Array.from({ length: 17 }, (_, i) => `f${i}`).join(',') }, false, 'vary-too-many'],
  ];
  for (const [what, status, f, setCookie, want] of cases) {
    test(what, () => assert.equal(notStoredReason({ status, fields: fields(f), hasSetCookie: setCookie, request: NO_DIRECTIVES, cacheSetCookie: false }), want));
  }
  test('Set-Cookie only with cacheSetCookie', () => {
    assert.equal(notStoredReason({ status: 200, fields: fields({}), hasSetCookie: true, request: NO_DIRECTIVES, cacheSetCookie: false }), 'set-cookie');
    assert.equal(notStoredReason({ status: 200, fields: fields({}), hasSetCookie: true, request: NO_DIRECTIVES, cacheSetCookie: true }), null);
  });
  test('a request no-store keeps the response out', () => {
    assert.equal(notStoredReason({ status: 200, fields: fields({}), hasSetCookie: false, request: { ...NO_DIRECTIVES, noStore: true }, cacheSetCookie: false }), 'no-store');
  });
  test('Vary names are lower-cased, deduplicated and sorted', () => {
    assert.deepEqual(varyFields('Accept-Language, accept, ACCEPT'), ['accept', 'accept-language']);
    assert.deepEqual(varyFields(undefined), []);
    assert.deepEqual(varyFields('__proto__'), ['__proto__']);
  });
});

describe('freshness (RFC 9111 §4.2)', () => {
  const date = new Date(T0).toUTCString();
  const cases: [string, Record<string, string>, number][] = [
    ['s-maxage wins over max-age', { 'cache-control': 'max-age=10, s-maxage=20' }, 20_000],
    ['max-age wins over Expires', { 'cache-control': 'max-age=10', expires: new Date(T0 + 60_000).toUTCString(), date }, 10_000],
    ['Expires minus Date', { expires: new Date(T0 + 60_000).toUTCString(), date }, 60_000],
    ['invalid Expires is already expired', { expires: '0' }, 0],
    ['Expires in the past', { expires: new Date(T0 - 5000).toUTCString(), date }, 0],
    ['nothing: the policy ttl', {}, 30_000],
  ];
  for (const [what, f, want] of cases) test(what, () => assert.equal(freshnessLifetimeMs(fields(f), 30_000, T0), want));

  test('initial age: the larger of apparent age and Age plus the request time', () => {
    assert.equal(initialAgeMs(fields({ age: '10' }), T0 - 500, T0), 10_500);
    assert.equal(initialAgeMs(fields({ date: new Date(T0 - 20_000).toUTCString() }), T0, T0), 20_000);
    assert.equal(initialAgeMs(fields({ age: 'junk' }), T0, T0), 0);
  });
  test('s-maxage implies proxy-revalidate', () => {
    assert.equal(mustRevalidate(fields({ 'cache-control': 's-maxage=5' })), true);
    assert.equal(mustRevalidate(fields({ 'cache-control': 'max-age=5' })), false);
  });

  const fresh: Freshness = { initialAgeMs: 0, lifetimeMs: 60_000, responseTimeMs: T0, mustRevalidate: false };
  const uses: [string, Freshness, Partial<typeof NO_DIRECTIVES>, number, string][] = [
    ['fresh', fresh, {}, T0 + 10_000, 'fresh'],
    ['expired', fresh, {}, T0 + 61_000, 'unusable'],
    ['request max-age narrows', fresh, { maxAge: 5 }, T0 + 10_000, 'unusable'],
    ['request min-fresh narrows', fresh, { minFresh: 55 }, T0 + 10_000, 'unusable'],
    ['max-stale widens', fresh, { maxStale: 10 }, T0 + 65_000, 'stale-allowed'],
    ['max-stale beyond its bound', fresh, { maxStale: 1 }, T0 + 65_000, 'unusable'],
    ['must-revalidate forbids stale', { ...fresh, mustRevalidate: true }, { maxStale: Infinity }, T0 + 65_000, 'unusable'],
    ['no-cache never uses an entry', fresh, { noCache: true }, T0, 'unusable'],
    ['initial age counts', { ...fresh, initialAgeMs: 59_000 }, {}, T0 + 2000, 'unusable'],
  ];
  for (const [what, f, d, now, want] of uses) test(what, () => assert.equal(usability(f, { ...NO_DIRECTIVES, ...d }, now), want));
});

describe('conditional requests (RFC 9110 §13.2.2)', () => {
  const lm = new Date(T0).toUTCString();
  const cases: [string, string | undefined, string | undefined, string | undefined, string | undefined, boolean][] = [
    ['same strong tag', '"a"', undefined, '"a"', undefined, true],
    ['weak comparison', 'W/"a"', undefined, '"a"', undefined, true],
    ['one of a list', '"x", "a"', undefined, '"a"', undefined, true],
    ['star', '*', undefined, '"a"', undefined, true],
    ['other tag', '"b"', undefined, '"a"', undefined, false],
    ['no ETag stored', '"a"', undefined, undefined, lm, false],
    ['If-None-Match wins over If-Modified-Since', '"b"', lm, '"a"', lm, false],
    ['not modified since', undefined, lm, undefined, lm, true],
    ['modified since', undefined, new Date(T0 - 1000).toUTCString(), undefined, lm, false],
    ['garbage date', undefined, 'yesterday', undefined, lm, false],
  ];
  for (const [what, inm, ims, etag, lastModified, want] of cases) test(what, () => assert.equal(notModified(inm, ims, etag, lastModified), want));
});

describe('keys', () => {
  test('host, path, query and principal each make a different key', () => {
    const keys = new Set([
      primaryKey('/r', 'a.example', '/p', '', ''),
      primaryKey('/r', 'b.example', '/p', '', ''),
      primaryKey('/r', 'a.example', '/p', '?x=1', ''),
      primaryKey('/r', 'a.example', '/q', '', ''),
      primaryKey('/r', 'a.example', '/p', '', principalOf({ method: 'apiKey', subject: 'alice', consumer: 'alice' }, undefined)),
      primaryKey('/r', 'a.example', '/p', '', principalOf({ method: 'apiKey', subject: 'bob', consumer: 'bob' }, undefined)),
      primaryKey('/r', 'a.example', '/p', '', principalOf({ method: 'jwt', subject: 'alice', consumer: null }, undefined)),
      primaryKey('/r', 'a.example', '/p', '', principalOf(null, 'Bearer a')),
      primaryKey('/r', 'a.example', '/p', '', principalOf({ method: 'apiKey', subject: 'alice', consumer: 'alice' }, 'Bearer a')),
      primaryKey('/r2', 'a.example', '/p', '', ''),
    ]);
    assert.equal(keys.size, 10);
  });
  test('a principal never holds the credential itself', () => {
    assert.ok(!principalOf(null, 'Bearer secret-token').includes('secret'));
  });
  test('selecting values tell absent from empty and ignore surrounding space', () => {
    const h = (r: Record<string, string | string[]>) => (n: string) => (Object.hasOwn(r, n) ? r[n] : undefined);
    assert.notEqual(selectingValues(['a'], h({})), selectingValues(['a'], h({ a: '' })));
    assert.equal(selectingValues(['a'], h({ a: ' x ' })), selectingValues(['a'], h({ a: 'x' })));
    assert.equal(selectingValues(['a'], h({ a: ['x', 'y'] })), selectingValues(['a'], h({ a: 'x,y' })));
    assert.equal(selectingValues(['__proto__'], h({})), selectingValues(['__proto__'], h({})));
  });
});

describe('the cache policy section', () => {
  const valid = (cache: unknown) => cacheSchema.safeParse(cache).success;
  const cases: [string, unknown, boolean][] = [
    ['minimal', { ttl: '30s' }, true],
    ['everything', { ttl: '1m', maxEntryBytes: 2048, vary: ['Accept-Language'], cacheAuthorized: true, cacheSetCookie: true, l2: true, coalesceTimeout: '0s' }, true],
    ['no ttl', {}, false],
    ['ttl below a second', { ttl: '10ms' }, false],
    ['ttl over a day', { ttl: '2d' }, false],
    ['maxEntryBytes too small', { ttl: '1m', maxEntryBytes: 10 }, false],
    ['maxEntryBytes too large', { ttl: '1m', maxEntryBytes: 2 ** 40 }, false],
    ['vary on Authorization', { ttl: '1m', vary: ['Authorization'] }, false],
    ['vary on a non-token', { ttl: '1m', vary: ['a b'] }, false],
    ['vary twice', { ttl: '1m', vary: ['a', 'A'] }, false],
    ['17 vary names', { ttl: '1m', vary: Array.from({ length: 17 }, (_, i) => `h${i}`) }, false],
    ['unknown field', { ttl: '1m', shared: true }, false],
    ['prototype name', JSON.parse('{"ttl":"1m","__proto__":{"l2":true}}'), false],
    ['not an object', [], false],
  ];
  for (const [what, cache, want] of cases) test(what, () => assert.equal(valid(cache), want));
  test('a bad section names its field', () => {
    const r = policyDocumentSchema.safeParse({ appliesTo: 'defaults', cache: { ttl: 'soon' } });
    assert.equal(r.success, false);
    assert.deepEqual(r.error?.issues[0]?.path, ['cache', 'ttl']);
  });
});
