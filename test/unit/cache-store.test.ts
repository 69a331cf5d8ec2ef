import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ByteLru } from '../../src/cache/byte-lru.ts';
import { ResponseCache, NO_PURGES } from '../../src/cache/response-cache.ts';
import { compileRouteCache } from '../../src/cache/route-cache.ts';
import { CacheFill } from '../../src/cache/fill.ts';
import { decodeEntry, encodeEntry } from '../../src/cache/l2.ts';
import type { CacheEntry } from '../../src/cache/entry.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { cacheSchema } from '../../src/policy/cache-schema.ts';
import { parsePurgeMarker, purgeKeyName } from '../../src/policy/cache-purge.ts';
import { readCachePurges } from '../../src/state/cache-purges.ts';
import type { Problem } from '../../src/core/types.ts';

const metrics = () => createMetrics({ defaultMetrics: false });
const raw = (pairs: Record<string, string>) => Object.entries(pairs).flatMap(([k, v]) => [Buffer.from(k), Buffer.from(v)]);
const noHeader = () => undefined;

function entry(routeId: string, path: string, bodyBytes: number, varyValues = ''): CacheEntry {
  return {
    routeId,
    path,
    status: 200,
    fields: ['content-type', 'text/plain'],
    body: Buffer.alloc(bodyBytes),
    freshness: { initialAgeMs: 0, lifetimeMs: 60_000, responseTimeMs: Date.now(), mustRevalidate: false },
    varyNames: [],
    varyValues,
    etag: undefined,
    lastModified: undefined,
  };
}

describe('ByteLru', () => {
  test('never holds more bytes than its budget; the least recently used goes first', () => {
    const evicted: string[] = [];
    const lru = new ByteLru<number>(100, (k) => evicted.push(k));
    lru.set('a', 1, 40);
    lru.set('b', 2, 40);
    lru.get('a');
    lru.set('c', 3, 40);
    assert.deepEqual(evicted, ['b']);
    assert.equal(lru.bytes, 80);
    assert.ok(lru.bytes <= 100);
    assert.equal(lru.set('huge', 4, 101), false, 'a value larger than the budget is refused');
    assert.equal(lru.peek('a'), 1);
    lru.set('a', 5, 10);
    assert.equal(lru.bytes, 50, 'a replacement is charged its new size');
    assert.equal(lru.deleteWhere((k) => k === 'c'), 1);
    assert.equal(lru.bytes, 10);
  });
  test('many distinct keys stay within the budget', () => {
    const lru = new ByteLru<null>(10_000);
    for (let i = 0; i < 100_000; i++) lru.set(`k${i}`, null, 1 + (i % 97));
    assert.ok(lru.bytes <= 10_000);
    assert.ok(lru.size < 10_000);
  });
  test('__proto__ is a key like any other', () => {
    const lru = new ByteLru<number>(100);
    lru.set('__proto__', 1, 1);
    assert.equal(lru.get('__proto__'), 1);
    assert.equal(lru.get('constructor'), undefined);
  });
});

describe('ResponseCache', () => {
  test('the byte budget holds across routes and the metrics say so', async () => {
    const m = metrics();
    const cache = new ResponseCache(50_000, m, null);
    for (let i = 0; i < 50; i++) cache.store(`k${i}`, 'f', entry('/r', `/p${i}`, 5000));
    assert.ok(cache.bytes <= 50_000);
    assert.equal((await m.cacheBytes.get()).values[0]?.value, cache.bytes);
    assert.ok(((await m.cacheEvictions.get()).values.find((v) => v.labels.reason === 'size')?.value ?? 0) > 0);
    assert.equal(cache.lookup('k0', noHeader), undefined);
    assert.ok(cache.lookup('k49', noHeader));
  });
  test('variants are kept per selecting values, at most eight per key', () => {
    const cache = new ResponseCache(10_000_000, metrics(), null);
    for (let i = 0; i < 20; i++) cache.store('k', 'f', { ...entry('/r', '/p', 10, `v${i}`), varyNames: ['x'] });
    const found = cache.lookup('k', () => undefined);
    assert.equal(found, undefined);
    assert.ok(cache.bytes < 8 * 2000);
  });
  test('a changed policy, a purge of the route, of a path or of everything drops entries', () => {
    const cache = new ResponseCache(10_000_000, metrics(), null);
    const fill = () => {
      cache.store('a1', 'fa', entry('/a', '/a/1', 10));
      cache.store('a2', 'fa', entry('/a', '/a/2', 10));
      cache.store('b1', 'fb', entry('/b', '/b/1', 10));
    };
    fill();
    const both = new Map([['/a', 'fa'], ['/b', 'fb']]);
    cache.retain(both, NO_PURGES);
    assert.equal(cache.size, 3, 'the first call only remembers');
    cache.retain(new Map([['/a', 'fa'], ['/b', 'changed']]), NO_PURGES);
    assert.deepEqual([cache.lookup('a1', noHeader) !== undefined, cache.lookup('b1', noHeader) !== undefined], [true, false]);
    fill();
    cache.retain(both, { all: 0, routes: { '/a': 1 }, paths: {} });
    assert.equal(cache.size, 1);
    fill();
    cache.retain(both, { all: 0, routes: { '/a': 1 }, paths: { '/a/2': 1 } });
    assert.equal(cache.lookup('a2', noHeader), undefined);
    assert.ok(cache.lookup('a1', noHeader));
    cache.retain(both, { all: 1, routes: { '/a': 1 }, paths: { '/a/2': 1 } });
    assert.equal(cache.size, 0);
  });
  test('coalescing: waiters are released once, when the leader lands or times out', async () => {
    const cache = new ResponseCache(1000, metrics(), null);
    assert.equal(cache.join('k', () => {}), false, 'nothing to wait for');
    cache.lead('k', 10_000);
    const outcomes: string[] = [];
    assert.equal(cache.join('k', (o) => outcomes.push(o)), true);
    cache.land('k');
    cache.land('k');
    assert.deepEqual(outcomes, ['landed']);
    cache.lead('t', 1);
    const timedOut = await new Promise<string>((resolve) => cache.join('t', resolve));
    assert.equal(timedOut, 'timeout');
  });
});

describe('CacheFill', () => {
  const policy = cacheSchema.parse({ ttl: '60s', maxEntryBytes: 2048, vary: ['x-tenant'] });
  const request = (leading = false) => ({ routeId: '/r', path: '/p', requestTimeMs: Date.now(), directives: parseDirectives(), header: (n: string) => (n === 'x-tenant' ? 'one' : undefined), leading, stale: null, serve: () => 200 });
  const parseDirectives = () => ({ noStore: false, noCache: false, private: false, public: false, mustRevalidate: false, proxyRevalidate: false, onlyIfCached: false, maxAge: undefined, sMaxAge: undefined, minFresh: undefined, maxStale: undefined });

  test('stores a complete storable response without hop-by-hop fields', () => {
    const store = new ResponseCache(1_000_000, metrics(), null);
    const rc = compileRouteCache('/r', policy, store, NO_PURGES, metrics());
    const fill = new CacheFill(rc, 'k', request());
    fill.onHead(200, raw({ 'Content-Type': 'text/plain', Connection: 'x-private', 'X-Private': 'secret', 'Keep-Alive': 'timeout=5', 'X-Request-Id': 'up', ETag: '"e"' }));
    fill.onData(Buffer.from('hello '));
    fill.onData(Buffer.from('world'));
    fill.onComplete();
    fill.onEnd();
    const e = store.lookup('k', (n) => (n === 'x-tenant' ? 'one' : undefined));
    assert.ok(e);
    assert.equal(e.body.toString(), 'hello world');
    assert.deepEqual(e.fields, ['content-type', 'text/plain', 'etag', '"e"']);
    assert.deepEqual(e.varyNames, ['x-tenant']);
    assert.equal(store.lookup('k', () => 'two'), undefined, 'another tenant does not match');
  });
  test('a 304 to a stale entry\'s validators takes over: fields updated, fresh again, answered from the entry', () => {
    const store = new ResponseCache(1_000_000, metrics(), null);
    const rc = compileRouteCache('/r', policy, store, NO_PURGES, metrics());
    const stale: CacheEntry = { ...entry('/r', '/p', 5), varyNames: ['x-tenant'], varyValues: '', etag: '"e"', fields: ['etag', '"e"', 'x-old', '1'], freshness: { initialAgeMs: 0, lifetimeMs: 1000, responseTimeMs: Date.now() - 60_000, mustRevalidate: false } };
    let served: CacheEntry | undefined;
    const fill = new CacheFill(rc, 'k', { ...request(), stale, serve: (e) => ((served = e), 200) });
    assert.equal(fill.takesOver(200, raw({})), false, 'a full answer is not taken over');
    assert.equal(fill.takesOver(304, raw({ 'Cache-Control': 'max-age=30', ETag: '"e"', Connection: 'close' })), true);
    assert.equal(fill.answerInstead(), 200);
    assert.ok(served);
    assert.deepEqual(served.fields, ['x-old', '1', 'cache-control', 'max-age=30', 'etag', '"e"']);
    assert.equal(served.freshness.lifetimeMs, 30_000);
    assert.equal(store.size, 1);
  });
  test('stops collecting past maxEntryBytes and stores nothing', () => {
    const store = new ResponseCache(1_000_000, metrics(), null);
    const rc = compileRouteCache('/r', policy, store, NO_PURGES, metrics());
    const fill = new CacheFill(rc, 'k', request());
    fill.onHead(200, raw({}));
    for (let i = 0; i < 10; i++) fill.onData(Buffer.alloc(500));
    fill.onComplete();
    assert.equal(store.size, 0);
  });
  test('an incomplete response is not stored and its waiters are released', () => {
    const store = new ResponseCache(1_000_000, metrics(), null);
    const rc = compileRouteCache('/r', policy, store, NO_PURGES, metrics());
    store.lead('k', 10_000);
    let released = 0;
    store.join('k', () => released++);
    const fill = new CacheFill(rc, 'k', request(true));
    fill.onHead(200, raw({}));
    fill.onData(Buffer.from('half'));
    fill.onEnd();
    assert.equal(store.size, 0);
    assert.equal(released, 1);
  });
});

describe('L2 values are outside input', () => {
  test('an entry survives the round trip', () => {
    const e = { ...entry('/r', '/p', 3), etag: '"x"' };
    assert.deepEqual(decodeEntry(encodeEntry(e)), e);
  });
  const bad: [string, Buffer][] = [
    ['empty', Buffer.alloc(0)],
    ['another format', Buffer.from('hello world, this is not an entry')],
    ['length beyond the value', Buffer.concat([Buffer.from('cgw-cache-1\n'), Buffer.from([0xff, 0xff, 0xff, 0xff])])],
    ['broken JSON', Buffer.concat([Buffer.from('cgw-cache-1\n'), Buffer.from([0, 0, 0, 3]), Buffer.from('{{{')])],
    ['wrong shape', (() => { const j = Buffer.from('{"routeId":1,"__proto__":{}}'); const l = Buffer.alloc(4); l.writeUInt32BE(j.length); return Buffer.concat([Buffer.from('cgw-cache-1\n'), l, j]); })()],
  ];
  for (const [what, value] of bad) test(what, () => assert.equal(decodeEntry(value), undefined));
});

describe('purge markers', () => {
  const prefix = 'gateway/';
  const kv = (name: string, value: string | null, modifyIndex = 1) => ({ key: `${prefix}cache-purge/${name}`, value, modifyIndex });
  test('good markers become generations; bad ones are problems that purge nothing', () => {
    const problems: Problem[] = [];
    const routeTarget = { route: '/api' };
    const pathTarget = { path: '/__proto__' };
    const purges = readCachePurges(
      [
        kv('all', JSON.stringify({ target: { all: true }, generation: 3 })),
        kv(purgeKeyName(routeTarget), JSON.stringify({ target: routeTarget, generation: 2 })),
        kv(purgeKeyName(pathTarget), JSON.stringify({ target: pathTarget, generation: 5 })),
        kv('wrong-name', JSON.stringify({ target: routeTarget, generation: 9 })),
        kv('junk', '{"target":'),
        kv('proto', '{"__proto__":{"generation":1},"target":{"all":true}}'),
        kv('nul', null),
        { key: 'gateway/policies/x', value: '{}', modifyIndex: 1 },
      ],
      prefix,
      undefined,
      problems,
    );
    assert.equal(purges.all, 3);
    assert.equal(purges.routes['/api'], 2);
    assert.equal(Object.hasOwn(purges.paths, '/__proto__'), true);
    assert.equal(purges.paths['/__proto__'], 5);
    assert.equal(problems.length, 4);
    assert.ok(problems.every((p) => p.kind === 'kv' && p.subject.startsWith('gateway/cache-purge/')));
    // A bad new value of a good marker keeps the good one: it purges nothing.
    const later: Problem[] = [];
    const kept = readCachePurges([kv('all', '{"target":{"all":true},"generation":"4"}', 2)], prefix, purges, later);
    assert.equal(kept.all, 3);
    assert.equal(later[0]?.keptLastGood, true);
  });
  const cases: [string, string, boolean][] = [
    ['route', '{"target":{"route":"/a"},"generation":1}', true],
    ['path with a query', '{"target":{"path":"/a?x=1"},"generation":1}', false],
    ['generation 0', '{"target":{"all":true},"generation":0}', false],
    ['two targets', '{"target":{"all":true,"route":"/a"},"generation":1}', false],
    ['oversized', `{"target":{"path":"/${'a'.repeat(9000)}"},"generation":1}`, false],
  ];
  for (const [what, value, ok] of cases) test(what, () => assert.equal(parsePurgeMarker(value).ok, ok));
});
