/**
 * A build reuses what did not change: a health change of one service rebuilds that service only
 * (routes and every other service are the same objects), and the result always equals a build
 * from scratch (same version, same content).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { ConsulViews, KvEntry, ServiceInstance } from '../../src/core/types.ts';
import { buildSnapshot, type BuildOptions } from '../../src/state/snapshot.ts';
import { resolvePolicies } from '../../src/policy/resolve.ts';

const OPTIONS: BuildOptions = { allowWarning: false, kvPrefix: 'gateway/' };

function instance(service: string, id: string, port: number, status: 'passing' | 'critical' = 'passing', tags: string[] = []): ServiceInstance {
  return { id, service, node: 'n1', address: '127.0.0.1', port, tags, weights: { passing: 1, warning: 1 }, checks: [{ id: `c:${id}`, status, serviceId: id }] };
}

function world(n: number): { catalog: Record<string, string[]>; health: Map<string, ServiceInstance[]> } {
  const catalog: Record<string, string[]> = {};
  const health = new Map<string, ServiceInstance[]>();
  for (let i = 0; i < n; i++) {
    catalog[`svc-${i}`] = [`urlprefix-/svc-${i}`, 'v1'];
    health.set(`svc-${i}`, [instance(`svc-${i}`, `a${i}`, 10_000 + i, 'passing', ['v1'])]);
  }
  return { catalog, health };
}

describe('incremental snapshot builds', () => {
  test('a health change of one service: that service rebuilt, routes and every other service reused, equal to a fresh build', () => {
    const { catalog, health } = world(50);
    const kv: KvEntry[] = [];
    const first = buildSnapshot({ catalog, health, kv }, OPTIONS);
    const changed = new Map(health);
    changed.set('svc-7', [instance('svc-7', 'a7', 10_007, 'critical', ['v1'])]);
    const views: ConsulViews = { catalog, health: changed, kv };
    const second = buildSnapshot(views, OPTIONS, first);
    assert.notEqual(second.version, first.version);
    assert.equal(second.routes, first.routes, 'routes reused');
    for (const name of Object.keys(first.services)) {
      if (name === 'svc-7') assert.notEqual(second.services[name], first.services[name]);
      else assert.equal(second.services[name], first.services[name], `${name} reused`);
    }
    const fresh = buildSnapshot(views, OPTIONS);
    assert.equal(second.version, fresh.version);
    assert.deepEqual(JSON.parse(JSON.stringify(second)), JSON.parse(JSON.stringify(fresh)));
  });

  test('nothing changed: the same version; a change back: the first version again', () => {
    const { catalog, health } = world(10);
    const kv: KvEntry[] = [];
    const a = buildSnapshot({ catalog, health, kv }, OPTIONS);
    assert.equal(buildSnapshot({ catalog, health, kv }, OPTIONS, a).version, a.version);
    const changed = new Map(health);
    changed.set('svc-3', []);
    const b = buildSnapshot({ catalog, health: changed, kv }, OPTIONS, a);
    const back = buildSnapshot({ catalog, health: new Map(health), kv }, OPTIONS, b);
    assert.equal(back.version, a.version);
  });

  const configChanges: { name: string; change: (v: ConsulViews) => { views: ConsulViews; policies?: ReturnType<typeof resolvePolicies> } }[] = [
    {
      name: 'a canary value for one service',
      change: (v) => ({ views: { ...v, kv: [{ key: 'gateway/canary/svc-2', value: '{"weights":{"v1":100}}', modifyIndex: 9 }] } }),
    },
    { name: 'a new service in the catalog', change: (v) => ({ views: { ...v, catalog: { ...v.catalog, 'svc-new': ['urlprefix-/new'] } } }) },
    {
      name: 'a policy for one service',
      change: (v) => ({ views: v, policies: resolvePolicies([], [{ key: 'gateway/policies/p', value: 'appliesTo: {service: svc-1}\ntimeouts: {connect: 1s}\n', modifyIndex: 3 }], 'gateway/', undefined) }),
    },
  ];
  for (const c of configChanges) {
    test(`${c.name}: equal to a fresh build, unaffected services reused`, () => {
      const { catalog, health } = world(10);
      const base: ConsulViews = { catalog, health, kv: [] };
      const first = buildSnapshot(base, OPTIONS);
      const { views, policies } = c.change(base);
      const next = buildSnapshot(views, OPTIONS, first, policies);
      const fresh = buildSnapshot(views, OPTIONS, undefined, policies);
      assert.equal(next.version, fresh.version);
      assert.deepEqual(JSON.parse(JSON.stringify(next)), JSON.parse(JSON.stringify(fresh)));
      assert.equal(next.services['svc-5'], first.services['svc-5'], 'an untouched service is the same object');
    });
  }
});

test('a refused canary value that keeps the last good weights is a new version (its problem must show)', () => {
  const catalog = { web: ['urlprefix-/web'] };
  const health = new Map([['web', [instance('web', 'a', 1, 'passing', ['v1']), instance('web', 'b', 2, 'passing', ['v2'])]]]);
  const good = buildSnapshot({ catalog, health, kv: [{ key: 'gateway/canary/web', value: '{"weights":{"v1":50,"v2":50}}', modifyIndex: 1 }] }, OPTIONS);
  const bad = buildSnapshot({ catalog, health, kv: [{ key: 'gateway/canary/web', value: 'not json', modifyIndex: 2 }] }, OPTIONS, good);
  assert.notEqual(bad.version, good.version);
  assert.ok(bad.problems.some((p) => p.kind === 'canary' && p.keptLastGood));
  assert.deepEqual(bad.services.web?.canary?.weights, { v1: 50, v2: 50 });
});

describe('builds told which services changed health', () => {
  /** Instances of every kind a change can produce: healthy, critical, gone, and one that cannot be dialled (a problem). */
  const variants = (name: string, i: number): ServiceInstance[][] => [
    [instance(name, `a${i}`, 10_000 + i, 'passing', ['v1'])],
    [instance(name, `a${i}`, 10_000 + i, 'critical', ['v1'])],
    [],
    [instance(name, `a${i}`, 10_000 + i, 'passing', ['v1']), instance(name, `bad${i}`, 0)],
  ];

  test('300 random health changes, one to three services each: every build equals a fresh one, and only the named services are other objects', () => {
    const { catalog, health } = world(40);
    const kv: KvEntry[] = [];
    const views: ConsulViews = { catalog, health, kv };
    let seed = 7;
    const random = (n: number): number => {
      seed = (Math.imul(seed, 1_103_515_245) + 12_345) >>> 0;
      return (seed >>> 16) % n;
    };
    let snapshot = buildSnapshot(views, OPTIONS);
    let withProblems = 0;
    for (let step = 0; step < 300; step++) {
      const names = new Set<string>();
      for (let k = 0; k <= random(3); k++) {
        const i = random(40);
        const name = `svc-${i}`;
        health.set(name, variants(name, i)[random(4)] as ServiceInstance[]);
        names.add(name);
      }
      const next = buildSnapshot(views, OPTIONS, snapshot, undefined, names);
      const fresh = buildSnapshot({ catalog, health: new Map(health), kv }, OPTIONS);
      assert.equal(next.version, fresh.version, `step ${step}`);
      assert.deepEqual(JSON.parse(JSON.stringify(next)), JSON.parse(JSON.stringify(fresh)), `step ${step}`);
      for (const name of Object.keys(next.services)) if (!names.has(name)) assert.equal(next.services[name], snapshot.services[name]);
      if (next.problems.length > 0) withProblems += 1;
      snapshot = next;
    }
    // The walk went through builds with and without per-service problems.
    assert.ok(withProblems > 0 && withProblems < 300, `${withProblems} builds with problems`);
  });

  test('a named service that is not routed, or a change that leaves a service as it was, builds nothing new', () => {
    const { catalog, health } = world(5);
    const kv: KvEntry[] = [];
    const views: ConsulViews = { catalog, health, kv };
    const first = buildSnapshot(views, OPTIONS);
    assert.equal(buildSnapshot(views, OPTIONS, first, undefined, new Set(['no-such-service'])), first);
    health.set('svc-1', [...(health.get('svc-1') ?? [])]);
    assert.equal(buildSnapshot(views, OPTIONS, first, undefined, new Set(['svc-1'])).version, first.version);
  });
});

test('a snapshot in force does not keep the ones it was built from alive (memory stays flat over many changes)', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const { catalog, health } = world(20);
  const kv: KvEntry[] = [];
  const views: ConsulViews = { catalog, health, kv };
  let snapshot = buildSnapshot(views, OPTIONS);
  const first = new WeakRef(snapshot);
  for (let step = 0; step < 50; step++) {
    const name = `svc-${step % 20}`;
    health.set(name, [instance(name, `a${step}`, 11_000 + step)]);
    snapshot = buildSnapshot(views, OPTIONS, snapshot, undefined, new Set([name]));
  }
  for (let i = 0; i < 10 && first.deref() !== undefined; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    gc();
  }
  assert.equal(first.deref(), undefined, 'the first snapshot is still reachable from the latest');
});
