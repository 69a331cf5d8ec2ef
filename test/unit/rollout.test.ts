import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { newRollout, parseP95Increase, parseRolloutValue, type Rollout, type RolloutCriteria } from '../../src/policy/rollout.ts';
import { allowedP95, judgeStep, quantile, type SubsetFigures } from '../../src/state/rollout-judge.ts';
import { manualAction, stepRollout, weightsAt } from '../../src/state/rollout-steps.ts';

const T0 = new Date('2026-12-03T10:00:00.000Z');
const later = (ms: number): Date => new Date(T0.getTime() + ms);

function rollout(flags: Partial<Parameters<typeof newRollout>[1]> = {}): Rollout {
  const made = newRollout('web', { canary: 'v2', stable: 'v1', soak: '1m', ...flags }, T0, 'gw-a');
  assert.ok(made.ok, made.ok ? '' : made.error);
  return made.value;
}

/** `requests` requests of which `errors` failed, all answered in about `ms`. */
function figures(requests: number, errors: number, ms: number): SubsetFigures {
  const bounds = [5, 10, 25, 50, 100, 250, 500, 1000, Infinity];
  return { requests, errors, buckets: bounds.map((le) => ({ le, count: ms <= le ? requests : 0 })) };
}

const CRITERIA: RolloutCriteria = { maxErrorRateIncrease: 0.5, maxP95Increase: { kind: 'percent', value: 10 }, p95SlackMs: 20, minRequests: 100 };

describe('cgw rollout start: flags become a rollout at its first step', () => {
  test('defaults: steps 5,25,50,75,100, soak 5m, criteria as documented', () => {
    const made = newRollout('web', { canary: 'v2', stable: 'v1' }, T0);
    assert.ok(made.ok);
    assert.deepEqual([made.value.steps, made.value.soakMs, made.value.criteria, made.value.state, made.value.step], [[5, 25, 50, 75, 100], 300_000, CRITERIA, 'progressing', 0]);
    assert.deepEqual(made.value.history.map((h) => [h.event, h.weight]), [['started', 5]]);
  });

  const refused: { flags: Partial<Parameters<typeof newRollout>[1]>; error: RegExp }[] = [
    { flags: { steps: '5,25,50' }, error: /last step must be 100/ },
    { flags: { steps: '50,25,100' }, error: /must increase/ },
    { flags: { steps: '0,100' }, error: /at least 1/ },
    { flags: { steps: '5,x,100' }, error: /--steps/ },
    { flags: { steps: '5,1e2' }, error: /--steps/ },
    { flags: { steps: '-5,100' }, error: /--steps/ },
    { flags: { soak: 'soon' }, error: /--soak/ },
    { flags: { soak: '10ms' }, error: /at least 1s/ },
    { flags: { maxErrorRateIncrease: '-1' }, error: /--max-error-rate-increase/ },
    { flags: { maxErrorRateIncrease: '101' }, error: /100/ },
    { flags: { maxP95Increase: 'fast' }, error: /--max-p95-increase/ },
    { flags: { minRequests: '1.5' }, error: /--min-requests/ },
    { flags: { stable: 'v2' }, error: /different tags/ },
    { flags: { canary: 'a b' }, error: /spaces/ },
    { flags: { canary: '' }, error: /empty/ },
  ];
  for (const c of refused) {
    test(`refused: ${JSON.stringify(c.flags)}`, () => {
      const made = newRollout('web', { canary: 'v2', stable: 'v1', ...c.flags }, T0);
      assert.equal(made.ok, false);
      if (!made.ok) assert.match(made.error, c.error);
    });
  }

  test('--max-p95-increase as a percentage or a duration', () => {
    assert.deepEqual(parseP95Increase('10%'), { kind: 'percent', value: 10 });
    assert.deepEqual(parseP95Increase('50ms'), { kind: 'ms', value: 50 });
    assert.equal(parseP95Increase('%'), undefined);
    assert.equal(parseP95Increase('-3%'), undefined);
  });

  test('consumers: split, trimmed, repeated ones once; "__proto__" is a name like any other', () => {
    const r = rollout({ consumers: 'acme, beta,,acme,__proto__' });
    assert.deepEqual(r.consumers, ['acme', 'beta', '__proto__']);
  });
});

describe('rollout documents in KV', () => {
  test('what start writes reads back the same', () => {
    const r = rollout();
    const parsed = parseRolloutValue(JSON.stringify(r));
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.value, r);
  });

  const bad: { name: string; value: string; error: RegExp }[] = [
    { name: 'not JSON', value: 'progressing', error: /not JSON/ },
    { name: 'empty', value: ' ', error: /empty/ },
    { name: 'an unknown state', value: JSON.stringify({ ...rollout(), state: 'done' }), error: /state/ },
    { name: 'a step past the last', value: JSON.stringify({ ...rollout(), step: 9 }), error: /past the last step/ },
    { name: 'an unknown field', value: JSON.stringify({ ...rollout(), owner: 'x' }), error: /owner/ },
    { name: 'prototype keys', value: '{"__proto__": {"state": "promoted"}, "constructor": 1}', error: /./ },
    { name: 'deep nesting', value: `${'['.repeat(50_000)}${']'.repeat(50_000)}`, error: /./ },
    { name: 'an oversized value', value: JSON.stringify({ ...rollout(), service: 'x'.repeat(300_000) }), error: /refused before parsing|larger/ },
  ];
  for (const c of bad) {
    test(`refused: ${c.name}`, () => {
      const parsed = parseRolloutValue(c.value);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.match(parsed.error, c.error);
    });
  }
});

describe('judging a step: canary against stable in the same window', () => {
  const cases: { name: string; canary: SubsetFigures; stable: SubsetFigures; open?: boolean; verdict: string; criterion?: string; reason?: RegExp }[] = [
    { name: 'healthy canary', canary: figures(200, 0, 20), stable: figures(2000, 0, 20), verdict: 'pass' },
    { name: 'an open circuit fails before anything else', canary: figures(5, 0, 20), stable: figures(2000, 0, 20), open: true, verdict: 'fail', criterion: 'circuit' },
    { name: 'too few canary requests waits', canary: figures(99, 50, 900), stable: figures(2000, 0, 20), verdict: 'wait', reason: /99 canary requests.*at least 100/ },
    { name: 'errors 1 point above stable fail', canary: figures(200, 3, 20), stable: figures(2000, 10, 20), verdict: 'fail', criterion: 'error-rate', reason: /1\.5%.*1 points above.*0\.5%/ },
    { name: 'errors within 0.5 points pass', canary: figures(1000, 9, 20), stable: figures(2000, 10, 20), verdict: 'pass' },
    { name: 'a bad stable does not fail a canary as bad', canary: figures(200, 20, 20), stable: figures(2000, 200, 20), verdict: 'pass' },
    { name: 'slow canary fails on p95', canary: figures(200, 0, 480), stable: figures(2000, 0, 90), verdict: 'fail', criterion: 'p95', reason: /p95/ },
    { name: 'on a fast service the slack absorbs noise: 4 ms vs 9 ms passes', canary: figures(200, 0, 9), stable: figures(2000, 0, 4), verdict: 'pass' },
    { name: 'no stable traffic: judged on errors only', canary: figures(200, 0, 900), stable: figures(0, 0, 0), verdict: 'pass' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const v = judgeStep(CRITERIA, c.canary, c.stable, c.open ?? false);
      assert.equal(v.verdict, c.verdict, JSON.stringify(v));
      if (v.verdict === 'fail') assert.equal(v.criterion, c.criterion);
      if (c.reason && v.verdict !== 'pass') assert.match(v.reason, c.reason);
    });
  }

  test('the allowed p95 is stable plus the larger of the increase and the slack', () => {
    assert.equal(allowedP95(CRITERIA, 1000), 1100);
    assert.equal(allowedP95(CRITERIA, 50), 70);
    assert.equal(allowedP95({ ...CRITERIA, maxP95Increase: { kind: 'ms', value: 50 } }, 100), 150);
  });

  test('quantiles of a cumulative histogram, interpolated within the bucket', () => {
    const buckets = [
      { le: 10, count: 50 },
      { le: 20, count: 100 },
      { le: Infinity, count: 100 },
    ];
    assert.equal(quantile(buckets, 0.5), 10);
    assert.equal(quantile(buckets, 0.95), 19);
    assert.equal(quantile([{ le: 10, count: 0 }, { le: Infinity, count: 0 }], 0.95), null);
    assert.equal(quantile([{ le: 10, count: 1 }, { le: Infinity, count: 100 }], 0.95), 10, 'above the last finite bound: that bound');
  });
});

describe('what a rollout does next', () => {
  const pass = judgeStep(CRITERIA, figures(200, 0, 20), figures(2000, 0, 20), false);
  const fail = judgeStep(CRITERIA, figures(200, 50, 20), figures(2000, 0, 20), false);
  const wait = judgeStep(CRITERIA, figures(10, 0, 20), figures(2000, 0, 20), false);

  test('a pass before the soak ends changes nothing; after it, the next step with its weights', () => {
    const r = rollout();
    assert.equal(stepRollout(r, pass, later(30_000)), null);
    const change = stepRollout(r, pass, later(60_000), 'gw-a');
    assert.ok(change);
    assert.deepEqual([change.rollout.step, change.rollout.stepStartedAt, change.weights], [1, later(60_000).toISOString(), { weights: { v2: 25, v1: 75 } }]);
    assert.deepEqual(change.rollout.history.at(-1)?.event, 'advanced');
  });

  test('a failure rolls back at once, mid-window, with the criterion and figures recorded', () => {
    const change = stepRollout(rollout(), fail, later(5_000), 'gw-b');
    assert.ok(change);
    assert.equal(change.rollout.state, 'rolled-back');
    assert.deepEqual(change.weights, { weights: { v2: 0, v1: 100 } });
    const last = change.rollout.history.at(-1);
    assert.match(last?.reason ?? '', /^error-rate: canary error rate 25%/);
    assert.equal(last?.figures?.canaryErrorRate, 25);
    assert.equal(last?.by, 'gw-b');
  });

  test('too little traffic at the end of the soak is noted once per step, and the step stays', () => {
    const first = stepRollout(rollout(), wait, later(60_000));
    assert.ok(first);
    assert.deepEqual([first.rollout.step, first.weights, first.rollout.history.at(-1)?.event], [0, null, 'waiting']);
    assert.equal(stepRollout(first.rollout, wait, later(120_000)), null);
  });

  test('passing the last step promotes: canary 100, stable 0', () => {
    let r = rollout({ steps: '50,100' });
    r = stepRollout(r, pass, later(60_000))?.rollout as Rollout;
    const change = stepRollout(r, pass, later(120_000));
    assert.deepEqual([change?.rollout.state, change?.weights], ['promoted', { weights: { v2: 100, v1: 0 } }]);
  });

  test('ended or paused rollouts are not stepped', () => {
    const paused = manualAction(rollout(), 'pause', later(1));
    assert.ok(paused && 'rollout' in paused);
    assert.equal(stepRollout(paused.rollout, fail, later(90_000)), null);
  });

  test('promote, abort, pause and resume by hand; refused where they do not apply', () => {
    const r = rollout();
    const promoted = manualAction(r, 'promote', later(1));
    assert.ok(promoted && 'rollout' in promoted);
    assert.deepEqual([promoted.rollout.state, promoted.weights], ['promoted', weightsAt(r, 100)]);
    assert.match((manualAction(promoted.rollout, 'abort', later(2)) as { refused: string }).refused, /has ended \(promoted\)/);
    const aborted = manualAction(r, 'abort', later(1));
    assert.ok(aborted && 'rollout' in aborted);
    assert.deepEqual([aborted.rollout.state, aborted.weights], ['aborted', weightsAt(r, 0)]);
    assert.match((manualAction(r, 'resume', later(1)) as { refused: string }).refused, /not paused/);
    const paused = manualAction(r, 'pause', later(1));
    assert.ok(paused && 'rollout' in paused);
    const resumed = manualAction(paused.rollout, 'resume', later(10_000));
    assert.ok(resumed && 'rollout' in resumed);
    assert.deepEqual([resumed.rollout.state, resumed.rollout.stepStartedAt], ['progressing', later(10_000).toISOString()]);
  });

  test('history is bounded', () => {
    let r = rollout({ steps: '1,100' });
    for (let i = 0; i < 250; i++) {
      const p = manualAction(r, 'pause', later(i * 2 + 1)) as { rollout: Rollout };
      r = (manualAction(p.rollout, 'resume', later(i * 2 + 2)) as { rollout: Rollout }).rollout;
    }
    assert.equal(r.history.length, 200);
    assert.ok(parseRolloutValue(JSON.stringify(r)).ok);
  });
});
