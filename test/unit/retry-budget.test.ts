import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { RetryBudget, type RetryBudgetConfig } from '../../src/resilience/retry-budget.ts';

function harness(config: RetryBudgetConfig | null) {
  const clock = { t: 500_000 };
  const budget = new RetryBudget(config, { now: () => clock.t });
  const requests = (n: number): void => {
    for (let i = 0; i < n; i++) budget.recordRequest();
  };
  /** How many of `n` retries are granted. */
  const retries = (n: number): number => {
    let granted = 0;
    for (let i = 0; i < n; i++) if (budget.tryRetry()) granted++;
    return granted;
  };
  return { budget, clock, requests, retries };
}

describe('RetryBudget', () => {
  const cases: { name: string; config: RetryBudgetConfig; requests: number; granted: number }[] = [
    { name: 'ratio above the floor', config: { ratio: 0.2, minPerSecond: 1 }, requests: 1000, granted: 200 },
    { name: 'floor above the ratio', config: { ratio: 0.2, minPerSecond: 5 }, requests: 100, granted: 50 },
    { name: 'no traffic: the floor alone', config: { ratio: 0.5, minPerSecond: 2 }, requests: 0, granted: 20 },
    { name: 'fractional limit rounds up (retries < limit)', config: { ratio: 0.25, minPerSecond: 0 }, requests: 10, granted: 3 },
    { name: 'ratio 0 and no floor: no retries', config: { ratio: 0, minPerSecond: 0 }, requests: 1000, granted: 0 },
    { name: 'ratio 1: one retry per request', config: { ratio: 1, minPerSecond: 0 }, requests: 40, granted: 40 },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.requests} requests → ${c.granted} retries`, () => {
      const h = harness(c.config);
      h.requests(c.requests);
      assert.equal(h.retries(c.granted + 50), c.granted);
      assert.equal(h.budget.status().retries, c.granted);
    });
  }

  test('requests and retries older than 10 s no longer count', () => {
    const h = harness({ ratio: 0.1, minPerSecond: 0 });
    h.requests(100);
    assert.equal(h.retries(100), 10);
    h.clock.t += 5000;
    assert.equal(h.retries(1), 0, 'still inside the window');
    h.clock.t += 5000;
    assert.deepEqual(h.budget.status(), { enabled: true, requests: 0, retries: 0, limit: 0 });
    h.requests(50);
    assert.equal(h.retries(100), 5);
  });

  test('the window slides second by second', () => {
    const h = harness({ ratio: 0.5, minPerSecond: 0 });
    h.clock.t = 0;
    h.requests(10); // second 0
    h.clock.t = 9_999;
    assert.equal(h.retries(100), 5); // second 9: second 0 still in
    h.clock.t = 10_000; // second 10: second 0 is gone, and with it the limit
    assert.equal(h.retries(1), 0);
    assert.deepEqual(h.budget.status(), { enabled: true, requests: 0, retries: 5, limit: 0 });
  });

  test('granted retries use the budget; refused ones do not', () => {
    const h = harness({ ratio: 0.5, minPerSecond: 0 });
    h.requests(4);
    assert.equal(h.retries(10), 2);
    h.requests(2);
    assert.equal(h.retries(10), 1);
    assert.equal(h.budget.status().retries, 3);
  });

  test('configure(null): no budget, every retry allowed', () => {
    const h = harness(null);
    assert.equal(h.retries(1000), 1000);
    assert.equal(h.budget.status().limit, null);
    assert.equal(h.budget.status().enabled, false);
  });

  test('reconfiguring keeps the counts', () => {
    const h = harness({ ratio: 0.1, minPerSecond: 0 });
    h.requests(100);
    assert.equal(h.retries(100), 10);
    h.budget.configure({ ratio: 0.2, minPerSecond: 0 });
    assert.equal(h.retries(100), 10);
    assert.equal(h.budget.status().limit, 20);
  });
});
