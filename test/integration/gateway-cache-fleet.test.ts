/**
 * The response cache across a fleet: L2 in a real redis-server shared by two gateways, Redis
 * going down (the gateways keep answering from memory and the upstream), purges written by
 * `cgw cache purge` to Consul KV reaching every gateway (and hiding L2 entries), bad purge
 * markers, and the byte budget holding under many distinct keys.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send, type Reply } from '../helpers/http.ts';
import { startRedis, type RedisServer } from '../helpers/redis.ts';
import { startCacheUpstream, type CacheReply, type CacheUpstream } from '../helpers/cache-upstream.ts';

const PREFIX = 'gateway/';
const BUDGET = 400_000;
let consul: ConsulAgent;
let redis: RedisServer;
let up: CacheUpstream;
let a: GatewayProcess;
let b: GatewayProcess;

const replyOf = (r: Reply): CacheReply => JSON.parse(r.body.toString()) as CacheReply;
// One Host for both gateways, as behind a load balancer: the host is part of the cache key.
const get = (gw: GatewayProcess, path: string): Promise<Reply> => send(gw.url, path, { headers: { host: 'api.example' } });

async function metric(gw: GatewayProcess, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(labels === '' ? `${name} ` : `${name}{`) && line.includes(labels)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function problems(gw: GatewayProcess): Promise<{ kind: string; subject: string; message: string }[]> {
  return ((await (await fetch(`${gw.adminUrl}/v1/status`)).json()) as { problems: { kind: string; subject: string; message: string }[] }).problems;
}

const purge = async (...args: string[]) => {
  const r = await runCli(['cache', 'purge', ...args, '--consul', consul.addr, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { key: string; generation: number };
};

before(async () => {
  [consul, redis, up] = await Promise.all([startConsul(), startRedis(), startCacheUpstream()]);
  await consul.kvPut(`${PREFIX}policies/shared`, JSON.stringify({ appliesTo: { route: '/shared' }, cache: { ttl: '60s', l2: true } }));
  await consul.kvPut(`${PREFIX}policies/local`, JSON.stringify({ appliesTo: { route: '/local' }, cache: { ttl: '60s', maxEntryBytes: 65_536 } }));
  await consul.register({ id: 'svc-1', name: 'svc', port: up.port, tags: ['urlprefix-/shared', 'urlprefix-/local'] });
  const args = ['--wait', '5s', '--redis', redis.url, '--cache-max-bytes', String(BUDGET)];
  [a, b] = await Promise.all([startGateway({ consul: consul.addr, args }), startGateway({ consul: consul.addr, args })]);
});

after(async () => {
  await Promise.all([a?.kill(), b?.kill()]);
  await Promise.all([consul?.destroy(), redis?.stop(), up?.close()]);
});

describe('L2 in Redis', () => {
  test('a response stored by one gateway answers the other one\'s clients', async () => {
    const first = await get(a, '/shared/one');
    assert.equal(first.headers['x-cache'], 'miss');
    await waitFor(async () => (await metric(a, 'cgw_cache_l2_requests_total', 'operation="set",result="ok"')) >= 1, { message: 'stored in Redis' });
    const other = await get(b, '/shared/one');
    assert.equal(other.headers['x-cache'], 'hit');
    assert.equal(replyOf(other).n, 1);
    assert.equal(up.hits('/shared/one'), 1);
  });

  test('a route purged with cgw cache purge misses on every gateway, in memory and in Redis', async () => {
    await get(a, '/shared/p');
    await waitFor(async () => (await get(b, '/shared/p')).headers['x-cache'] === 'hit', { message: 'b reads it from Redis' });
    await get(a, '/local/p');
    assert.equal((await get(a, '/local/p')).headers['x-cache'], 'hit');
    const before = replyOf(await get(b, '/shared/p')).n;
    const { generation } = await purge('--route', '/shared');
    assert.equal(generation, 1);
    // After the purge the first gateway to miss stores the new answer in Redis, so the other may
    // hit on that one: what counts is that neither answers with the response from before.
    for (const gw of [a, b]) await waitFor(async () => replyOf(await get(gw, '/shared/p')).n > before, { message: 'purged' });
    assert.equal((await get(a, '/local/p')).headers['x-cache'], 'hit', 'another route keeps its entries');
    assert.equal((await purge('--route', '/shared')).generation, 2, 'each purge raises the generation');
  });

  test('a path purge and a purge of everything', async () => {
    await get(a, '/local/x?v=1');
    await get(a, '/local/y');
    await purge('--path', '/local/x');
    await waitFor(async () => (await get(a, '/local/x?v=1')).headers['x-cache'] === 'miss', { message: 'path purged' });
    assert.equal((await get(a, '/local/y')).headers['x-cache'], 'hit');
    await purge('--all');
    await waitFor(async () => (await get(a, '/local/y')).headers['x-cache'] === 'miss', { message: 'all purged' });
    assert.ok((await metric(a, 'cgw_cache_evictions_total', 'reason="purge"')) >= 1);
  });

  test('bad purge markers and bad CLI targets change nothing; the gateways keep applying Consul changes', async () => {
    const bad = await runCli(['cache', 'purge', '--route', '/a', '--all', '--consul', consul.addr]);
    assert.equal(bad.code, 2);
    const query = await runCli(['cache', 'purge', '--path', '/a?x=1', '--consul', consul.addr]);
    assert.equal(query.code, 2);
    await get(a, '/local/keep');
    for (const [name, value] of [['junk', '{"target":'], ['proto', '{"__proto__":{"generation":1},"target":{"all":true}}'], ['all', '{"target":{"all":true},"generation":"9"}'], ['big', `{"target":{"path":"/${'a'.repeat(10_000)}"},"generation":1}`]] as const) {
      await consul.kvPut(`${PREFIX}cache-purge/${name}`, value);
      await waitFor(async () => (await problems(a)).some((p) => p.subject === `${PREFIX}cache-purge/${name}`), { message: `problem for ${name}` });
    }
    assert.equal((await get(a, '/local/keep')).headers['x-cache'], 'hit', 'nothing was purged');
    await consul.kvPut(`${PREFIX}policies/local`, JSON.stringify({ appliesTo: { route: '/local' }, cache: { ttl: '30s', maxEntryBytes: 65_536 } }));
    await waitFor(async () => (await get(a, '/local/keep')).headers['x-cache'] === 'miss', { message: 'a policy change still applies' });
  });
});

describe('bounds', () => {
  test('many distinct keys and large bodies keep memory within --cache-max-bytes', async () => {
    for (let i = 0; i < 60; i++) {
      const r = await get(a, `/local/big/${i}?size=30000`);
      assert.equal(r.body.length, 30_000);
    }
    const bytes = await metric(a, 'cgw_cache_bytes');
    assert.ok(bytes > 0 && bytes <= BUDGET, `cgw_cache_bytes ${bytes} within ${BUDGET}`);
    assert.ok((await metric(a, 'cgw_cache_evictions_total', 'reason="size"')) > 0);
    assert.equal((await get(a, '/local/big/0?size=30000')).headers['x-cache'], 'miss', 'the oldest was evicted');
    assert.equal((await get(a, '/local/big/59?size=30000')).headers['x-cache'], 'hit', 'the newest stayed');
    await Promise.all(Array.from({ length: 400 }, (_, i) => get(a, `/local/k/${i}?__proto__=${i}`)));
    assert.ok((await metric(a, 'cgw_cache_bytes')) <= BUDGET);
  });
});

describe('workers', () => {
  test('each worker has its own memory, and a purge reaches every one of them', async () => {
    const w = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--workers', '2'] });
    try {
      const seen = new Set<number>();
      for (let i = 0; i < 12; i++) seen.add(replyOf(await get(w, '/local/workers')).n);
      assert.ok(seen.size >= 1 && seen.size <= 2, `one stored response per worker at most, saw ${[...seen].join(',')}`);
      await purge('--all');
      // Once purged, no worker answers with a response from before the purge.
      await waitFor(async () => {
        const replies = await Promise.all(Array.from({ length: 12 }, () => get(w, '/local/workers')));
        return replies.every((r) => !seen.has(replyOf(r).n));
      }, { message: 'every worker purged' });
    } finally {
      await w.kill();
    }
  });
});

describe('Redis down', () => {
  test('the gateways still serve, from memory and the upstream, and count the L2 failures', async () => {
    await get(a, '/shared/down');
    await redis.stop();
    const cold = await get(b, '/shared/down-cold');
    assert.equal(cold.status, 200);
    assert.equal(cold.headers['x-cache'], 'miss');
    const warm = await get(b, '/shared/down-cold');
    assert.equal(warm.headers['x-cache'], 'hit', 'memory still serves');
    assert.equal((await get(a, '/shared/down')).status, 200);
    assert.ok((await metric(b, 'cgw_cache_l2_requests_total', 'result="error"')) + (await metric(b, 'cgw_cache_l2_requests_total', 'result="timeout"')) >= 1);
    await redis.start();
  });
});
