import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, TokenBucket, delay } from '../../src/core/backoff.ts';

describe('Backoff', () => {
  const growth: { name: string; base: number; cap: number; random: number; delays: number[] }[] = [
    { name: 'doubles up to the cap (max jitter)', base: 100, cap: 1000, random: 1, delays: [100, 200, 400, 800, 1000, 1000, 1000] },
    { name: 'full jitter scales the ceiling', base: 100, cap: 1000, random: 0.5, delays: [50, 100, 200, 400, 500, 500] },
    { name: 'zero jitter gives zero', base: 100, cap: 1000, random: 0, delays: [0, 0, 0] },
    { name: 'cap below base caps the first delay', base: 500, cap: 300, random: 1, delays: [300, 300] },
    { name: 'rounded to whole ms', base: 3, cap: 100, random: 0.5, delays: [2, 3, 6, 12] },
  ];
  for (const c of growth) {
    test(c.name, () => {
      const b = new Backoff(c.base, c.cap, () => c.random);
      assert.deepEqual(
        c.delays.map(() => b.next()),
        c.delays,
      );
    });
  }

  test('never exceeds the cap after very many failures', () => {
    const b = new Backoff(1, 30_000, () => 0.999999);
    let last = 0;
    for (let i = 0; i < 200; i++) last = b.next();
    assert.ok(last <= 30_000 && last >= 29_000, `last delay ${last}`);
    assert.equal(b.failures, 200);
  });

  test('stays within [0, ceiling] with a real random source', () => {
    const b = new Backoff(100, 1000);
    const ceilings = [100, 200, 400, 800, 1000, 1000];
    for (const ceiling of ceilings) {
      const d = b.next();
      assert.ok(d >= 0 && d <= ceiling, `${d} not within [0, ${ceiling}]`);
    }
  });

  test('reset starts over from the base and clears the failure count', () => {
    const b = new Backoff(100, 10_000, () => 1);
    b.next();
    b.next();
    b.next();
    assert.equal(b.failures, 3);
    b.reset();
    assert.equal(b.failures, 0);
    assert.equal(b.next(), 100);
    assert.equal(b.next(), 200);
  });
});

describe('TokenBucket', () => {
  function clock(start = 1_000): { now: () => number; advance: (ms: number) => void } {
    let t = start;
    return { now: () => t, advance: (ms) => (t += ms) };
  }

  type Step = { advance?: number; wait: number };
  const scripts: { name: string; burst: number; interval: number; steps: Step[] }[] = [
    {
      name: 'allows burst at once, then one per interval',
      burst: 3,
      interval: 100,
      steps: [{ wait: 0 }, { wait: 0 }, { wait: 0 }, { wait: 100 }, { advance: 100, wait: 100 }, { advance: 100, wait: 100 }],
    },
    {
      name: 'reports the remaining wait',
      burst: 1,
      interval: 100,
      steps: [{ wait: 0 }, { advance: 30, wait: 70 }, { advance: 170, wait: 0 }],
    },
    {
      name: 'a long pause refills only up to burst',
      burst: 2,
      interval: 100,
      steps: [{ wait: 0 }, { wait: 0 }, { advance: 10_000, wait: 0 }, { wait: 0 }, { wait: 100 }],
    },
    {
      // A caller told to wait has its token reserved, so callers that arrive together are queued
      // one interval apart instead of all going at the end of the first wait.
      name: 'waiting callers are queued one interval apart',
      burst: 1,
      interval: 1000,
      steps: [{ wait: 0 }, { wait: 1000 }, { wait: 2000 }, { advance: 3000, wait: 0 }, { wait: 1000 }],
    },
  ];
  for (const s of scripts) {
    test(s.name, () => {
      const c = clock();
      const bucket = new TokenBucket(s.burst, s.interval, c.now);
      s.steps.forEach((step, i) => {
        if (step.advance) c.advance(step.advance);
        assert.equal(bucket.take(), step.wait, `step ${i}`);
      });
    });
  }

  test('a caller that waits as told is paced at one call per interval', () => {
    const c = clock();
    const bucket = new TokenBucket(5, 200, c.now);
    let calls = 0;
    // The watch loop's use: take, wait what it says, call; for 10 simulated seconds.
    while (c.now() < 1_000 + 10_000) {
      c.advance(bucket.take());
      calls += 1;
    }
    assert.ok(calls >= 5 + 49 && calls <= 5 + 51, `calls ${calls}`);
  });
});

describe('delay', () => {
  test('resolves at once for 0 ms or an aborted signal', { timeout: 10_000 }, async () => {
    await delay(0);
    const aborted = AbortSignal.abort();
    await delay(60_000, aborted);
  });

  test('an abort ends a long delay early', { timeout: 10_000 }, async () => {
    const ac = new AbortController();
    const pending = delay(60_000, ac.signal);
    ac.abort();
    await pending;
  });
});
