import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { Redis } from 'ioredis';
import { createLogger } from '../../src/core/logger.ts';
import { RateLimiterBackend, type BackendState, type RateDecision, type RateQuotaMs } from '../../src/filters/rate-limit.ts';
import { startRedis, type RedisServer } from '../helpers/redis.ts';

const logger = createLogger('silent');
const COMMAND_TIMEOUT_MS = 100;
/** Event-loop and scheduling slack on a busy CI machine. */
const SLACK_MS = 150;

interface Watched {
  readonly backend: RateLimiterBackend;
  readonly states: BackendState[];
  /** Resolves on the next change to `state` (immediately if already there). */
  reach(state: BackendState): Promise<void>;
}

function watched(server: RedisServer, opts: { probeIntervalMs?: number } = {}): Watched {
  const events = new EventEmitter();
  const states: BackendState[] = [];
  const backend = new RateLimiterBackend({
    logger,
    redis: { url: server.url },
    commandTimeoutMs: COMMAND_TIMEOUT_MS,
    ...opts,
    onStateChange: (s) => {
      states.push(s);
      events.emit(s);
    },
  });
  return {
    backend,
    states,
    reach: async (state) => {
      if (backend.state === state) return;
      await once(events, state);
    },
  };
}

const allowedOf = (d: RateDecision | 'unavailable'): boolean | 'unavailable' => (d === 'unavailable' ? d : d.allowed);
/** Lets timers and sockets run between decisions that may resolve without I/O. */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('RateLimiterBackend on a real redis-server', () => {
  let server: RedisServer;
  let raw: Redis;
  const open: Watched[] = [];

  before(async () => {
    server = await startRedis();
    raw = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    // It sees the same restarts as the backends; its reconnect errors are expected.
    raw.on('error', () => {});
    await raw.connect();
  });
  after(async () => {
    await Promise.all(open.map((w) => w.backend.close()));
    raw.disconnect();
    await server.stop();
  });
  const make = (opts?: { probeIntervalMs?: number }): Watched => {
    const w = watched(server, opts);
    open.push(w);
    return w;
  };

  test('two gateways on one Redis enforce one global limit', async () => {
    const a = make();
    const b = make();
    await Promise.all([a.reach('redis'), b.reach('redis')]);
    const quota: RateQuotaMs = { limit: 10, windowMs: 60_000, burst: 10 };
    const key = 'cgw:rl:{route:/global:shared:ip:192.0.2.1}';
    const decisions: RateDecision[] = [];
    for (let i = 0; i < 20; i++) {
      const d = await (i % 2 === 0 ? a : b).backend.decide(key, quota, 'closed');
      assert.notEqual(d, 'unavailable');
      if (d !== 'unavailable') decisions.push(d);
    }
    assert.deepEqual(decisions.map((d) => d.allowed), [...Array<boolean>(10).fill(true), ...Array<boolean>(10).fill(false)]);
    assert.deepEqual(decisions.slice(0, 10).map((d) => d.remaining), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    const lastAllowed = decisions[9];
    const firstDenied = decisions[10];
    assert.ok(lastAllowed && firstDenied);
    // Redis' clock moves between calls, so times are checked within the duration of the test.
    assert.ok(lastAllowed.resetMs > 59_000 && lastAllowed.resetMs <= 60_000, `reset ${lastAllowed.resetMs}`);
    assert.ok(firstDenied.retryAfterMs > 5_000 && firstDenied.retryAfterMs <= 6_000, `retry after ${firstDenied.retryAfterMs}`);
    assert.equal(firstDenied.remaining, 0);
    const pttl = await raw.pttl(key);
    assert.ok(pttl > 59_000 && pttl <= 60_000, `the key expires when the bucket is full again (PTTL ${pttl})`);
    assert.match((await raw.get(key)) ?? '', /^\d+$/, 'the TAT is stored as whole microseconds');
  });

  test('killed mid-traffic: fail open decides locally, fail closed answers unavailable, nobody hangs; back to redis by itself', async () => {
    const w = make();
    await w.reach('redis');
    const quota: RateQuotaMs = { limit: 1_000_000, windowMs: 60_000, burst: 1_000_000 };
    let slowest = 0;
    const seen = { open: new Set<boolean | 'unavailable'>(), closed: new Set<boolean | 'unavailable'>() };
    let running = true;
    const traffic = (async () => {
      for (let i = 0; running; i++) {
        const mode = i % 2 === 0 ? 'open' : 'closed';
        const t0 = performance.now();
        const d = await w.backend.decide(`cgw:rl:{route:/kill:t:ip:${i % 7}}`, quota, mode);
        slowest = Math.max(slowest, performance.now() - t0);
        seen[mode].add(allowedOf(d));
        await turn();
      }
    })();

    try {
      const down = w.reach('local');
      await server.stop();
      await down;
      seen.open.clear();
      seen.closed.clear();
      // A few hundred decisions while Redis is gone.
      const t0 = performance.now();
      const extra: (boolean | 'unavailable')[] = [];
      for (let i = 0; i < 200; i++) {
        extra.push(allowedOf(await w.backend.decide('cgw:rl:{route:/kill:extra:ip:1}', { limit: 5, windowMs: 60_000, burst: 5 }, 'open')));
        extra.push(allowedOf(await w.backend.decide('cgw:rl:{route:/kill:extra:ip:2}', quota, 'closed')));
        await turn();
      }
      assert.ok(performance.now() - t0 < 2_000, 'local decisions are fast');
      assert.equal(extra.filter((e) => e === true).length, 5, 'fail open keeps limiting, per gateway');
      assert.equal(extra.filter((e) => e === 'unavailable').length, 200);
      assert.deepEqual([...seen.open], [true]);
      assert.deepEqual([...seen.closed], ['unavailable']);

      const up = w.reach('redis');
      await server.start();
      await up;
      seen.open.clear();
      seen.closed.clear();
      const key = 'cgw:rl:{route:/kill:after:ip:1}';
      // A quota whose key lives long enough (T = 6 s) to be seen afterwards.
      const d = await w.backend.decide(key, { limit: 10, windowMs: 60_000, burst: 10 }, 'closed');
      assert.notEqual(d, 'unavailable', 'the restarted Redis (without the cached script) decides again');
      assert.ok(await raw.exists(key), 'the decision was made in Redis');
    } finally {
      running = false;
      await traffic;
    }
    assert.ok(slowest < COMMAND_TIMEOUT_MS + SLACK_MS, `slowest decision ${slowest.toFixed(0)} ms`);
    assert.deepEqual(w.states, ['redis', 'local', 'redis']);
  });

  test('a Redis that hangs without closing the connection: decisions time out, then one probe brings redis back', async () => {
    const w = make({ probeIntervalMs: 50 });
    await w.reach('redis');
    const quota: RateQuotaMs = { limit: 1_000_000, windowMs: 60_000, burst: 1_000_000 };
    const pid = server.pid;
    const down = w.reach('local');
    process.kill(pid, 'SIGSTOP');
    try {
      const timings: number[] = [];
      const results = await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const t0 = performance.now();
          const d = await w.backend.decide(`cgw:rl:{route:/hang:t:ip:${i}}`, quota, i % 2 === 0 ? 'open' : 'closed');
          timings.push(performance.now() - t0);
          return allowedOf(d);
        }),
      );
      await down;
      assert.ok(Math.max(...timings) < COMMAND_TIMEOUT_MS + SLACK_MS, `slowest ${Math.max(...timings).toFixed(0)} ms`);
      assert.deepEqual(new Set(results), new Set([true, 'unavailable']));
      // Meanwhile later decisions do not wait at all, bar the one probe per interval.
      const t0 = performance.now();
      for (let i = 0; i < 50; i++) await w.backend.decide('cgw:rl:{route:/hang:later:ip:1}', quota, 'open');
      assert.ok(performance.now() - t0 < 2 * COMMAND_TIMEOUT_MS + SLACK_MS, `50 decisions took ${(performance.now() - t0).toFixed(0)} ms`);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    // Nothing reconnects, so only traffic can notice the recovery.
    const up = w.reach('redis');
    let recovered = false;
    void up.then(() => (recovered = true));
    while (!recovered) {
      await w.backend.decide('cgw:rl:{route:/hang:probe:ip:1}', quota, 'open');
      await turn();
    }
    assert.equal(w.backend.state, 'redis');
    assert.deepEqual(w.states, ['redis', 'local', 'redis']);
  });

  test('state changes are logged once per outage, not per request', async () => {
    const lines: string[] = [];
    const sink = { write: (line: string) => void lines.push(line) };
    const events = new EventEmitter();
    const backend = new RateLimiterBackend({
      logger: createLogger('info', sink),
      redis: { url: server.url },
      commandTimeoutMs: COMMAND_TIMEOUT_MS,
      onStateChange: (s) => events.emit(s),
    });
    open.push({ backend, states: [], reach: async () => {} });
    if (backend.state !== 'redis') await once(events, 'redis');
    const down = once(events, 'local');
    await server.stop();
    await down;
    for (let i = 0; i < 100; i++) await backend.decide('cgw:rl:{route:/log:x:ip:1}', { limit: 5, windowMs: 1000, burst: 5 }, 'open');
    const up = once(events, 'redis');
    await server.start();
    await up;
    const messages = lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    assert.deepEqual(messages, [
      'rate limiter: using Redis; limits are global across gateways',
      'rate limiter: Redis unavailable; rules with failureMode open count per gateway, closed ones answer 503',
      'rate limiter: using Redis; limits are global across gateways',
    ]);
  });
});
