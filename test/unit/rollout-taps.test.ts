/**
 * What a data plane counts for a rollout: the snapshot's view of rollouts under way, the taps that
 * count per subset in the step's window (kept across health changes, new on a new window), the
 * consumers sent to the canary first, and the workers' counts added up for the gateway's record.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { mergeRolloutFigures } from '../../src/admin/reports.ts';
import type { ConsulViews, DataPlaneReport, Problem, RolloutFiguresReport } from '../../src/core/types.ts';
import { resolvePolicies } from '../../src/policy/resolve.ts';
import { newRollout } from '../../src/policy/rollout.ts';
import { RolloutTaps } from '../../src/runtime/rollout-taps.ts';
import { rolloutsInForce } from '../../src/state/rollouts-in-force.ts';
import { buildSnapshot, type Snapshot } from '../../src/state/snapshot.ts';
import { webInstance } from '../helpers/instances.ts';

const PREFIX = 'gateway/';
const T0 = new Date('2026-12-03T08:00:00.000Z');

function rolloutValue(service: string, extra: Record<string, unknown> = {}): string {
  const made = newRollout(service, { canary: 'v2', stable: 'v1', steps: '10,100', consumers: 'alice,svc-bot' }, T0);
  assert.ok(made.ok);
  return JSON.stringify({ ...made.value, ...extra });
}

function views(kv: { key: string; value: string }[], ports = [{ port: 9001, tags: ['v1'] }, { port: 9002, tags: ['v2'] }]): ConsulViews {
  return {
    catalog: { web: ['urlprefix-/web', 'v1', 'v2'] },
    health: new Map([['web', ports.map((p) => webInstance({ port: p.port, tags: ['urlprefix-/web', ...p.tags] }))]]),
    kv: kv.map((e, i) => ({ ...e, modifyIndex: 10 + i })),
  };
}

function snapshotOf(v: ConsulViews, previous?: Snapshot): Snapshot {
  return buildSnapshot(v, { allowWarning: false, kvPrefix: PREFIX }, previous, resolvePolicies([], v.kv, PREFIX, previous?.policies));
}

describe('rollouts in force (from KV)', () => {
  const cases: { name: string; kv: { key: string; value: string }[]; services: string[]; problem?: RegExp }[] = [
    { name: 'a progressing rollout of a routed service', kv: [{ key: `${PREFIX}rollouts/web`, value: rolloutValue('web') }], services: ['web'] },
    { name: 'an ended rollout counts nothing', kv: [{ key: `${PREFIX}rollouts/web`, value: rolloutValue('web', { state: 'promoted' }) }], services: [] },
    { name: 'garbage is a problem', kv: [{ key: `${PREFIX}rollouts/web`, value: '{"state":' }], services: [], problem: /invalid rollout at ModifyIndex 10: not JSON/ },
    { name: 'a document naming another service', kv: [{ key: `${PREFIX}rollouts/web`, value: rolloutValue('shop') }], services: [], problem: /names service "shop" but is stored under "web"/ },
    { name: 'a service the gateway does not route', kv: [{ key: `${PREFIX}rollouts/shop`, value: rolloutValue('shop') }], services: [], problem: /not routed by the gateway/ },
    { name: 'prototype names', kv: [{ key: `${PREFIX}rollouts/__proto__`, value: rolloutValue('__proto__') }, { key: `${PREFIX}rollouts/constructor`, value: '{}' }], services: [], problem: /not routed|invalid/ },
    { name: 'keys below a service are not rollouts', kv: [{ key: `${PREFIX}rollouts/web/extra`, value: 'x' }], services: [] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const problems: Problem[] = [];
      const entries = c.kv.map((e, i) => ({ ...e, modifyIndex: 10 + i }));
      const out = rolloutsInForce(entries, PREFIX, (s) => s === 'web', problems);
      assert.deepEqual(Object.keys(out), c.services);
      assert.equal(Object.getPrototypeOf(out), null);
      if (c.problem) assert.match(problems.map((p) => p.message).join('\n'), c.problem);
      else assert.deepEqual(problems, []);
    });
  }

  test('the snapshot carries it with its window, step weight and consumers', () => {
    const snap = snapshotOf(views([{ key: `${PREFIX}rollouts/web`, value: rolloutValue('web') }]));
    const r = snap.rollouts.web;
    assert.ok(r);
    assert.deepEqual([r.canary, r.stable, r.window, r.weight, r.consumers], ['v2', 'v1', T0.toISOString(), 10, ['alice', 'svc-bot']]);
  });
});

describe('rollout taps', () => {
  const doc = { key: `${PREFIX}rollouts/web`, value: rolloutValue('web') };
  const first = snapshotOf(views([doc]));

  test('answers are counted by the subset of the endpoint that gave them; others are not', () => {
    const taps = new RolloutTaps();
    taps.apply(first);
    const tap = taps.tap('web');
    assert.ok(tap);
    tap.observe('127.0.0.1:9001', 200, 3);
    tap.observe('127.0.0.1:9002', 503, 40);
    tap.observe('127.0.0.1:9999', 500, 1);
    const report = taps.report(() => false).web as RolloutFiguresReport;
    assert.equal(report.window, T0.toISOString());
    assert.deepEqual({ ...report.subsets }, {
      v1: { requests: 1, errors: 0, buckets: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1] },
      v2: { requests: 1, errors: 1, buckets: [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1] },
    });
    assert.equal(report.canaryCircuitOpen, false);
  });

  test('a health change keeps the counts; a new window starts from zero; an ended rollout drops the tap', () => {
    const taps = new RolloutTaps();
    taps.apply(first);
    taps.tap('web')?.observe('127.0.0.1:9002', 200, 1);
    const unhealthy = snapshotOf(views([doc], [{ port: 9001, tags: ['v1'] }, { port: 9002, tags: ['v2'] }, { port: 9003, tags: ['v2'] }]), first);
    taps.apply(unhealthy);
    taps.tap('web')?.observe('127.0.0.1:9003', 200, 1);
    assert.equal(taps.report(() => false).web?.subsets.v2?.requests, 2, 'the new instance counts for its subset, earlier counts stay');
    const next = snapshotOf(views([{ ...doc, value: rolloutValue('web', { step: 1, stepStartedAt: '2026-12-03T08:05:00.000Z' }) }]), unhealthy);
    taps.apply(next);
    assert.deepEqual({ ...taps.report(() => false).web?.subsets }, {});
    taps.apply(snapshotOf(views([{ ...doc, value: rolloutValue('web', { state: 'aborted' }) }]), next));
    assert.equal(taps.size, 0);
  });

  test('the canary circuit is open when every canary endpoint is ejected', () => {
    const taps = new RolloutTaps();
    taps.apply(first);
    assert.equal(taps.report((_, key) => key === '127.0.0.1:9002').web?.canaryCircuitOpen, true);
    assert.equal(taps.report((_, key) => key === '127.0.0.1:9001').web?.canaryCircuitOpen, false);
  });

  test('targeted consumers (API-key ids or subjects) get the canary; nobody else is steered', () => {
    const taps = new RolloutTaps();
    taps.apply(first);
    const tap = taps.tap('web');
    assert.equal(tap?.targetFor('alice', 'alice'), 'v2');
    assert.equal(tap?.targetFor(null, 'svc-bot'), 'v2');
    for (const [consumer, subject] of [['bob', 'bob'], [null, '__proto__'], [null, 'constructor'], [null, 'Alice']] as const) assert.equal(tap?.targetFor(consumer, subject), undefined);
  });
});

describe('a gateway record from its workers', () => {
  const report = (rollouts: Record<string, RolloutFiguresReport>): DataPlaneReport => ({
    version: 'v',
    limits: { maxConnections: 1, openConnections: 0, connectionsRefused: { count: 0, lastAt: null }, upstreamBusy: {} },
    rateLimiter: 'none',
    circuitsNotClosed: [],
    services: {},
    tls: null,
    websocket: { open: 0, byRoute: {} },
    rollouts,
  });
  const sub = (requests: number, errors: number) => ({ requests, errors, buckets: [requests, requests, requests, requests, requests, requests, requests, requests, requests, requests, requests, requests] });

  test('the same window adds up per subset; an older window is left out; one open circuit counts', () => {
    const merged = mergeRolloutFigures([
      report({ web: { window: 'w2', subsets: { v1: sub(5, 0), v2: sub(2, 1) }, canaryCircuitOpen: false } }),
      report({ web: { window: 'w2', subsets: { v2: sub(3, 0) }, canaryCircuitOpen: true } }),
      report({ web: { window: 'w1', subsets: { v2: sub(100, 100) }, canaryCircuitOpen: false } }),
    ]);
    assert.deepEqual(merged.web?.subsets.v2, sub(5, 1));
    assert.deepEqual(merged.web?.subsets.v1, sub(5, 0));
    assert.equal(merged.web?.canaryCircuitOpen, true);
  });
});
