/**
 * Guarded configuration changes, the pure parts: the guard document read as outside input, the
 * keys a guard may write back, `--guard` and its criteria flags, and what routes served between
 * two samples of the per-route counts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { SubsetCounts } from '../../src/core/types.ts';
import { guardableKey, parseGuardValue, valueHash } from '../../src/policy/guard.ts';
import { guardCriteria } from '../../src/policy/rollout.ts';
import { figuresBetween } from '../../src/state/guard-figures.ts';

const PREFIX = 'gateway/';
const CRITERIA = { maxErrorRateIncrease: 0.5, maxP95Increase: { kind: 'percent', value: 10 }, p95SlackMs: 20, minRequests: 100 };
const GOOD = {
  id: 'push-1',
  createdAt: '2026-12-03T08:00:00.000Z',
  windowMs: 60_000,
  criteria: CRITERIA,
  changes: [{ key: 'gateway/policies/web', previous: '{"appliesTo":"defaults"}', written: valueHash('{}') }],
  state: 'watching',
};

describe('guard documents', () => {
  test('a good guard parses', () => {
    const parsed = parseGuardValue(JSON.stringify(GOOD));
    assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
  });
  const refused: { name: string; value: string; error: RegExp }[] = [
    { name: 'empty', value: '', error: /empty/ },
    { name: 'not JSON', value: '{"id":', error: /not JSON/ },
    { name: 'deeply nested', value: `${'['.repeat(5000)}${']'.repeat(5000)}`, error: /refused before parsing/ },
    { name: 'an unknown field', value: JSON.stringify({ ...GOOD, extra: 1 }), error: /extra|Unrecognized/i },
    { name: 'a prototype key', value: JSON.stringify(GOOD).replace('"state"', '"__proto__":{"polluted":true},"state"'), error: /__proto__|Unrecognized/i },
    { name: 'an id with a slash', value: JSON.stringify({ ...GOOD, id: '../x' }), error: /guard id/ },
    { name: 'a window under 1s', value: JSON.stringify({ ...GOOD, windowMs: 10 }), error: /at least 1s/ },
    { name: 'no change', value: JSON.stringify({ ...GOOD, changes: [] }), error: /at least one change/ },
    { name: 'a written hash that is not sha256', value: JSON.stringify({ ...GOOD, changes: [{ key: 'gateway/policies/web', previous: null, written: 'abc' }] }), error: /sha256/ },
    { name: 'an unknown state', value: JSON.stringify({ ...GOOD, state: 'done' }), error: /state/ },
  ];
  for (const c of refused) {
    test(`refused: ${c.name}`, () => {
      const parsed = parseGuardValue(c.value);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.match(parsed.error, c.error);
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
    });
  }
});

describe('keys a guard may write back', () => {
  const cases: [string, boolean][] = [
    ['gateway/policies/web', true],
    ['gateway/routes/api', true],
    ['gateway/canary/web', true],
    ['gateway/consumers/alice', false],
    ['gateway/certs/default', false],
    ['gateway/rollouts/web', false],
    ['gateway/guards/x', false],
    ['gateway/policies/a/b', false],
    ['gateway/policies/..', false],
    ['gateway/policies/', false],
    ['elsewhere/policies/web', false],
    ['gateway-runtime/history/1', false],
  ];
  for (const [key, ok] of cases) test(`${key}: ${ok ? 'yes' : 'no'}`, () => assert.equal(guardableKey(key, PREFIX), ok));
});

describe('--guard and its criteria', () => {
  test('the rollout defaults apply', () => {
    const parsed = guardCriteria('5m', {});
    assert.ok(parsed.ok);
    assert.equal(parsed.value.windowMs, 300_000);
    assert.equal(parsed.value.criteria.minRequests, 100);
  });
  for (const [window, flags, error] of [
    ['soon', {}, /--guard: "soon"/],
    ['500ms', {}, /between 1s and 1h/],
    ['2h', {}, /between 1s and 1h/],
    ['1m', { minRequests: 'many' }, /--min-requests/],
    ['1m', { maxP95Increase: 'fast' }, /--max-p95-increase/],
  ] as const) {
    test(`refused: ${window} ${JSON.stringify(flags)}`, () => {
      const parsed = guardCriteria(window, flags);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.match(parsed.error, error);
    });
  }
});

describe('what routes served between two samples', () => {
  const counts = (requests: number, errors: number): SubsetCounts => ({ requests, errors, buckets: [requests, requests, requests, requests, requests, requests, requests, requests, requests, requests, requests, requests] });
  const before = { '/web': counts(100, 1), '/api': counts(50, 0) };
  const after = { '/web': counts(160, 31), '/api': counts(90, 0), '/new': counts(5, 5) };

  test('the difference of the chosen routes', () => {
    const f = figuresBetween(before, after, new Set(['/web']));
    assert.deepEqual([f.requests, f.errors, f.buckets.at(-1)?.count], [60, 30, 60]);
  });
  test('every route when none is chosen; a route new since the first sample counts whole', () => {
    const f = figuresBetween(before, after, null);
    assert.deepEqual([f.requests, f.errors], [105, 35]);
  });
  test('counts that went down (a worker replaced) are floored at 0, never negative traffic', () => {
    const f = figuresBetween(after, before, null);
    assert.deepEqual([f.requests, f.errors], [0, 0]);
  });
  test('prototype names are routes like any other', () => {
    const from = JSON.parse('{"__proto__":{"requests":1,"errors":0,"buckets":[1,1,1,1,1,1,1,1,1,1,1,1]}}') as Record<string, SubsetCounts>;
    const to = JSON.parse('{"__proto__":{"requests":3,"errors":1,"buckets":[3,3,3,3,3,3,3,3,3,3,3,3]}}') as Record<string, SubsetCounts>;
    assert.equal(figuresBetween(from, to, null).requests, 2);
  });
});
