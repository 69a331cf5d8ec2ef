/**
 * Canary weights that name a tag no instance of the service carries are refused (the last good
 * weights stay), because they would silently move every request to the other subsets: `V1=90
 * v2=10` for instances tagged `v1`/`v2` would send everything to v2. A subset whose instances
 * exist but are all unhealthy is fine: its share is spread over the others.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { HealthStatus, Problem, ServiceInstance } from '../../src/core/types.ts';
import { resolveCanary } from '../../src/state/canary.ts';
import { buildEndpoints } from '../../src/state/endpoints.ts';
import { buildSnapshot, type Snapshot } from '../../src/state/snapshot.ts';

const KEY = 'gateway/canary/web';

let port = 31000;
function instance(tags: string[], status: HealthStatus = 'passing', address = '127.0.0.1'): ServiceInstance {
  const id = `web-${port}`;
  return {
    id,
    service: 'web',
    node: 'node-1',
    address,
    port: port++,
    tags: ['urlprefix-/web', ...tags],
    weights: { passing: 1, warning: 1 },
    checks: [{ id: `service:${id}`, status, serviceId: id }],
  };
}

const entry = (weights: Record<string, number>, modifyIndex = 1) => ({ key: KEY, value: JSON.stringify({ weights }), modifyIndex });

describe('resolveCanary: weights on tags no instance carries', () => {
  const cases: {
    name: string;
    instances: ServiceInstance[];
    weights: Record<string, number>;
    accepted: boolean;
    /** Effective weights per tag when accepted. */
    effective?: Record<string, number>;
    error?: RegExp;
  }[] = [
    { name: 'both tags carried', instances: [instance(['v1']), instance(['v2'])], weights: { v1: 90, v2: 10 }, accepted: true, effective: { v1: 90, v2: 10 } },
    {
      name: 'case differs: V1 is not v1',
      instances: [instance(['v1']), instance(['v2'])],
      weights: { V1: 90, v2: 10 },
      accepted: false,
      error: /no instance of the service carries tag "V1" \(tags are case-sensitive; instances carry "v1", "v2"\)/,
    },
    { name: 'both missing', instances: [instance(['v1'])], weights: { a: 50, b: 50 }, accepted: false, error: /carries tags "a", "b"/ },
    { name: 'a typo', instances: [instance(['v1']), instance(['v2'])], weights: { v1: 90, v3: 10 }, accepted: false, error: /tag "v3"/ },
    { name: 'no instance at all', instances: [], weights: { v1: 100 }, accepted: false, error: /tag "v1".*no other tags/ },
    { name: 'the urlprefix- tag is not offered as a known tag', instances: [instance([])], weights: { v1: 100 }, accepted: false, error: /instances carry no other tags/ },
    {
      name: 'a weight of 0 on a missing tag is harmless',
      instances: [instance(['v1'])],
      weights: { v1: 100, v9: 0 },
      accepted: true,
      effective: { v1: 100, v9: 0 },
    },
    {
      name: 'a tag carried only by critical instances: accepted, its share goes to the others',
      instances: [instance(['v1']), instance(['v2'], 'critical')],
      weights: { v1: 90, v2: 10 },
      accepted: true,
      effective: { v1: 100, v2: 0 },
    },
    {
      name: 'every subset unhealthy: accepted, plain balancing (fallback)',
      instances: [instance(['v1'], 'critical'), instance(['v2'], 'critical')],
      weights: { v1: 50, v2: 50 },
      accepted: true,
      effective: { v1: 0, v2: 0 },
    },
    {
      name: 'a tag carried only by an instance that cannot be dialled counts as missing',
      instances: [instance(['v1']), instance(['v2'], 'passing', 'http://x')],
      weights: { v1: 90, v2: 10 },
      accepted: false,
      error: /tag "v2"/,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const problems: Problem[] = [];
      const endpoints = buildEndpoints('web', c.instances, false, []);
      const canary = resolveCanary(entry(c.weights, 3), endpoints, null, problems);
      if (c.accepted) {
        assert.deepEqual(problems, []);
        assert.ok(canary);
        assert.deepEqual(Object.fromEntries(canary.subsets.map((s) => [s.tag, s.effectiveWeight])), c.effective);
      } else {
        assert.equal(canary, null, 'no earlier weights: plain balancing');
        assert.equal(problems.length, 1);
        assert.equal(problems[0]?.kind, 'canary');
        assert.equal(problems[0]?.subject, KEY);
        assert.equal(problems[0]?.keptLastGood, false);
        assert.match(problems[0]?.message ?? '', /invalid canary weights at ModifyIndex 3/);
        assert.match(problems[0]?.message ?? '', c.error ?? /./);
      }
    });
  }

  test('refused weights keep the last good ones, re-applied to the endpoints of now', () => {
    const endpoints = buildEndpoints('web', [instance(['v1']), instance(['v2'])], false, []);
    const good = resolveCanary(entry({ v1: 80, v2: 20 }, 5), endpoints, null, []);
    assert.ok(good);
    const problems: Problem[] = [];
    const kept = resolveCanary(entry({ V1: 90, v2: 10 }, 6), endpoints, good, problems);
    assert.deepEqual(kept?.weights, { v1: 80, v2: 20 });
    assert.equal(kept?.modifyIndex, 5);
    assert.equal(problems[0]?.keptLastGood, true);
  });

  test('weights of another key are never kept for this one', () => {
    const endpoints = buildEndpoints('web', [instance(['v1'])], false, []);
    const other = resolveCanary({ key: 'gateway/canary/api', value: '{"weights":{"v1":100}}', modifyIndex: 1 }, endpoints, null, []);
    const problems: Problem[] = [];
    assert.equal(resolveCanary(entry({ nope: 100 }), endpoints, other, problems), null);
    assert.equal(problems[0]?.keptLastGood, false);
  });

  test('deleting the key returns to plain balancing', () => {
    assert.equal(resolveCanary(undefined, [], null, []), null);
  });
});

describe('buildSnapshot: missing canary tags across rebuilds', () => {
  const OPTIONS = { allowWarning: false, kvPrefix: 'gateway/' };
  const v1 = instance(['v1']);
  const v2 = instance(['v2']);
  const build = (weights: Record<string, number>, modifyIndex: number, instances: ServiceInstance[], previous?: Snapshot): Snapshot =>
    buildSnapshot({ catalog: { web: ['urlprefix-/web'] }, health: new Map([['web', instances]]), kv: [entry(weights, modifyIndex)] }, OPTIONS, previous);

  test('good, then V1=90 v2=10 (kept), then v2 critical (still kept, share moves), then good again', () => {
    const s1 = build({ v1: 50, v2: 50 }, 1, [v1, v2]);
    assert.deepEqual(s1.services.web?.canary?.weights, { v1: 50, v2: 50 });

    const s2 = build({ V1: 90, v2: 10 }, 2, [v1, v2], s1);
    assert.deepEqual(s2.services.web?.canary?.weights, { v1: 50, v2: 50 }, 'the previous weights stay');
    assert.ok(s2.problems.some((p) => p.kind === 'canary' && p.keptLastGood === true && /"V1"/.test(p.message)));

    const s3 = build({ V1: 90, v2: 10 }, 2, [v1, { ...v2, checks: [{ id: 'service:x', status: 'critical', serviceId: v2.id }] }], s2);
    assert.deepEqual(s3.services.web?.canary?.weights, { v1: 50, v2: 50 });
    assert.deepEqual(s3.services.web?.canary?.subsets.map((s) => s.effectiveWeight), [100, 0]);

    const s4 = build({ v1: 90, v2: 10 }, 3, [v1, v2], s3);
    assert.deepEqual(s4.services.web?.canary?.weights, { v1: 90, v2: 10 });
    assert.ok(!s4.problems.some((p) => p.kind === 'canary'));
  });

  test('a tag that leaves with its last instance: the unchanged value is reported, its weights stay (v1 gets the traffic)', () => {
    const s1 = build({ v1: 50, v2: 50 }, 1, [v1, v2]);
    // v2 is deregistered: the same value (same ModifyIndex) now names a missing tag.
    const s2 = build({ v1: 50, v2: 50 }, 1, [v1], s1);
    assert.ok(s2.problems.some((p) => p.kind === 'canary' && /tag "v2"/.test(p.message)), 'the operator is told');
    assert.deepEqual(s2.services.web?.canary?.weights, { v1: 50, v2: 50 }, 'the last good weights stay: v1 gets all traffic');
    assert.deepEqual(s2.services.web?.canary?.subsets.map((s) => s.effectiveWeight), [100, 0]);
  });
});
