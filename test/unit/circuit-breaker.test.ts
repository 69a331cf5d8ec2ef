import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { CircuitBreaker, RollingCounts, type BreakerState, type CircuitBreakerConfig } from '../../src/resilience/circuit-breaker.ts';

const CONFIG: CircuitBreakerConfig = {
  enabled: true,
  window: 10_000,
  minRequests: 10,
  failureRatio: 0.5,
  openFor: 5000,
  halfOpenProbes: 2,
  statuses: [500, 502, 503, 504],
};

function harness(config: Partial<CircuitBreakerConfig> = {}) {
  const clock = { t: 1_000_000 };
  const breaker = new CircuitBreaker({ ...CONFIG, ...config }, { now: () => clock.t });
  const changes: string[] = [];
  breaker.onStateChange((state: BreakerState, previous: BreakerState) => changes.push(`${previous}→${state}`));
  const send = (outcomes: string): void => {
    for (const ch of outcomes) {
      const got = breaker.tryAcquire();
      assert.ok(got.allowed, 'request refused while feeding outcomes');
      breaker.record(ch === 'F' ? 'failure' : 'success', got.probe);
    }
  };
  const open = (): void => {
    send('F'.repeat(CONFIG.minRequests));
    assert.equal(breaker.state, 'open');
  };
  return { breaker, clock, changes, send, open };
}

describe('CircuitBreaker: closed → open', () => {
  const cases: { name: string; outcomes: string; config?: Partial<CircuitBreakerConfig>; state: BreakerState }[] = [
    { name: 'all failures but fewer than minRequests', outcomes: 'FFFFFFFFF', state: 'closed' },
    { name: 'minRequests reached, ratio exactly at the threshold', outcomes: 'SSSSSFFFFF', state: 'open' },
    { name: 'minRequests reached, ratio just below', outcomes: 'SSSSSSFFFF', state: 'closed' },
    { name: 'ratio reached by the request that makes minRequests (a success)', outcomes: 'FFFFFFFFFS', state: 'open' },
    { name: 'many requests, low ratio', outcomes: 'SSSF'.repeat(20), state: 'closed' },
    { name: 'failureRatio 1 needs every request to fail', outcomes: 'FFFFFFFFFSF', config: { failureRatio: 1 }, state: 'closed' },
    { name: 'failureRatio 1, all failures', outcomes: 'FFFFFFFFFF', config: { failureRatio: 1 }, state: 'open' },
    { name: 'minRequests 1 opens on the first failure', outcomes: 'F', config: { minRequests: 1 }, state: 'open' },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.state}`, () => {
      const h = harness(c.config);
      h.send(c.outcomes);
      assert.equal(h.breaker.state, c.state);
    });
  }

  test('opening is reported once, with the window counts', () => {
    const h = harness();
    h.send('SSSSSFFFFF');
    assert.deepEqual(h.changes, ['closed→open']);
    const status = h.breaker.status();
    assert.equal(status.state, 'open');
    assert.equal(status.requests, 10);
    assert.equal(status.failures, 5);
    assert.equal(status.openedAt, h.clock.t);
    assert.equal(status.retryAfterMs, 5000);
  });

  test('old failures leave the window', () => {
    const h = harness();
    h.send('FFFFFFFFF'); // 9 failures at t0
    h.clock.t += 10_000; // a full window later
    h.send('S');
    assert.equal(h.breaker.state, 'closed');
    assert.deepEqual([h.breaker.status().requests, h.breaker.status().failures], [1, 0]);
  });

  test('failures spread inside one window still count', () => {
    const h = harness();
    for (let i = 0; i < 10; i++) {
      h.send('F');
      h.clock.t += 800; // 10 failures over 8 s of a 10 s window
    }
    assert.equal(h.breaker.state, 'open');
  });

  test('the window slides bucket by bucket', () => {
    const h = harness();
    h.send('FFFFF'); // bucket 0
    h.clock.t += 5000;
    h.send('SSSS'); // bucket 5: 9 requests, 5 failures
    h.clock.t += 5000; // bucket 10: bucket 0 is gone
    h.send('F'); // 5 requests, 1 failure
    assert.deepEqual([h.breaker.status().requests, h.breaker.status().failures], [5, 1]);
    assert.equal(h.breaker.state, 'closed');
  });
});

describe('CircuitBreaker: open', () => {
  test('fails fast with the time left', () => {
    const h = harness();
    h.open();
    const expected = [5000, 3000, 1];
    for (const left of expected) {
      h.clock.t = h.breaker.status().openedAt! + 5000 - left;
      assert.deepEqual(h.breaker.tryAcquire(), { allowed: false, retryAfterMs: left });
      assert.equal(h.breaker.retryAfterMs, left);
    }
  });

  test('requests that were admitted before opening do not change the state', () => {
    const h = harness();
    h.open();
    h.breaker.record('success', 0);
    h.breaker.record('failure', 0);
    assert.equal(h.breaker.state, 'open');
  });

  test('half-open after openFor', () => {
    const h = harness();
    h.open();
    h.clock.t += 5000;
    assert.equal(h.breaker.state, 'half_open');
    assert.equal(h.breaker.retryAfterMs, 0);
    assert.deepEqual(h.changes, ['closed→open', 'open→half_open']);
  });
});

describe('CircuitBreaker: half-open', () => {
  const halfOpen = (config: Partial<CircuitBreakerConfig> = {}) => {
    const h = harness(config);
    h.open();
    h.clock.t += 5000;
    return h;
  };

  for (const probes of [1, 2, 3]) {
    test(`at most halfOpenProbes=${probes} probes at once; others refused`, () => {
      const h = halfOpen({ halfOpenProbes: probes });
      for (let i = 0; i < probes; i++) assert.deepEqual(h.breaker.tryAcquire(), { allowed: true, probe: 1 });
      assert.deepEqual(h.breaker.tryAcquire(), { allowed: false, retryAfterMs: 5000 });
      assert.equal(h.breaker.status().probesInFlight, probes);
    });
  }

  test('closes once every probe succeeded, with an empty window', () => {
    const h = halfOpen();
    const p1 = h.breaker.tryAcquire();
    const p2 = h.breaker.tryAcquire();
    assert.ok(p1.allowed && p1.probe > 0 && p2.allowed && p2.probe > 0);
    h.breaker.record('success', p1.probe);
    assert.equal(h.breaker.state, 'half_open');
    h.breaker.record('success', p2.probe);
    assert.equal(h.breaker.state, 'closed');
    assert.deepEqual([h.breaker.status().requests, h.breaker.status().failures, h.breaker.status().openedAt], [0, 0, null]);
    assert.deepEqual(h.breaker.tryAcquire(), { allowed: true, probe: 0 });
    assert.deepEqual(h.changes, ['closed→open', 'open→half_open', 'half_open→closed']);
    h.send('FFFFFFFFF');
    assert.equal(h.breaker.state, 'closed', 'the failures before opening were forgotten');
  });

  test('a succeeded probe does not free a slot: halfOpenProbes probes per round', () => {
    const h = halfOpen({ halfOpenProbes: 3 });
    h.send('S');
    h.send('S');
    const third = h.breaker.tryAcquire();
    assert.ok(third.allowed && third.probe > 0);
    assert.equal(h.breaker.tryAcquire().allowed, false);
    h.breaker.record('success', third.probe);
    assert.equal(h.breaker.state, 'closed');
  });

  test('one probe failure reopens for openFor', () => {
    const h = halfOpen();
    const t = h.clock.t;
    const p1 = h.breaker.tryAcquire();
    const p2 = h.breaker.tryAcquire();
    assert.ok(p1.allowed && p2.allowed);
    h.breaker.record('success', p1.probe);
    h.clock.t += 100;
    h.breaker.record('failure', p2.probe);
    assert.equal(h.breaker.state, 'open');
    assert.equal(h.breaker.status().openedAt, t + 100);
    assert.deepEqual(h.breaker.tryAcquire(), { allowed: false, retryAfterMs: 5000 });
    h.clock.t += 5000;
    assert.equal(h.breaker.state, 'half_open');
    assert.deepEqual(h.changes, ['closed→open', 'open→half_open', 'half_open→open', 'open→half_open']);
  });

  test('a released probe gives its slot back', () => {
    const h = halfOpen({ halfOpenProbes: 1 });
    const probe = h.breaker.tryAcquire();
    assert.ok(probe.allowed && probe.probe > 0);
    assert.equal(h.breaker.tryAcquire().allowed, false);
    h.breaker.release(probe.probe);
    assert.equal(h.breaker.state, 'half_open');
    assert.ok(h.breaker.tryAcquire().allowed);
  });

  test('a probe of an earlier round neither counts nor frees a slot in the next round', () => {
    const h = halfOpen({ halfOpenProbes: 2 });
    const late = h.breaker.tryAcquire(); // round 1, still in flight when round 1 fails
    const failing = h.breaker.tryAcquire();
    assert.ok(late.allowed && failing.allowed);
    h.breaker.record('failure', failing.probe);
    assert.equal(h.breaker.state, 'open');
    h.clock.t += 5000;
    const q1 = h.breaker.tryAcquire(); // round 2
    const q2 = h.breaker.tryAcquire();
    assert.ok(q1.allowed && q2.allowed);
    h.breaker.release(late.probe); // a stale release gives back no slot of this round
    assert.equal(h.breaker.tryAcquire().allowed, false);
    h.breaker.record('success', late.probe); // a stale success counts for nothing
    assert.deepEqual([h.breaker.status().probesInFlight, h.breaker.status().probesSucceeded], [2, 0]);
    h.breaker.record('success', q1.probe);
    assert.equal(h.breaker.state, 'half_open', 'one fresh success of two is not enough');
    h.breaker.record('success', q2.probe);
    assert.equal(h.breaker.state, 'closed');
    assert.notEqual(q1.probe, late.probe, 'a probe carries its round');
  });

  test('non-probe outcomes during half-open are ignored', () => {
    const h = halfOpen();
    h.breaker.record('failure', 0);
    assert.equal(h.breaker.state, 'half_open');
  });

  test('a late probe of an earlier round cannot drive the count negative', () => {
    const h = halfOpen({ halfOpenProbes: 2 });
    h.breaker.record('success', 1); // nothing was admitted
    h.breaker.release(1);
    assert.equal(h.breaker.status().probesInFlight, 0);
  });
});

describe('CircuitBreaker: configuration', () => {
  for (const off of [null, { ...CONFIG, enabled: false }]) {
    test(`disabled (${off === null ? 'null' : 'enabled: false'}): always allowed, closes an open breaker`, () => {
      const h = harness();
      h.open();
      h.breaker.configure(off);
      assert.equal(h.breaker.state, 'closed');
      assert.equal(h.breaker.enabled, false);
      for (let i = 0; i < 50; i++) {
        const got = h.breaker.tryAcquire();
        assert.deepEqual(got, { allowed: true, probe: 0 });
        h.breaker.record('failure', 0);
      }
      assert.equal(h.breaker.state, 'closed');
      assert.deepEqual(h.changes, ['closed→open', 'open→closed']);
    });
  }

  test('reconfiguring keeps the window unless its length changed', () => {
    const h = harness();
    h.send('FFFFF');
    h.breaker.configure({ ...CONFIG, minRequests: 5 });
    h.send('F');
    assert.equal(h.breaker.state, 'open');

    const h2 = harness();
    h2.send('FFFFF');
    h2.breaker.configure({ ...CONFIG, minRequests: 5, window: 20_000 });
    h2.send('F');
    assert.equal(h2.breaker.state, 'closed');
  });

  test('reconfiguring openFor applies to an open breaker', () => {
    const h = harness();
    h.open();
    h.breaker.configure({ ...CONFIG, openFor: 1000 });
    assert.equal(h.breaker.retryAfterMs, 1000);
    h.clock.t += 1000;
    assert.equal(h.breaker.state, 'half_open');
  });

  test('the allowed answer is a shared constant (no allocation)', () => {
    const h = harness();
    assert.equal(h.breaker.tryAcquire(), h.breaker.tryAcquire());
  });

  test('an unsubscribed listener hears nothing', () => {
    const clock = { t: 0 };
    const breaker = new CircuitBreaker({ ...CONFIG, minRequests: 1 }, { now: () => clock.t });
    const heard: BreakerState[] = [];
    const off = breaker.onStateChange((s) => heard.push(s));
    off();
    breaker.record('failure', 0);
    assert.equal(breaker.state, 'open');
    assert.deepEqual(heard, []);
  });

  const statuses: { status: number; failure: boolean }[] = [
    { status: 500, failure: true },
    { status: 503, failure: true },
    { status: 501, failure: false },
    { status: 404, failure: false },
  ];
  for (const { status, failure } of statuses) {
    test(`isFailureStatus(${status}) = ${failure}`, () => {
      assert.equal(harness().breaker.isFailureStatus(status), failure);
    });
  }
});

describe('RollingCounts', () => {
  test('sums the last N buckets, per channel', () => {
    const r = new RollingCounts(3, 2, 100);
    r.add(0, 0);
    r.add(50, 1, 2);
    r.add(150, 0);
    r.add(250, 0);
    assert.deepEqual([r.total(299, 0), r.total(299, 1)], [3, 2]);
    assert.deepEqual([r.total(300, 0), r.total(300, 1)], [2, 0]);
    assert.deepEqual([r.total(450, 0)], [1]);
    assert.deepEqual([r.total(10_000, 0)], [0]);
  });

  test('a clock that steps back writes into the newest bucket', () => {
    const r = new RollingCounts(3, 1, 100);
    r.add(500, 0);
    r.add(100, 0);
    assert.equal(r.total(500, 0), 2);
    assert.equal(r.total(800, 0), 0);
  });
});
