import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { createLogger } from '../../src/core/logger.ts';
import type { RateLimitPolicy } from '../../src/policy/schema.ts';
import {
  compileRateLimits,
  gcra,
  gcraParams,
  LocalRateStore,
  RateLimiterBackend,
  type BackendState,
  type RateDecision,
  type RateLimitOutcome,
  type RateLimitSubject,
  type RateQuotaMs,
} from '../../src/filters/rate-limit.ts';
import { freePort } from '../helpers/ports.ts';

const logger = createLogger('silent');

/** A local store on a clock the test moves by hand (ms). */
function clockedStore(opts: { maxEntries?: number } = {}) {
  const clock = { now: 1_000_000 };
  const store = new LocalRateStore({ ...opts, now: () => clock.now });
  return { clock, store };
}

const pick = (d: RateDecision) => [d.allowed, d.remaining, d.resetMs, d.retryAfterMs] as const;

describe('GCRA (local store)', () => {
  test('a fresh key takes exactly B requests at once, then one per T', () => {
    const { clock, store } = clockedStore();
    const q: RateQuotaMs = { limit: 10, windowMs: 60_000, burst: 10 };
    const first = Array.from({ length: 12 }, () => store.decide('k', q).allowed);
    assert.deepEqual(first, [...Array<boolean>(10).fill(true), false, false]);
    clock.now += 5_999;
    assert.equal(store.decide('k', q).allowed, false, 'T = 6 s has not passed yet');
    clock.now += 1;
    assert.equal(store.decide('k', q).allowed, true);
    assert.equal(store.decide('k', q).allowed, false);
    clock.now += 6_000 * 3;
    assert.deepEqual([1, 2, 3, 4].map(() => store.decide('k', q).allowed), [true, true, true, false]);
  });

  const shapes: { name: string; quota: RateQuotaMs; atOnce: number; intervalMs: number }[] = [
    { name: 'burst below limit', quota: { limit: 10, windowMs: 10_000, burst: 2 }, atOnce: 2, intervalMs: 1000 },
    { name: 'burst above limit', quota: { limit: 2, windowMs: 10_000, burst: 5 }, atOnce: 5, intervalMs: 5000 },
    { name: 'T not a whole number of ms (7 per minute)', quota: { limit: 7, windowMs: 60_000, burst: 7 }, atOnce: 7, intervalMs: 8572 },
    { name: 'T not a whole number of µs (3 per second)', quota: { limit: 3, windowMs: 1000, burst: 3 }, atOnce: 3, intervalMs: 334 },
    { name: 'burst 1: strictly one per T', quota: { limit: 4, windowMs: 1000, burst: 1 }, atOnce: 1, intervalMs: 250 },
  ];
  for (const s of shapes) {
    test(s.name, () => {
      const { clock, store } = clockedStore();
      let allowed = 0;
      while (store.decide('k', s.quota).allowed) allowed++;
      assert.equal(allowed, s.atOnce);
      clock.now += s.intervalMs;
      assert.equal(store.decide('k', s.quota).allowed, true, 'one more after T');
      assert.equal(store.decide('k', s.quota).allowed, false);
    });
  }

  test('remaining, reset and retry-after along a burst', () => {
    const { clock, store } = clockedStore();
    const q: RateQuotaMs = { limit: 3, windowMs: 3000, burst: 3 }; // T = 1 s
    assert.deepEqual(pick(store.decide('k', q)), [true, 2, 1000, 0]);
    assert.deepEqual(pick(store.decide('k', q)), [true, 1, 2000, 0]);
    assert.deepEqual(pick(store.decide('k', q)), [true, 0, 3000, 0]);
    assert.deepEqual(pick(store.decide('k', q)), [false, 0, 3000, 1000]);
    clock.now += 400;
    assert.deepEqual(pick(store.decide('k', q)), [false, 0, 2600, 600], 'a refusal does not consume');
    clock.now += 600;
    assert.deepEqual(pick(store.decide('k', q)), [true, 0, 3000, 0]);
    clock.now += 2500;
    assert.deepEqual(pick(store.decide('k', q)), [true, 1, 1500, 0]);
    assert.equal(store.decide('k', q).limit, 3);
  });

  test('a long idle period refills to B, never beyond', () => {
    const { clock, store } = clockedStore();
    const q: RateQuotaMs = { limit: 5, windowMs: 5000, burst: 5 };
    store.decide('k', q);
    clock.now += 3_600_000;
    let allowed = 0;
    while (store.decide('k', q).allowed) allowed++;
    assert.equal(allowed, 5);
  });

  test('keys are independent', () => {
    const { store } = clockedStore();
    const q: RateQuotaMs = { limit: 1, windowMs: 60_000, burst: 1 };
    assert.equal(store.decide('a', q).allowed, true);
    assert.equal(store.decide('a', q).allowed, false);
    assert.equal(store.decide('b', q).allowed, true);
  });

  test('memory is bounded: expired keys are swept, the least recently used is evicted when full', () => {
    const { clock, store } = clockedStore({ maxEntries: 3 });
    const q: RateQuotaMs = { limit: 1, windowMs: 1000, burst: 1 };
    for (const k of ['a', 'b', 'c', 'd']) store.decide(k, q);
    assert.equal(store.size, 3);
    assert.equal(store.decide('b', q).allowed, false, 'b survived');
    assert.equal(store.decide('a', q).allowed, true, 'a was evicted (it was the oldest), so it starts fresh');
    clock.now += 10_000;
    store.decide('e', q);
    assert.ok(store.size <= 2, `expired entries swept on write (size ${store.size})`);
    for (let i = 0; i < 1000; i++) store.decide(`x${i}`, q);
    assert.equal(store.size, 3);
  });

  test('the pure step refuses without moving the TAT', () => {
    const p = gcraParams({ limit: 2, windowMs: 2000, burst: 2 });
    assert.deepEqual(p, { intervalUs: 1_000_000, toleranceUs: 2_000_000 });
    const a = gcra(undefined, 0, p);
    const b = gcra(a.tatUs, 0, p);
    const c = gcra(b.tatUs, 0, p);
    assert.deepEqual([a.allowed, b.allowed, c.allowed], [true, true, false]);
    assert.equal(c.tatUs, b.tatUs);
    assert.equal(c.retryAfterUs, 1_000_000);
  });
});

/** Records the keys asked for; decides with a clock the test controls. */
class SpyBackend extends RateLimiterBackend {
  readonly keys: string[] = [];
  readonly clock: { now: number };
  constructor() {
    const clock = { now: 5_000_000 };
    super({ logger, local: { now: () => clock.now } });
    this.clock = clock;
  }
  override decide(key: string, quota: RateQuotaMs, mode: 'open' | 'closed') {
    this.keys.push(key);
    return super.decide(key, quota, mode);
  }
}

const rule = (r: Partial<RateLimitPolicy> & Pick<RateLimitPolicy, 'name' | 'by' | 'limit' | 'window'>): RateLimitPolicy => ({
  scope: 'route',
  failureMode: 'open',
  ...r,
});

const subject = (s: Partial<RateLimitSubject> = {}): RateLimitSubject => ({
  consumer: null,
  plan: null,
  limits: null,
  ip: '203.0.113.7',
  headers: {},
  ...s,
});

const scope = { routeId: 'api.example.com/v1', service: 'orders' };

async function countAllowed(check: (s: RateLimitSubject) => Promise<RateLimitOutcome>, s: RateLimitSubject, max = 100): Promise<number> {
  let n = 0;
  while (n < max && (await check(s)).ok) n++;
  return n;
}

describe('local store shared by workers (--workers N without Redis)', () => {
  const cases: { shares: number; quota: RateQuotaMs; atOnce: number; intervalMs: number }[] = [
    { shares: 2, quota: { limit: 10, windowMs: 60_000, burst: 10 }, atOnce: 5, intervalMs: 12_000 },
    { shares: 4, quota: { limit: 100, windowMs: 1_000, burst: 20 }, atOnce: 5, intervalMs: 40 },
    { shares: 3, quota: { limit: 2, windowMs: 1_000, burst: 2 }, atOnce: 1, intervalMs: 1_500 },
  ];
  for (const c of cases) {
    test(`${c.shares} workers: each takes ${c.atOnce} at once and one per ${c.intervalMs} ms of ${c.quota.limit} per ${c.quota.windowMs} ms`, () => {
      const clock = { now: 1_000_000 };
      const store = new LocalRateStore({ now: () => clock.now, shares: c.shares });
      let allowed = 0;
      while (store.decide('k', c.quota).allowed) allowed++;
      assert.equal(allowed, c.atOnce);
      clock.now += c.intervalMs - 1;
      assert.equal(store.decide('k', c.quota).allowed, false);
      clock.now += 1;
      assert.equal(store.decide('k', c.quota).allowed, true);
      assert.equal(store.decide('k', c.quota).limit, c.quota.limit, 'RateLimit-Limit still names the gateway-wide limit');
    });
  }
});

describe('compileRateLimits', () => {
  test('no rules: count 0 and no headers', async () => {
    const limits = compileRateLimits([], scope, new SpyBackend());
    assert.equal(limits.count, 0);
    assert.deepEqual(await limits.check(subject()), { ok: true, headers: {} });
  });

  test('headers on success, then a 429 with Retry-After', async () => {
    const backend = new SpyBackend();
    const limits = compileRateLimits([rule({ name: 'per-ip', by: 'ip', limit: 2, window: 60_000 })], scope, backend);
    assert.equal(limits.count, 1);
    assert.deepEqual(await limits.check(subject()), {
      ok: true,
      headers: { 'RateLimit-Limit': '2', 'RateLimit-Remaining': '1', 'RateLimit-Reset': '30', 'RateLimit-Policy': '2;w=60;burst=2' },
    });
    await limits.check(subject());
    const denied = await limits.check(subject());
    assert.deepEqual(denied, {
      ok: false,
      status: 429,
      code: 'rate_limited',
      headers: { 'RateLimit-Limit': '2', 'RateLimit-Remaining': '0', 'RateLimit-Reset': '60', 'RateLimit-Policy': '2;w=60;burst=2', 'Retry-After': '30' },
      message: 'rate limit "per-ip" exceeded; retry in 30 s',
    });
    assert.deepEqual(backend.keys[0], 'cgw:rl:{route:api.example.com/v1:per-ip:ip:203.0.113.7}');
  });

  test('Retry-After is whole seconds, at least 1', async () => {
    const backend = new SpyBackend();
    const limits = compileRateLimits([rule({ name: 'fast', by: 'ip', limit: 10, window: 1000, burst: 1 })], scope, backend);
    await limits.check(subject());
    const denied = await limits.check(subject());
    assert.equal(denied.ok, false);
    assert.equal(denied.headers['Retry-After'], '1');
    backend.clock.now += 99;
    const stillDenied = await limits.check(subject());
    assert.equal(stillDenied.headers['Retry-After'], '1', '1 ms to go still says 1');
  });

  test('quota precedence for by: consumer: own limits, then plan, then the rule', async () => {
    const r = rule({ name: 'per-consumer', by: 'consumer', limit: 3, window: 60_000, plans: { gold: { limit: 5, window: 60_000 }, tiny: { limit: 1, window: 60_000 } } });
    const cases: { name: string; s: RateLimitSubject; allowed: number }[] = [
      { name: 'own limits beat the plan', s: subject({ consumer: 'acme', plan: 'gold', limits: { limit: 7, window: 60_000 } }), allowed: 7 },
      { name: 'own burst is honoured', s: subject({ consumer: 'acme2', plan: 'gold', limits: { limit: 7, window: 60_000, burst: 2 } }), allowed: 2 },
      { name: 'plan quota', s: subject({ consumer: 'bob', plan: 'gold' }), allowed: 5 },
      { name: 'another plan', s: subject({ consumer: 'carol', plan: 'tiny' }), allowed: 1 },
      { name: 'unknown plan falls back to the rule', s: subject({ consumer: 'dave', plan: 'platinum' }), allowed: 3 },
      { name: 'no plan: the rule', s: subject({ consumer: 'erin' }), allowed: 3 },
      { name: 'anonymous: the rule, by ip', s: subject({ consumer: null, plan: 'gold', limits: { limit: 50, window: 1000 } }), allowed: 3 },
    ];
    for (const c of cases) {
      const limits = compileRateLimits([r], scope, new SpyBackend());
      assert.equal(await countAllowed((s) => limits.check(s), c.s), c.allowed, c.name);
    }
    const policy = await compileRateLimits([r], scope, new SpyBackend()).check(subject({ consumer: 'bob', plan: 'gold' }));
    assert.equal(policy.headers['RateLimit-Policy'], '5;w=60;burst=5');
  });

  test("a consumer's own limits are compiled once per limits object, not per request", async () => {
    const quotas: RateQuotaMs[] = [];
    class QuotaSpy extends SpyBackend {
      override decide(key: string, quota: RateQuotaMs, mode: 'open' | 'closed') {
        quotas.push(quota);
        return super.decide(key, quota, mode);
      }
    }
    const limits = compileRateLimits([rule({ name: 'per-consumer', by: 'consumer', limit: 3, window: 60_000 })], scope, new QuotaSpy());
    const own = { limit: 7, window: 60_000 };
    await limits.check(subject({ consumer: 'acme', limits: own }));
    await limits.check(subject({ consumer: 'acme', limits: own }));
    assert.deepEqual(quotas[0], { limit: 7, windowMs: 60_000, burst: 7 });
    assert.equal(quotas[1], quotas[0], 'the same compiled quota');
    await limits.check(subject({ consumer: 'acme', limits: { limit: 9, window: 60_000 } }));
    assert.deepEqual(quotas[2], { limit: 9, windowMs: 60_000, burst: 9 }, 'another limits object, its own quota');
  });

  test('subjects and key layout', async () => {
    const backend = new SpyBackend();
    const rules = [
      rule({ name: 'c', by: 'consumer', limit: 100, window: 60_000 }),
      rule({ name: 'i', by: 'ip', limit: 100, window: 60_000, scope: 'service' }),
      rule({ name: 'h', by: 'header:X-Tenant', limit: 100, window: 60_000 }),
    ];
    const limits = compileRateLimits(rules, { routeId: '/a:b', service: 'orders' }, backend);
    const long = 'x'.repeat(300);
    const check = async (s: RateLimitSubject) => {
      backend.keys.length = 0;
      await limits.check(s);
      return [...backend.keys];
    };
    assert.deepEqual(await check(subject({ consumer: 'acme', headers: { 'x-tenant': 't1' } })), [
      'cgw:rl:{route:/a%3Ab:c:c:acme}',
      'cgw:rl:{service:orders:i:ip:203.0.113.7}',
      'cgw:rl:{route:/a%3Ab:h:h:t1}',
    ]);
    const anon = await check(subject({ headers: { 'x-tenant': ['first', 'second'] } }));
    assert.equal(anon[0], 'cgw:rl:{route:/a%3Ab:c:ip:203.0.113.7}', 'anonymous consumer falls back to the ip');
    assert.equal(anon[2], 'cgw:rl:{route:/a%3Ab:h:h:first}', 'first value of a repeated header');
    assert.equal((await check(subject()))[2], 'cgw:rl:{route:/a%3Ab:h:ip:203.0.113.7}', 'missing header falls back to the ip');
    assert.equal((await check(subject({ headers: { 'x-tenant': '' } })))[2], 'cgw:rl:{route:/a%3Ab:h:ip:203.0.113.7}', 'empty header too');
    const hashed = (await check(subject({ headers: { 'x-tenant': long } })))[2] ?? '';
    assert.match(hashed, /^cgw:rl:\{route:\/a%3Ab:h:hs:[0-9a-f]{64}\}$/, 'long values are hashed');
    assert.equal((await check(subject({ headers: { 'x-tenant': long } })))[2], hashed, 'the same value, the same key');
    assert.notEqual((await check(subject({ headers: { 'x-tenant': `${long}-tail-beyond-256` } })))[2], hashed, 'the whole value is hashed');
    assert.equal((await check(subject({ consumer: 'ip:203.0.113.7' })))[0], 'cgw:rl:{route:/a%3Ab:c:c:ip:203.0.113.7}', 'a consumer cannot pose as an ip');
  });

  test('a header rule counts per value, and missing values share the ip counter', async () => {
    const limits = compileRateLimits([rule({ name: 'tenant', by: 'header:x-tenant', limit: 1, window: 60_000 })], scope, new SpyBackend());
    assert.equal((await limits.check(subject({ headers: { 'x-tenant': 'a' } }))).ok, true);
    assert.equal((await limits.check(subject({ headers: { 'x-tenant': 'a' } }))).ok, false);
    assert.equal((await limits.check(subject({ headers: { 'x-tenant': 'b' } }))).ok, true);
    assert.equal((await limits.check(subject())).ok, true);
    assert.equal((await limits.check(subject())).ok, false);
    assert.equal((await limits.check(subject({ ip: '198.51.100.1' }))).ok, true);
  });

  test('long header values that differ only after 256 chars count apart (JWTs share their header)', async () => {
    const limits = compileRateLimits([rule({ name: 'token', by: 'header:authorization', limit: 1, window: 60_000 })], scope, new SpyBackend());
    const common = `Bearer eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.${'e'.repeat(300)}`;
    const alice = subject({ headers: { authorization: `${common}.alice-signature` } });
    const bob = subject({ headers: { authorization: `${common}.bob-signature` } });
    assert.equal((await limits.check(alice)).ok, true);
    assert.equal((await limits.check(alice)).ok, false);
    assert.equal((await limits.check(bob)).ok, true, 'bob has his own counter');
  });

  test('route scope counts per route, service scope across the routes of a service', async () => {
    const backend = new SpyBackend();
    const perRoute = rule({ name: 'r', by: 'ip', limit: 1, window: 60_000 });
    const perService = rule({ name: 's', by: 'ip', limit: 1, window: 60_000, scope: 'service' });
    const a = compileRateLimits([perRoute], { routeId: '/a', service: 'svc' }, backend);
    const b = compileRateLimits([perRoute], { routeId: '/b', service: 'svc' }, backend);
    assert.deepEqual([(await a.check(subject())).ok, (await b.check(subject())).ok], [true, true]);
    const c = compileRateLimits([perService], { routeId: '/a', service: 'svc' }, backend);
    const d = compileRateLimits([perService], { routeId: '/b', service: 'svc' }, backend);
    assert.deepEqual([(await c.check(subject())).ok, (await d.check(subject())).ok], [true, false]);
  });

  test('every rule must allow; headers come from the most restrictive rule', async () => {
    const backend = new SpyBackend();
    const limits = compileRateLimits(
      [rule({ name: 'wide', by: 'ip', limit: 100, window: 60_000 }), rule({ name: 'narrow', by: 'ip', limit: 3, window: 10_000 })],
      scope,
      backend,
    );
    const first = await limits.check(subject());
    assert.deepEqual(first.headers, { 'RateLimit-Limit': '3', 'RateLimit-Remaining': '2', 'RateLimit-Reset': '4', 'RateLimit-Policy': '3;w=10;burst=3' });
    await limits.check(subject());
    await limits.check(subject());
    const denied = await limits.check(subject());
    assert.equal(denied.ok, false);
    assert.equal(denied.headers['RateLimit-Limit'], '3');
    assert.equal(denied.headers['Retry-After'], '4');
  });

  test('among refusals the longest wait is reported', async () => {
    const backend = new SpyBackend();
    const limits = compileRateLimits(
      [rule({ name: 'short', by: 'ip', limit: 1, window: 2000 }), rule({ name: 'long', by: 'ip', limit: 1, window: 60_000 })],
      scope,
      backend,
    );
    await limits.check(subject());
    const denied = await limits.check(subject());
    assert.equal(denied.ok, false);
    assert.equal(denied.headers['Retry-After'], '60');
    assert.match(denied.ok ? '' : denied.message, /"long"/);
  });
});

describe('RateLimiterBackend without a reachable Redis', () => {
  const backends: RateLimiterBackend[] = [];
  after(async () => {
    await Promise.all(backends.map((b) => b.close()));
  });

  const quota: RateQuotaMs = { limit: 2, windowMs: 60_000, burst: 2 };

  test('no Redis configured: state none, local decisions, failureMode irrelevant', async () => {
    const b = new RateLimiterBackend({ logger });
    backends.push(b);
    assert.equal(b.state, 'none');
    const results = [await b.decide('k', quota, 'closed'), await b.decide('k', quota, 'closed'), await b.decide('k', quota, 'closed')];
    assert.deepEqual(results.map((r) => (r === 'unavailable' ? r : r.allowed)), [true, true, false]);
  });

  test('closed port: open decides locally, closed answers 503, both quickly', async () => {
    const port = await freePort();
    const states: BackendState[] = [];
    const b = new RateLimiterBackend({ logger, redis: { url: `redis://127.0.0.1:${port}` }, onStateChange: (s) => states.push(s) });
    backends.push(b);
    assert.equal(b.state, 'local');
    const open = compileRateLimits([rule({ name: 'o', by: 'ip', limit: 2, window: 60_000 })], scope, b);
    const closed = compileRateLimits([rule({ name: 'c', by: 'ip', limit: 2, window: 60_000, failureMode: 'closed' })], scope, b);
    const started = performance.now();
    const outcomes = [await open.check(subject()), await open.check(subject()), await open.check(subject())];
    assert.deepEqual(outcomes.map((o) => (o.ok ? 200 : o.status)), [200, 200, 429]);
    const refused = await closed.check(subject());
    assert.deepEqual(refused, {
      ok: false,
      status: 503,
      code: 'rate_limiter_unavailable',
      headers: { 'Retry-After': '1' },
      message: 'rate limit "c" cannot be checked (Redis unavailable) and fails closed',
    });
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 500, `took ${elapsed.toFixed(0)} ms`);
    assert.equal(b.state, 'local');
    assert.deepEqual(states, [], 'never reached redis, so no change to report');
  });

  test('a server that accepts but never answers: no decision waits for it', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const addr = silent.address();
    assert.ok(addr && typeof addr === 'object');
    const b = new RateLimiterBackend({ logger, redis: { url: `redis://127.0.0.1:${addr.port}` }, commandTimeoutMs: 100 });
    backends.push(b);
    try {
      const started = performance.now();
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        const d = await b.decide('k', quota, i % 2 === 0 ? 'open' : 'closed');
        assert.ok(performance.now() - t0 < 300, `decision ${i} took ${(performance.now() - t0).toFixed(0)} ms`);
        if (i % 2 === 1) assert.equal(d, 'unavailable');
        else assert.notEqual(d, 'unavailable');
      }
      assert.ok(performance.now() - started < 500);
    } finally {
      await b.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });
});
