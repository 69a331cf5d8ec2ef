import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { anyCircuitOpen, fleetFigures, parseFiguresRecord, SubsetRecorder, type FiguresRecord } from '../../src/state/rollout-figures.ts';
import { judgeStep, quantile } from '../../src/state/rollout-judge.ts';

const W1 = '2026-12-03T10:00:00.000Z';
const W2 = '2026-12-03T10:05:00.000Z';
const NOW = new Date('2026-12-03T10:01:00.000Z');

function recorded(gateway: string, window: string, observations: [string, number, number][], open = false, at = NOW): FiguresRecord {
  const r = new SubsetRecorder(window);
  for (const [subset, status, ms] of observations) r.observe(subset, status, ms);
  return r.record(gateway, at, open);
}

describe('per-subset figures of one gateway', () => {
  test('requests, 5xx and cumulative latency buckets per subset', () => {
    const rec = recorded('gw-a', W1, [['v1', 200, 3], ['v1', 503, 40], ['v2', 200, 20000], ['v2', 404, 7]]);
    assert.deepEqual(rec.subsets.v1, { requests: 2, errors: 1, buckets: [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2] });
    assert.deepEqual(rec.subsets.v2, { requests: 2, errors: 0, buckets: [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2] });
    const parsed = parseFiguresRecord(JSON.stringify(rec));
    assert.ok(parsed.ok);
    // The record's subsets have no prototype (names come from outside); what was parsed back is the same data.
    assert.deepEqual(parsed.value, { ...rec, subsets: { ...rec.subsets } });
  });

  test('a bound is inclusive (Prometheus le): 5 ms falls in the 5 ms bucket', () => {
    assert.equal(recorded('gw', W1, [['v1', 200, 5]]).subsets.v1?.buckets[0], 1);
  });

  test('subset names from outside, prototype names included, are plain keys', () => {
    const rec = recorded('gw', W1, [['__proto__', 200, 1], ['constructor', 500, 1]]);
    const parsed = parseFiguresRecord(JSON.stringify(rec));
    assert.ok(parsed.ok);
    assert.equal(fleetFigures([parsed.value], W1, 'constructor').errors, 1);
  });
});

describe('published records are checked before they are added up', () => {
  const good = recorded('gw-a', W1, [['v1', 200, 3]]);
  const bad: { name: string; value: unknown; error: RegExp }[] = [
    { name: 'more errors than requests', value: { ...good, subsets: { v1: { requests: 1, errors: 2, buckets: Array(12).fill(1) } } }, error: /cannot exceed/ },
    { name: 'buckets that go down', value: { ...good, subsets: { v1: { requests: 2, errors: 0, buckets: [2, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2] } } }, error: /cumulative/ },
    { name: 'a last bucket that is not every request', value: { ...good, subsets: { v1: { requests: 9, errors: 0, buckets: Array(12).fill(1) } } }, error: /last bucket/ },
    { name: 'the wrong number of buckets', value: { ...good, subsets: { v1: { requests: 1, errors: 0, buckets: [1] } } }, error: /buckets/ },
    { name: 'negative counts', value: { ...good, subsets: { v1: { requests: -1, errors: 0, buckets: Array(12).fill(-1) } } }, error: /./ },
    { name: 'an unknown field', value: { ...good, extra: 1 }, error: /extra/ },
  ];
  for (const c of bad) {
    test(`refused: ${c.name}`, () => {
      const parsed = parseFiguresRecord(JSON.stringify(c.value));
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.match(parsed.error, c.error);
    });
  }
  test('refused: not JSON, empty, oversized', () => {
    assert.equal(parseFiguresRecord('x').ok, false);
    assert.equal(parseFiguresRecord(null).ok, false);
    assert.equal(parseFiguresRecord(JSON.stringify({ ...good, gateway: 'g'.repeat(20_000) })).ok, false);
  });
});

describe('the fleet\'s figures for a window', () => {
  test('summed over gateways; other windows left out; a gateway\'s latest record counts once', () => {
    const a1 = recorded('gw-a', W1, [['v2', 200, 3]], false, new Date('2026-12-03T10:00:30.000Z'));
    const a2 = recorded('gw-a', W1, [['v2', 200, 3], ['v2', 500, 3]]);
    const b = recorded('gw-b', W1, [['v2', 200, 300], ['v1', 200, 3]]);
    const old = recorded('gw-c', W2, [['v2', 500, 3]]);
    const v2 = fleetFigures([a1, a2, b, old], W1, 'v2');
    assert.deepEqual([v2.requests, v2.errors, v2.gateways], [3, 1, 2]);
    assert.equal(v2.buckets.at(-1)?.count, 3);
    // Two of three in the 0-5 ms bucket: the median is three quarters into it.
    assert.equal(quantile(v2.buckets, 0.5), 3.75);
  });

  test('an open circuit anywhere in the window counts, not in another window', () => {
    const records = [recorded('gw-a', W1, []), recorded('gw-b', W2, [], true)];
    assert.equal(anyCircuitOpen(records, W1), false);
    assert.equal(anyCircuitOpen(records, W2), true);
  });

  test('what the leader judges: two gateways\' canary errors fail a step one gateway alone would pass', () => {
    const criteria = { maxErrorRateIncrease: 0.5, maxP95Increase: { kind: 'percent' as const, value: 10 }, p95SlackMs: 20, minRequests: 100 };
    const ok = Array.from({ length: 100 }, (): [string, number, number] => ['v2', 200, 3]);
    const failing = Array.from({ length: 100 }, (_, i): [string, number, number] => ['v2', i < 10 ? 502 : 200, 3]);
    const stable = Array.from({ length: 200 }, (): [string, number, number] => ['v1', 200, 3]);
    const records = [recorded('gw-a', W1, [...ok, ...stable]), recorded('gw-b', W1, [...failing, ...stable])];
    const alone = judgeStep(criteria, fleetFigures(records.slice(0, 1), W1, 'v2'), fleetFigures(records.slice(0, 1), W1, 'v1'), false);
    const fleet = judgeStep(criteria, fleetFigures(records, W1, 'v2'), fleetFigures(records, W1, 'v1'), anyCircuitOpen(records, W1));
    assert.equal(alone.verdict, 'pass');
    assert.equal(fleet.verdict, 'fail');
  });
});
