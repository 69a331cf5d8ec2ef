import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { OutlierDetector, type EjectionInfo, type OutlierConfig, type ReturnReason } from '../../src/resilience/outlier.ts';

const CONFIG: OutlierConfig = {
  enabled: true,
  consecutiveFailures: 3,
  statuses: [502, 503, 504],
  baseEjection: 1000,
  maxEjection: 5000,
  maxEjectedPercent: 50,
};

interface Harness {
  readonly detector: OutlierDetector;
  readonly clock: { t: number };
  readonly events: string[];
  fail(key: string, n?: number): void;
}

function harness(config: Partial<OutlierConfig> = {}, endpoints: string[] = ['a', 'b', 'c', 'd']): Harness {
  const clock = { t: 10_000 };
  const events: string[] = [];
  const detector = new OutlierDetector(
    { ...CONFIG, ...config },
    {
      now: () => clock.t,
      onEject: (key: string, info: EjectionInfo) => events.push(`eject ${key} ${info.durationMs}ms k=${info.ejections} until=${info.until}`),
      onReturn: (key: string, reason: ReturnReason) => events.push(`return ${key} ${reason}`),
    },
  );
  detector.setEndpoints(endpoints);
  return {
    detector,
    clock,
    events,
    fail(key, n = 1) {
      for (let i = 0; i < n; i++) detector.record(key, 'failure');
    },
  };
}

describe('OutlierDetector: ejection', () => {
  test('N consecutive failures eject; N-1 do not', () => {
    const h = harness();
    h.fail('a', 2);
    assert.equal(h.detector.isEjected('a'), false);
    h.fail('a');
    assert.equal(h.detector.isEjected('a'), true);
    assert.deepEqual(h.events, ['eject a 1000ms k=1 until=11000']);
  });

  test('a success resets the consecutive count', () => {
    const h = harness();
    h.fail('a', 2);
    h.detector.record('a', 'success');
    h.fail('a', 2);
    assert.equal(h.detector.isEjected('a'), false);
    assert.equal(h.detector.status().a?.consecutiveFailures, 2);
    h.fail('a');
    assert.equal(h.detector.isEjected('a'), true);
  });

  test('failures of one endpoint do not count for another', () => {
    const h = harness();
    h.fail('a', 2);
    h.fail('b', 2);
    assert.equal(h.detector.ejectedCount, 0);
  });

  test('returns automatically when its time is up (lazily, onReturn fires once)', () => {
    const h = harness();
    h.fail('a', 3);
    h.clock.t += 999;
    assert.equal(h.detector.isEjected('a'), true);
    h.clock.t += 1;
    assert.equal(h.detector.isEjected('a'), false);
    assert.equal(h.detector.isEjected('a'), false);
    assert.deepEqual(h.events, ['eject a 1000ms k=1 until=11000', 'return a expired']);
    assert.equal(h.detector.hasEjected, false);
  });

  test('a returned endpoint needs N fresh failures to be ejected again', () => {
    const h = harness();
    h.fail('a', 3);
    h.fail('a', 5); // while ejected: ignored
    h.clock.t += 1000;
    h.fail('a', 2);
    assert.equal(h.detector.isEjected('a'), false);
    h.fail('a');
    assert.equal(h.detector.isEjected('a'), true);
  });

  test('failures while ejected do not extend the ejection', () => {
    const h = harness();
    h.fail('a', 3);
    h.clock.t += 500;
    h.fail('a', 10);
    assert.equal(h.detector.status().a?.ejectedUntil, 11_000);
  });

  test('unknown endpoints are ignored', () => {
    const h = harness();
    h.fail('zzz', 10);
    assert.equal(h.detector.isEjected('zzz'), false);
    assert.deepEqual(Object.keys(h.detector.status()), ['a', 'b', 'c', 'd']);
  });
});

describe('OutlierDetector: ejection time doubles up to maxEjection', () => {
  test('1s, 2s, 4s, then capped at 5s', () => {
    const h = harness();
    const durations: number[] = [];
    for (let k = 0; k < 5; k++) {
      h.fail('a', 3);
      const until = h.detector.status().a?.ejectedUntil;
      assert.ok(until !== null && until !== undefined);
      durations.push(until - h.clock.t);
      h.clock.t = until; // back exactly when due, then fail again at once
    }
    assert.deepEqual(durations, [1000, 2000, 4000, 5000, 5000]);
    assert.equal(h.detector.status().a?.ejections, 5);
  });

  const decay: { name: string; backFor: number; next: number }[] = [
    { name: 'back for less than maxEjection: k keeps growing', backFor: 4999, next: 2000 },
    { name: 'back for maxEjection: k resets, base ejection again', backFor: 5000, next: 1000 },
  ];
  for (const c of decay) {
    test(c.name, () => {
      const h = harness();
      h.fail('a', 3);
      h.clock.t += 1000 + c.backFor; // 1000: the first ejection
      h.fail('a', 3);
      assert.equal(h.detector.status().a?.ejectedUntil, h.clock.t + c.next);
    });
  }

  test('status reports the decayed k', () => {
    const h = harness();
    h.fail('a', 3);
    h.clock.t += 1000;
    assert.equal(h.detector.status().a?.ejections, 1);
    h.clock.t += 5000;
    assert.equal(h.detector.status().a?.ejections, 0);
  });
});

describe('OutlierDetector: maxEjectedPercent caps ejections', () => {
  const caps: { endpoints: number; percent: number; max: number }[] = [
    { endpoints: 1, percent: 50, max: 0 },
    { endpoints: 1, percent: 100, max: 1 },
    { endpoints: 2, percent: 50, max: 1 },
    { endpoints: 3, percent: 50, max: 1 },
    { endpoints: 4, percent: 50, max: 2 },
    { endpoints: 4, percent: 100, max: 4 },
    { endpoints: 10, percent: 10, max: 1 },
    { endpoints: 10, percent: 0, max: 0 },
    { endpoints: 5, percent: 33.4, max: 1 },
  ];
  for (const c of caps) {
    test(`${c.endpoints} endpoints at ${c.percent}% → at most ${c.max} ejected`, () => {
      const keys = Array.from({ length: c.endpoints }, (_, i) => `e${i}`);
      const h = harness({ maxEjectedPercent: c.percent }, keys);
      for (const key of keys) h.fail(key, 3);
      assert.equal(h.detector.ejectedCount, c.max);
      assert.equal(keys.filter((k) => h.detector.isEjected(k)).length, c.max);
    });
  }

  test('an endpoint held back by the cap is ejected on its next failure once room frees up', () => {
    const h = harness({}, ['a', 'b']);
    h.fail('a', 3);
    h.fail('b', 3);
    assert.deepEqual([h.detector.isEjected('a'), h.detector.isEjected('b')], [true, false]);
    h.clock.t += 1000; // a returns
    h.fail('b');
    assert.deepEqual([h.detector.isEjected('a'), h.detector.isEjected('b')], [false, true]);
  });

  test('the cap follows the endpoint set', () => {
    const h = harness({}, ['a']);
    h.fail('a', 3);
    assert.equal(h.detector.isEjected('a'), false);
    h.detector.setEndpoints(['a', 'b']);
    h.fail('a');
    assert.equal(h.detector.isEjected('a'), true);
  });
});

describe('OutlierDetector: endpoint set', () => {
  test('state of a removed endpoint is forgotten; it comes back clean', () => {
    const h = harness();
    h.fail('a', 3);
    h.fail('b', 2);
    h.detector.setEndpoints(['c', 'd']);
    assert.equal(h.detector.isEjected('a'), false);
    assert.equal(h.detector.ejectedCount, 0);
    assert.deepEqual(Object.keys(h.detector.status()), ['c', 'd']);
    assert.ok(h.events.includes('return a removed'));
    h.detector.setEndpoints(['a', 'b', 'c', 'd']);
    assert.deepEqual(h.detector.status().a, { ejected: false, ejectedUntil: null, ejections: 0, consecutiveFailures: 0 });
    h.fail('b', 2);
    assert.equal(h.detector.isEjected('b'), false, 'b counted its failures from zero');
    h.fail('a', 3);
    assert.equal(h.detector.status().a?.ejectedUntil, h.clock.t + 1000, 'a starts again at the base ejection');
  });

  test('setEndpoints with the same set keeps state', () => {
    const h = harness();
    h.fail('a', 3);
    h.fail('b', 2);
    h.detector.setEndpoints(['d', 'c', 'b', 'a']);
    assert.equal(h.detector.isEjected('a'), true);
    assert.equal(h.detector.status().b?.consecutiveFailures, 2);
  });
});

describe('OutlierDetector: configuration', () => {
  test('enabled: false never ejects', () => {
    const h = harness({ enabled: false });
    h.fail('a', 100);
    assert.equal(h.detector.isEjected('a'), false);
    assert.equal(h.detector.enabled, false);
  });

  for (const off of [null, { ...CONFIG, enabled: false }]) {
    test(`disabling (${off === null ? 'null' : 'enabled: false'}) returns ejected endpoints at once`, () => {
      const h = harness();
      h.fail('a', 3);
      h.detector.configure(off);
      assert.equal(h.detector.isEjected('a'), false);
      assert.deepEqual(h.events.slice(1), ['return a disabled']);
    });
  }

  test('reconfiguring keeps ejections and counts; new thresholds apply to the next failure', () => {
    const h = harness();
    h.fail('a', 3);
    h.fail('b', 2);
    h.detector.configure({ ...CONFIG, consecutiveFailures: 10 });
    assert.equal(h.detector.isEjected('a'), true);
    h.fail('b');
    assert.equal(h.detector.isEjected('b'), false);
    assert.equal(h.detector.status().b?.consecutiveFailures, 3);
  });

  const statuses: { status: number; failure: boolean }[] = [
    { status: 502, failure: true },
    { status: 504, failure: true },
    { status: 500, failure: false },
    { status: 200, failure: false },
  ];
  for (const { status, failure } of statuses) {
    test(`isFailureStatus(${status}) = ${failure}`, () => {
      assert.equal(harness().detector.isFailureStatus(status), failure);
    });
  }

  test('status lists every endpoint as plain JSON', () => {
    const h = harness({}, ['a', 'b']);
    h.fail('a', 3);
    h.fail('b', 1);
    assert.deepEqual(JSON.parse(JSON.stringify(h.detector.status())), {
      a: { ejected: true, ejectedUntil: 11_000, ejections: 1, consecutiveFailures: 0 },
      b: { ejected: false, ejectedUntil: null, ejections: 0, consecutiveFailures: 1 },
    });
  });

  test('the default clock is on the epoch scale', () => {
    const detector = new OutlierDetector(CONFIG);
    detector.setEndpoints(['a', 'b']);
    for (let i = 0; i < 3; i++) detector.record('a', 'failure');
    const until = detector.status().a?.ejectedUntil ?? 0;
    assert.ok(Math.abs(until - (Date.now() + 1000)) < 1000, `ejectedUntil ${until} is not near now + 1s`);
  });
});
