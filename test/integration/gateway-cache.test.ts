/**
 * The response cache through the real gateway, Consul and an upstream steered by the query
 * string: hits with Age and X-Cache, HEAD from GET entries, what is never stored (no-store,
 * private, Set-Cookie, Authorization), Vary, 304 from the cache, consumers kept apart, request
 * coalescing, bodies beyond maxEntryBytes, policy changes and bad policy sections.
 */
import assert from 'node:assert/strict';
import { connect as http2Connect } from 'node:http2';
import { after, before, describe, test } from 'node:test';
import { generateApiKey } from '../../src/policy/consumers.ts';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send, type Reply } from '../helpers/http.ts';
import { startJwks, type JwksServer } from '../helpers/jwks.ts';
import { startCacheUpstream, type CacheReply, type CacheUpstream } from '../helpers/cache-upstream.ts';

const PREFIX = 'gateway/';
let consul: ConsulAgent;
let gw: GatewayProcess;
let up: CacheUpstream;
let idp: JwksServer;
const alice = generateApiKey('alice');
const bob = generateApiKey('bob');

const replyOf = (r: Reply): CacheReply => JSON.parse(r.body.toString()) as CacheReply;
const get = (path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Reply> => send(gw.url, path, { headers, method });

async function metric(name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(labels === '' ? `${name} ` : `${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function problems(): Promise<{ kind: string; subject: string; message: string }[]> {
  return ((await (await fetch(`${gw.adminUrl}/v1/status`)).json()) as { problems: { kind: string; subject: string; message: string }[] }).problems;
}

before(async () => {
  [consul, up, idp] = await Promise.all([startConsul(), startCacheUpstream(), startJwks({ audience: 'cache-tests' })]);
  await consul.kvPut(
    `${PREFIX}policies/jwt`,
    JSON.stringify({
      appliesTo: { route: '/jwtc' },
      auth: { methods: ['jwt'], forwardCredentials: true, jwt: { jwksUrl: idp.url, algorithms: ['RS256'], issuer: idp.issuer, audience: 'cache-tests' } },
      cache: { ttl: '60s', cacheAuthorized: true },
    }),
  );
  await consul.kvPut(`${PREFIX}policies/cached`, JSON.stringify({ appliesTo: { service: 'cached' }, cache: { ttl: '60s', maxEntryBytes: 65_536, vary: ['x-tenant'] } }));
  await consul.kvPut(`${PREFIX}policies/keyed`, JSON.stringify({ appliesTo: { route: '/keyed' }, auth: { methods: ['apiKey'] }, cache: { ttl: '60s', cacheAuthorized: true } }));
  await consul.kvPut(`${PREFIX}policies/impatient`, JSON.stringify({ appliesTo: { route: '/impatient' }, cache: { ttl: '60s', coalesceTimeout: '200ms' } }));
  await consul.kvPut(`${PREFIX}policies/guarded`, JSON.stringify({ appliesTo: { route: '/guarded' }, auth: { methods: ['apiKey'] } }));
  await consul.kvPut(`${PREFIX}consumers/alice`, JSON.stringify({ keyHash: alice.keyHash }));
  await consul.kvPut(`${PREFIX}consumers/bob`, JSON.stringify({ keyHash: bob.keyHash }));
  await consul.register({ id: 'cached-1', name: 'cached', port: up.port, tags: ['urlprefix-/c', 'urlprefix-/keyed', 'urlprefix-/guarded', 'urlprefix-/changing', 'urlprefix-/impatient', 'urlprefix-/jwtc'] });
  await consul.register({ id: 'plain-1', name: 'plain', port: up.port, tags: ['urlprefix-/plain'] });
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--h2c'] });
  await waitFor(async () => (await get('/plain/x')).status === 200 && (await get('/keyed/x', { 'x-api-key': alice.key })).status === 200, { message: 'routes and consumers in force' });
});

after(async () => {
  await gw?.kill();
  await Promise.all([consul?.destroy(), up?.close(), idp?.stop()]);
});

describe('hits and misses', () => {
  test('a second GET is answered from the cache with Age and X-Cache: hit; the upstream sees one', async () => {
    const first = await get('/c/hit?etag="v1"');
    assert.equal(first.status, 200);
    assert.equal(first.headers['x-cache'], 'miss');
    const second = await get('/c/hit?etag="v1"');
    assert.equal(second.status, 200);
    assert.equal(second.headers['x-cache'], 'hit');
    assert.match(String(second.headers.age), /^\d+$/);
    assert.equal(second.headers.etag, '"v1"');
    assert.equal(replyOf(second).n, 1, 'the stored response, not a new one');
    assert.notEqual(second.headers['x-request-id'], first.headers['x-request-id'], 'each answer has its own request id');
    assert.equal(up.hits('/c/hit?etag=%22v1%22'), 1);
    const head = await get('/c/hit?etag="v1"', {}, 'HEAD');
    assert.equal(head.headers['x-cache'], 'hit');
    assert.equal(head.body.length, 0);
    assert.equal(head.headers['content-length'], String(second.body.length));
    assert.equal(up.hits('/c/hit?etag=%22v1%22'), 1, 'HEAD was answered from the GET entry');
    assert.ok((await metric('cgw_cache_requests_total', 'route="/c",result="hit"')) >= 2);
  });

  test('HTTP/2 clients get hits too, without connection-specific fields', async () => {
    const session = http2Connect(gw.url);
    try {
      const h2get = () =>
        new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
          const stream = session.request({ ':path': '/c/h2', ':method': 'GET' });
          let headers: Record<string, unknown> = {};
          let body = '';
          stream.on('response', (h) => (headers = h));
          stream.setEncoding('utf8').on('data', (d: string) => (body += d));
          stream.on('end', () => resolve({ status: Number(headers[':status']), headers, body }));
          stream.on('error', reject);
        });
      const first = await h2get();
      const second = await h2get();
      assert.equal(first.headers['x-cache'], 'miss');
      assert.equal(second.status, 200);
      assert.equal(second.headers['x-cache'], 'hit');
      assert.equal(second.headers.connection, undefined);
      assert.equal(second.body, first.body);
    } finally {
      session.close();
    }
  });

  test('a route without a cache policy has no X-Cache header and reaches the upstream every time', async () => {
    const a = await get('/plain/p');
    const b = await get('/plain/p');
    assert.equal(a.headers['x-cache'], undefined);
    assert.equal(b.headers['x-cache'], undefined);
    assert.equal(replyOf(b).n, 2);
  });

  test('POST, no-store requests and Range requests bypass the cache, each saying so', async () => {
    await get('/c/by');
    const post = await send(gw.url, '/c/by', { method: 'POST', body: Buffer.from('{}'), headers: { 'content-type': 'application/json' } });
    assert.equal(post.headers['x-cache'], 'bypass');
    const noStore = await get('/c/by', { 'cache-control': 'no-store' });
    assert.equal(noStore.headers['x-cache'], 'bypass');
    assert.equal(replyOf(noStore).n, 3);
    const range = await get('/c/by', { range: 'bytes=0-3' });
    assert.equal(range.headers['x-cache'], 'bypass');
  });

  test('no-cache asks the upstream again and stores the fresh answer; max-age=0 does too', async () => {
    await get('/c/nc');
    const refreshed = await get('/c/nc', { 'cache-control': 'no-cache' });
    assert.equal(refreshed.headers['x-cache'], 'miss');
    assert.equal(replyOf(refreshed).n, 2);
    const after = await get('/c/nc');
    assert.equal(after.headers['x-cache'], 'hit');
    assert.equal(replyOf(after).n, 2, 'the refreshed answer was stored');
  });

  test('only-if-cached without an entry is a 504 not_cached; with one it is a hit', async () => {
    const cold = await get('/c/oic', { 'cache-control': 'only-if-cached' });
    assert.equal(cold.status, 504);
    assert.equal((JSON.parse(cold.body.toString()) as { error: { code: string } }).error.code, 'not_cached');
    assert.equal(cold.headers['x-cache'], 'miss');
    assert.equal(up.hits('/c/oic'), 0);
    await get('/c/oic');
    assert.equal((await get('/c/oic', { 'cache-control': 'only-if-cached' })).headers['x-cache'], 'hit');
  });
});

describe('what is never stored', () => {
  const cases: [string, string][] = [
    ['no-store', '/c/ns?cc=no-store'],
    ['private', '/c/pv?cc=private,max-age=60'],
    ['no-cache', '/c/ncr?cc=no-cache'],
    ['max-age=0', '/c/ma0?cc=max-age=0'],
    ['Set-Cookie', '/c/ck?cookie=alice'],
    ['Vary: *', '/c/vs?vary=*'],
    ['302', '/c/st?status=302'],
    ['500', '/c/st5?status=500'],
  ];
  for (const [what, path] of cases) {
    test(`a response with ${what} goes upstream every time`, async () => {
      await get(path);
      const second = await get(path);
      assert.equal(second.headers['x-cache'], 'miss', what);
      assert.equal(up.hits(new URL(path, 'http://x').pathname + new URL(path, 'http://x').search), 2, what);
    });
  }

  test('a Set-Cookie of one client never reaches another', async () => {
    const a = await get('/c/cookie2?cookie=first');
    const b = await get('/c/cookie2?cookie=first');
    assert.notEqual(a.headers['set-cookie']?.[0], b.headers['set-cookie']?.[0]);
  });

  test('a request with Authorization on a public cached route is not served from, nor stored in, the cache', async () => {
    await get('/c/authz');
    const withAuth = await get('/c/authz', { authorization: 'Bearer secret-of-alice' });
    assert.equal(withAuth.headers['x-cache'], 'bypass');
    assert.equal(replyOf(withAuth).auth, 'Bearer secret-of-alice');
    const anonymous = await get('/c/authz');
    assert.equal(anonymous.headers['x-cache'], 'hit');
    assert.equal(replyOf(anonymous).auth, null, 'the anonymous client got the anonymous answer');
  });
});

describe('Vary and conditional requests', () => {
  test('the response Vary and the policy vary select separate entries', async () => {
    const en = await get('/c/v?vary=accept-language', { 'accept-language': 'en' });
    const fr = await get('/c/v?vary=accept-language', { 'accept-language': 'fr' });
    assert.equal(fr.headers['x-cache'], 'miss');
    assert.equal(replyOf(fr).lang, 'fr');
    const en2 = await get('/c/v?vary=accept-language', { 'accept-language': 'en' });
    assert.equal(en2.headers['x-cache'], 'hit');
    assert.equal(replyOf(en2).lang, 'en');
    assert.equal(replyOf(en).n, replyOf(en2).n);
    // The policy varies on x-tenant, which the upstream never mentions.
    await get('/c/t', { 'x-tenant': 'one' });
    const two = await get('/c/t', { 'x-tenant': 'two' });
    assert.equal(two.headers['x-cache'], 'miss');
    assert.equal((await get('/c/t', { 'x-tenant': 'one' })).headers['x-cache'], 'hit');
  });

  test('weird Vary values never break the route', async () => {
    for (const v of ['__proto__', 'constructor, __proto__', ' , ,', 'x'.repeat(100), Array.from({ length: 40 }, (_, i) => `h${i}`).join(',')]) {
      const r = await get(`/c/weird?vary=${encodeURIComponent(v)}`, JSON.parse('{"__proto__":"x","constructor":"y"}') as Record<string, string>);
      assert.equal(r.status, 200, v);
    }
    // Node's request parser drops a field named __proto__ (it never becomes a header), so a Vary on
    // it selects by its absence: one entry, no inherited value mistaken for one, no failure.
    const as = (value: string) => JSON.parse(`{"__proto__":"${value}","constructor":"c"}`) as Record<string, string>;
    const a = await get('/c/protovary?vary=__proto__,constructor', as('a'));
    const b = await get('/c/protovary?vary=__proto__,constructor', as('b'));
    assert.equal(a.status, 200);
    assert.equal(b.headers['x-cache'], 'hit');
    assert.equal(replyOf(b).n, replyOf(a).n);
    const otherConstructor = await get('/c/protovary?vary=__proto__,constructor', { constructor: 'd' });
    assert.equal(otherConstructor.headers['x-cache'], 'miss', 'a field named constructor selects like any other');
    assert.equal((await get('/c/__proto__')).status, 200);
    assert.equal((await get('/c/__proto__')).headers['x-cache'], 'hit');
  });

  test('If-None-Match matching a fresh entry is answered 304 by the cache', async () => {
    await get('/c/etag?etag="abc"');
    const r = await get('/c/etag?etag="abc"', { 'if-none-match': 'W/"abc"' });
    assert.equal(r.status, 304);
    assert.equal(r.headers['x-cache'], 'hit');
    assert.equal(r.headers.etag, '"abc"');
    assert.equal(r.body.length, 0);
    const other = await get('/c/etag?etag="abc"', { 'if-none-match': '"zzz"' });
    assert.equal(other.status, 200);
    assert.equal(up.hits('/c/etag?etag=%22abc%22'), 1);
  });
});

describe('revalidation', () => {
  test('a stale entry is revalidated with its ETag: the upstream\'s 304 makes it fresh again and it answers', async () => {
    const path = '/c/reval?cc=max-age=1&etag="r1"';
    const upstreamKey = '/c/reval?cc=max-age=1&etag=%22r1%22';
    const first = await get(path);
    assert.equal(replyOf(first).n, 1);
    await waitFor(async () => {
      const r = await get(path);
      assert.equal(r.status, 200);
      assert.equal(replyOf(r).n, 1, 'always the stored body');
      assert.equal(r.headers['x-cache'], 'hit');
      return up.hits(upstreamKey) >= 2;
    }, { message: 'the entry went stale and was revalidated' });
    assert.ok((await metric('cgw_cache_requests_total', 'route="/c",result="revalidated"')) >= 1);
  });
});

describe('consumers', () => {
  test('consumer A never gets consumer B\'s response on a route that stores them per consumer', async () => {
    const a1 = await get('/keyed/me', { 'x-api-key': alice.key });
    const b1 = await get('/keyed/me', { 'x-api-key': bob.key });
    assert.equal(a1.headers['x-cache'], 'miss');
    assert.equal(b1.headers['x-cache'], 'miss', 'bob is not served alice\'s entry');
    const a2 = await get('/keyed/me', { 'x-api-key': alice.key });
    const b2 = await get('/keyed/me', { 'x-api-key': bob.key });
    assert.equal(a2.headers['x-cache'], 'hit');
    assert.equal(b2.headers['x-cache'], 'hit');
    assert.equal(replyOf(a2).n, replyOf(a1).n);
    assert.equal(replyOf(b2).n, replyOf(b1).n);
    assert.notEqual(replyOf(a2).n, replyOf(b2).n);
    const refused = await get('/keyed/me');
    assert.equal(refused.status, 401);
    assert.equal(refused.headers['x-cache'], 'bypass');
  });

  test('JWT subjects get their own entries and never each other\'s', async () => {
    const [aliceToken, bobToken] = await Promise.all([idp.sign({ sub: 'alice' }), idp.sign({ sub: 'bob' })]);
    const asAlice = { authorization: `Bearer ${aliceToken}` };
    const asBob = { authorization: `Bearer ${bobToken}` };
    await waitFor(async () => (await get('/jwtc/me', asAlice)).status === 200, { message: 'jwt route in force' });
    const bob1 = await get('/jwtc/me', asBob);
    assert.equal(bob1.headers['x-cache'], 'miss', 'bob is not served alice\'s entry');
    for (let i = 0; i < 3; i++) {
      const a = await get('/jwtc/me', asAlice);
      const b = await get('/jwtc/me', asBob);
      assert.equal(a.headers['x-cache'], 'hit');
      assert.equal(b.headers['x-cache'], 'hit');
      assert.equal(replyOf(a).auth, `Bearer ${aliceToken}`);
      assert.equal(replyOf(b).auth, `Bearer ${bobToken}`);
    }
    assert.equal(up.hits('/jwtc/me'), 2);
  });

  test('a route with auth and no cacheAuthorized stores nothing', async () => {
    await consul.kvPut(`${PREFIX}policies/guarded`, JSON.stringify({ appliesTo: { route: '/guarded' }, auth: { methods: ['apiKey'] }, cache: { ttl: '60s' } }));
    await waitFor(async () => (await get('/guarded/g', { 'x-api-key': alice.key })).headers['x-cache'] !== undefined, { message: 'cache policy on /guarded' });
    const a = await get('/guarded/g', { 'x-api-key': alice.key });
    const b = await get('/guarded/g', { 'x-api-key': bob.key });
    assert.equal(a.headers['x-cache'], 'bypass');
    assert.equal(b.headers['x-cache'], 'bypass');
    assert.equal(replyOf(b).apiKey, null, 'the credential is not forwarded');
    assert.notEqual(replyOf(a).n, replyOf(b).n);
  });
});

describe('coalescing and sizes', () => {
  test('concurrent cold requests for one key reach the upstream once', async () => {
    const path = '/c/slow?delay=400';
    const replies = await Promise.all(Array.from({ length: 12 }, () => get(path)));
    for (const r of replies) assert.equal(r.status, 200);
    assert.equal(up.hits('/c/slow?delay=400'), 1);
    assert.equal(new Set(replies.map((r) => replyOf(r).n)).size, 1);
    assert.equal(replies.filter((r) => r.headers['x-cache'] === 'miss').length, 1);
    assert.ok((await metric('cgw_cache_requests_total', 'route="/c",result="coalesced"')) >= 11);
  });

  test('concurrent misses of an uncacheable response each go upstream after the first', async () => {
    const replies = await Promise.all(Array.from({ length: 5 }, () => get('/c/slow-ns?delay=200&cc=no-store')));
    for (const r of replies) assert.equal(r.status, 200);
    assert.equal(up.hits('/c/slow-ns?delay=200&cc=no-store'), 5);
  });

  test('requests waiting on a slow miss go upstream themselves once coalesceTimeout has passed', async () => {
    const replies = await Promise.all(Array.from({ length: 3 }, () => get('/impatient/x?delay=1500')));
    for (const r of replies) assert.equal(r.status, 200);
    assert.equal(up.hits('/impatient/x?delay=1500'), 3);
    assert.equal((await get('/impatient/x?delay=1500')).headers['x-cache'], 'hit', 'their answers were stored');
  });

  test('a body larger than maxEntryBytes reaches the client whole and is not stored', async () => {
    const r = await get('/c/big?size=200000');
    assert.equal(r.body.length, 200_000);
    const again = await get('/c/big?size=200000');
    assert.equal(again.body.length, 200_000);
    assert.equal(again.headers['x-cache'], 'miss');
    assert.equal(up.hits('/c/big?size=200000'), 2);
  });
});

describe('policy changes', () => {
  test('a changed cache policy drops the route\'s entries; a bad section is a problem and the last good one stays', async () => {
    const key = `${PREFIX}policies/changing`;
    await get('/c/keep');
    await consul.kvPut(key, JSON.stringify({ appliesTo: { route: '/changing' }, cache: { ttl: '60s' } }));
    await waitFor(async () => (await get('/changing/x')).headers['x-cache'] !== undefined, { message: 'cache on /changing' });
    await get('/changing/a');
    assert.equal((await get('/changing/a')).headers['x-cache'], 'hit');
    const bads = ['{"ttl":"soon"}', '{"ttl":"60s","maxEntryBytes":-1}', '{"ttl":"60s","vary":["authorization"]}', '{"ttl":"60s","__proto__":{"l2":true}}', '{"ttl":"60s","constructor":1}', '{"ttl":"60s","vary":["a b"]}', '[]'];
    for (const bad of bads) {
      await consul.kvPut(key, `{"appliesTo":{"route":"/changing"},"cache":${bad}}`);
      await waitFor(async () => (await problems()).some((p) => p.subject === 'policies/changing' && p.message.includes('cache')), { message: `problem for ${bad}` });
      assert.equal((await get('/changing/a')).headers['x-cache'], 'hit', 'the last good policy and its entries stay');
    }
    await consul.kvPut(key, JSON.stringify({ appliesTo: { route: '/changing' }, cache: { ttl: '30s' } }));
    await waitFor(async () => !(await problems()).some((p) => p.subject === 'policies/changing'), { message: 'problem gone' });
    assert.equal((await get('/changing/a')).headers['x-cache'], 'miss', 'a changed policy starts empty');
    assert.equal((await get('/c/keep')).headers['x-cache'], 'hit', 'other routes keep their entries');
    // Without its own section the route falls back to the service's cache policy: another policy, so no old entry.
    await get('/changing/a');
    await consul.kvDelete(key);
    await waitFor(async () => !(await (await fetch(`${gw.adminUrl}/v1/policies`)).text()).includes('policies/changing'), { message: 'route policy removed' });
    const fallback = await get('/changing/a');
    assert.equal(fallback.headers['x-cache'], 'miss');
    assert.equal((await get('/changing/a')).headers['x-cache'], 'hit');
  });
});
