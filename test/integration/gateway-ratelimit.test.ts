/**
 * Distributed rate limiting on real gateways: two gateway processes on one Redis enforce one
 * global limit with the documented headers and JSON error; consumer plans give each consumer its
 * own quota and bucket; Redis going away never stalls a request (fail open counts per gateway,
 * fail closed answers 503), shows in /v1/status and /metrics, and Redis' return makes the limits
 * global again without anyone's help.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { generateApiKey } from '../../src/policy/consumers.ts';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startRedis, type RedisServer } from '../helpers/redis.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let redis: RedisServer;
let gwA: GatewayProcess;
let gwB: GatewayProcess;
let policyDir: string;
const ups = new Map<string, Upstream>();
// Below the gateway's 5 s keep-alive, so a pause never meets a socket the gateway closed.
const client = new Agent({ keepAliveTimeout: 2000, connections: 8 });

const gold = generateApiKey('gold-co');
const basic = generateApiKey('basic-co');

const SERVICES = ['rl-ip', 'rl-plan', 'rl-open', 'rl-closed'] as const;

const POLICIES: Record<string, unknown> = {
  'route-rl-ip': {
    appliesTo: { route: '/rl-ip' },
    rateLimits: [{ name: 'per-ip', by: 'ip', limit: 10, window: '1m' }],
  },
  'route-rl-plan': {
    appliesTo: { route: '/rl-plan' },
    auth: { methods: ['apiKey'] },
    rateLimits: [{ name: 'plan', by: 'consumer', limit: 2, window: '1m', plans: { gold: { limit: 5, window: '1m' } } }],
  },
  // Counted per x-client header, so each phase of the outage test gets fresh buckets.
  'route-rl-open': {
    appliesTo: { route: '/rl-open' },
    rateLimits: [{ name: 'open', by: 'header:x-client', limit: 3, window: '1m', failureMode: 'open' }],
  },
  'route-rl-closed': {
    appliesTo: { route: '/rl-closed' },
    rateLimits: [{ name: 'closed', by: 'header:x-client', limit: 3, window: '1m', failureMode: 'closed' }],
  },
};

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  ms: number;
  code: string | undefined;
}

async function call(gw: GatewayProcess, path: string, headers: Record<string, string> = {}): Promise<Answer> {
  const started = performance.now();
  const r = await request(`${gw.url}${path}`, { dispatcher: client, headers, headersTimeout: 15_000, bodyTimeout: 15_000 });
  const text = await r.body.text();
  const ms = performance.now() - started;
  const code = r.statusCode === 200 ? undefined : (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  return { status: r.statusCode, headers: r.headers, text, ms, code };
}

const header = (a: Answer, name: string): string | undefined => {
  const v = a.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
};

async function metricValue(gw: GatewayProcess, name: string, labels: string): Promise<number> {
  const text = await (await request(`${gw.adminUrl}/metrics`)).body.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function backend(gw: GatewayProcess): Promise<string> {
  const s = (await (await request(`${gw.adminUrl}/v1/status`)).body.json()) as { rateLimiter: { backend: string } };
  return s.rateLimiter.backend;
}

async function bothOn(state: string, timeoutMs: number): Promise<void> {
  await waitFor(async () => (await backend(gwA)) === state && (await backend(gwB)) === state, {
    timeoutMs,
    intervalMs: 50,
    message: `both gateways' rate limiter backend is ${state}`,
  });
}

/** `n` requests alternating between the gateways (A first). */
async function alternate(path: string, n: number, headers: Record<string, string> = {}): Promise<Answer[]> {
  const out: Answer[] = [];
  for (let i = 0; i < n; i++) out.push(await call(i % 2 === 0 ? gwA : gwB, path, headers));
  return out;
}

before(async () => {
  policyDir = await mkdtemp(join(tmpdir(), 'cgw-ratelimit-'));
  await Promise.all(Object.entries(POLICIES).map(([name, doc]) => writeFile(join(policyDir, `${name}.json`), JSON.stringify(doc))));
  [redis, consul] = await Promise.all([startRedis(), startConsul()]);
  await consul.kvPut('gateway/consumers/gold-co', JSON.stringify({ keyHash: gold.keyHash, plan: 'gold' }));
  await consul.kvPut('gateway/consumers/basic-co', JSON.stringify({ keyHash: basic.keyHash }));
  await Promise.all(
    SERVICES.map(async (name) => {
      const u = await startUpstream(name);
      ups.set(name, u);
      await consul.register({ id: `${name}-1`, name, port: u.port, tags: [`urlprefix-/${name}`] });
    }),
  );
  const args = ['--policies', policyDir, '--redis', redis.url];
  [gwA, gwB] = await Promise.all([startGateway({ consul: consul.addr, args }), startGateway({ consul: consul.addr, args })]);
  for (const gw of [gwA, gwB]) {
    await waitFor(
      async () => {
        const routes = (await (await request(`${gw.adminUrl}/v1/routes`)).body.json()) as Array<{ route: string; endpointsHealthy: number }>;
        const consumers = (await (await request(`${gw.adminUrl}/v1/consumers`)).body.json()) as Array<{ id: string }>;
        return SERVICES.every((s) => routes.find((r) => r.route === `/${s}`)?.endpointsHealthy === 1) && consumers.length === 2;
      },
      { timeoutMs: 20_000, message: 'routes and consumers in force' },
    );
  }
  await bothOn('redis', 15_000);
});

after(async () => {
  await Promise.all([gwA?.kill('SIGKILL'), gwB?.kill('SIGKILL')]);
  await client.close();
  await Promise.all([...ups.values()].map((u) => u.close()));
  await consul?.destroy();
  await redis?.stop();
  if (policyDir) await rm(policyDir, { recursive: true, force: true });
});

describe('one global limit across gateways', () => {
  test('by ip, 10/min: 30 requests alternating between two gateways → exactly 10 succeed, with RateLimit-* headers', async () => {
    const upstream = ups.get('rl-ip');
    assert.ok(upstream, 'rl-ip upstream');
    const hits = upstream.hits;
    const answers = await alternate('/rl-ip', 30);

    const ok = answers.filter((a) => a.status === 200);
    assert.equal(ok.length, 10, `statuses: ${answers.map((a) => a.status).join(' ')}`);
    assert.deepEqual(answers.slice(0, 10).map((a) => a.status), Array(10).fill(200), 'the burst is the first 10, whichever gateway took them');
    assert.deepEqual(ok.map((a) => header(a, 'RateLimit-Remaining')), ['9', '8', '7', '6', '5', '4', '3', '2', '1', '0'], 'one counter, counting down across both gateways');
    for (const a of ok) {
      assert.equal(header(a, 'RateLimit-Limit'), '10');
      const reset = Number(header(a, 'RateLimit-Reset'));
      assert.ok(reset >= 1 && reset <= 60, `RateLimit-Reset ${reset}`);
      assert.equal(header(a, 'RateLimit-Policy'), '10;w=60;burst=10');
    }

    const limited = answers.slice(10);
    for (const a of limited) {
      assert.equal(a.status, 429);
      assert.equal(a.code, 'rate_limited');
      assert.equal(header(a, 'RateLimit-Limit'), '10');
      assert.equal(header(a, 'RateLimit-Remaining'), '0');
      const reset = Number(header(a, 'RateLimit-Reset'));
      assert.ok(reset >= 1 && reset <= 60, `RateLimit-Reset ${reset}`);
      const retryAfter = Number(header(a, 'Retry-After'));
      // One request per 6 s comes back: never more than the emission interval.
      assert.ok(retryAfter >= 1 && retryAfter <= 6, `Retry-After ${retryAfter}`);
    }
    assert.equal(upstream.hits - hits, 10, 'the upstream sees only the allowed requests');

    const limitedA = await metricValue(gwA, 'cgw_rate_limit_decisions_total', 'route="/rl-ip",result="limited"');
    const limitedB = await metricValue(gwB, 'cgw_rate_limit_decisions_total', 'route="/rl-ip",result="limited"');
    assert.deepEqual([limitedA, limitedB], [10, 10]);
  });

  test('by consumer with plans: gold gets 5, a consumer without a plan gets 2, in separate buckets', async () => {
    const goldAnswers: Answer[] = [];
    const basicAnswers: Answer[] = [];
    for (let i = 0; i < 8; i++) {
      goldAnswers.push(await call(i % 2 === 0 ? gwA : gwB, '/rl-plan', { 'x-api-key': gold.key }));
      basicAnswers.push(await call(i % 2 === 0 ? gwB : gwA, '/rl-plan', { 'x-api-key': basic.key }));
    }
    assert.deepEqual(goldAnswers.map((a) => a.status), [200, 200, 200, 200, 200, 429, 429, 429]);
    assert.deepEqual(basicAnswers.map((a) => a.status), [200, 200, 429, 429, 429, 429, 429, 429]);
    assert.deepEqual(goldAnswers.slice(0, 5).map((a) => header(a, 'RateLimit-Remaining')), ['4', '3', '2', '1', '0']);
    assert.deepEqual(basicAnswers.slice(0, 2).map((a) => header(a, 'RateLimit-Remaining')), ['1', '0']);
    assert.equal(header(goldAnswers[0] as Answer, 'RateLimit-Limit'), '5');
    assert.equal(header(basicAnswers[0] as Answer, 'RateLimit-Limit'), '2');
    assert.equal(header(goldAnswers[7] as Answer, 'RateLimit-Limit'), '5');
    assert.ok(goldAnswers.slice(5).every((a) => a.code === 'rate_limited'), 'gold refusals are rate_limited');

    const anonymous = await call(gwA, '/rl-plan');
    assert.equal(anonymous.status, 401, 'no key: authentication comes before the rate limit');
    assert.equal(ups.get('rl-plan')?.hits, 7);
  });
});

describe('Redis outage', () => {
  test('Redis stopped during traffic → answers keep coming (< 1 s each), backend local, fail open counts per gateway, fail closed answers 503', async () => {
    // Traffic on both gateways while Redis goes away: unique clients, so every answer should be 200.
    const during: Answer[] = [];
    let stop = false;
    const traffic = (async () => {
      for (let i = 0; !stop; i++) during.push(await call(i % 2 === 0 ? gwA : gwB, '/rl-open', { 'x-client': `load-${i}` }));
    })();
    try {
      await waitFor(() => during.length >= 10, { timeoutMs: 15_000, message: 'traffic flowing before the outage' });
      await redis.stop();
      const stoppedAt = during.length;
      await bothOn('local', 15_000);
      await waitFor(() => during.length >= stoppedAt + 20, { timeoutMs: 20_000, message: 'traffic flowing during the outage' });
    } finally {
      stop = true;
      await traffic;
    }
    const slow = during.filter((a) => a.ms >= 1000);
    assert.deepEqual(slow.map((a) => Math.round(a.ms)), [], 'no request waited on the missing Redis');
    assert.deepEqual([...new Set(during.map((a) => a.status))], [200], 'fail open: every fresh client is allowed');

    for (const gw of [gwA, gwB]) {
      assert.equal(await metricValue(gw, 'cgw_rate_limit_backend', 'state="local"'), 1);
      assert.equal(await metricValue(gw, 'cgw_rate_limit_backend', 'state="redis"'), 0);
    }

    const closed = await call(gwA, '/rl-closed', { 'x-client': 'c1' });
    assert.equal(closed.status, 503);
    assert.equal(closed.code, 'rate_limiter_unavailable');
    assert.ok(closed.ms < 1000, `closed answered after ${Math.round(closed.ms)} ms`);
    assert.equal(ups.get('rl-closed')?.hits, 0, 'fail closed: nothing reached the upstream');

    // Fail open still limits, per gateway: each process has its own 3 for the same client.
    const onA: number[] = [];
    const onB: number[] = [];
    for (let i = 0; i < 5; i++) {
      onA.push((await call(gwA, '/rl-open', { 'x-client': 'solo' })).status);
      onB.push((await call(gwB, '/rl-open', { 'x-client': 'solo' })).status);
    }
    assert.deepEqual(onA, [200, 200, 200, 429, 429]);
    assert.deepEqual(onB, [200, 200, 200, 429, 429]);
  });

  test('Redis started again → the backend returns to redis by itself and limits are global again', async () => {
    await redis.start();
    await bothOn('redis', 30_000);
    for (const gw of [gwA, gwB]) assert.equal(await metricValue(gw, 'cgw_rate_limit_backend', 'state="redis"'), 1);

    const shared = await alternate('/rl-open', 8, { 'x-client': 'after-restart' });
    assert.deepEqual(shared.map((a) => a.status), [200, 200, 200, 429, 429, 429, 429, 429], 'one bucket for both gateways again');
    assert.deepEqual(shared.slice(0, 3).map((a) => header(a, 'RateLimit-Remaining')), ['2', '1', '0']);

    const closed = await alternate('/rl-closed', 4, { 'x-client': 'c1' });
    assert.deepEqual(closed.map((a) => a.status), [200, 200, 200, 429], 'fail closed route served (and limited) again');
  });
});
