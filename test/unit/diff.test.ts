import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { HealthStatus, KvEntry, ServiceInstance } from '../../src/core/types.ts';
import { buildSnapshot, type Snapshot } from '../../src/state/snapshot.ts';
import { compactDiff, diffSnapshots, type SnapshotDiff } from '../../src/state/diff.ts';
import { resolvePolicies } from '../../src/policy/resolve.ts';

interface Inst {
  readonly id: string;
  readonly port: number;
  readonly status?: HealthStatus;
  readonly passing?: number;
  readonly tags?: string[];
}

interface World {
  readonly catalog: Record<string, string[]>;
  readonly health: Record<string, Inst[]>;
  readonly canary?: Record<string, Record<string, number>>;
}

function snapshot(world: World): Snapshot {
  const health = new Map<string, ServiceInstance[]>();
  for (const [service, list] of Object.entries(world.health)) {
    health.set(
      service,
      list.map((i) => ({
        id: i.id,
        service,
        node: 'n1',
        address: '127.0.0.1',
        port: i.port,
        tags: i.tags ?? [],
        weights: { passing: i.passing ?? 1, warning: 1 },
        checks: [{ id: `service:${i.id}`, status: i.status ?? 'passing', serviceId: i.id }],
      })),
    );
  }
  const kv: KvEntry[] = Object.entries(world.canary ?? {}).map(([service, weights]) => ({
    key: `gateway/canary/${service}`,
    value: JSON.stringify({ weights }),
    modifyIndex: 1,
  }));
  return buildSnapshot({ catalog: world.catalog, health, kv }, { allowWarning: false, kvPrefix: 'gateway/' });
}

const BASE: World = {
  catalog: { web: ['urlprefix-/web'], api: ['urlprefix-/api strip=/api'] },
  health: {
    web: [
      { id: 'w1', port: 7001, tags: ['v1'] },
      { id: 'w2', port: 7002, tags: ['v2'] },
    ],
    api: [{ id: 'a1', port: 7101 }],
  },
  canary: { web: { v1: 90, v2: 10 } },
};

const EMPTY: SnapshotDiff = {
  servicesAdded: [],
  servicesRemoved: [],
  endpointsAdded: [],
  endpointsRemoved: [],
  endpointsChanged: [],
  routesAdded: [],
  routesRemoved: [],
  canaryChanged: [],
  problemsAdded: [],
  problemsResolved: [],
  policiesChanged: [],
  consumersAdded: [],
  consumersRemoved: [],
  consumersChanged: [],
};

describe('diffSnapshots', () => {
  const cases: { name: string; next: World; expected: Partial<SnapshotDiff> }[] = [
    { name: 'no change', next: BASE, expected: {} },
    {
      name: 'endpoint added',
      next: { ...BASE, health: { ...BASE.health, api: [{ id: 'a1', port: 7101 }, { id: 'a2', port: 7102 }] } },
      expected: { endpointsAdded: ['api/a2@127.0.0.1:7102'] },
    },
    {
      name: 'endpoint removed',
      next: { ...BASE, health: { ...BASE.health, api: [] } },
      expected: { endpointsRemoved: ['api/a1@127.0.0.1:7101'] },
    },
    {
      name: 'endpoint re-registered on another port',
      next: { ...BASE, health: { ...BASE.health, api: [{ id: 'a1', port: 7199 }] } },
      expected: { endpointsAdded: ['api/a1@127.0.0.1:7199'], endpointsRemoved: ['api/a1@127.0.0.1:7101'] },
    },
    {
      name: 'endpoint health changed',
      next: { ...BASE, health: { ...BASE.health, api: [{ id: 'a1', port: 7101, status: 'critical' }] } },
      expected: { endpointsChanged: ['api/a1@127.0.0.1:7101: passing w=1 -> critical w=0'] },
    },
    {
      name: 'endpoint weight changed',
      next: { ...BASE, health: { ...BASE.health, api: [{ id: 'a1', port: 7101, passing: 4 }] } },
      expected: { endpointsChanged: ['api/a1@127.0.0.1:7101: passing w=1 -> passing w=4'] },
    },
    {
      name: 'route added',
      next: { ...BASE, catalog: { ...BASE.catalog, web: ['urlprefix-/web', 'urlprefix-example.com/shop'] } },
      expected: { routesAdded: ['example.com/shop -> web'] },
    },
    {
      name: 'route strip changed',
      next: { ...BASE, catalog: { ...BASE.catalog, api: ['urlprefix-/api'] } },
      expected: { routesAdded: ['/api -> api'], routesRemoved: ['/api -> api strip=/api'] },
    },
    {
      name: 'service and its route removed',
      next: { ...BASE, catalog: { web: ['urlprefix-/web'] } },
      expected: {
        servicesRemoved: ['api'],
        endpointsRemoved: ['api/a1@127.0.0.1:7101'],
        routesRemoved: ['/api -> api strip=/api'],
      },
    },
    {
      name: 'service added',
      next: { ...BASE, catalog: { ...BASE.catalog, db: ['urlprefix-/db'] }, health: { ...BASE.health, db: [{ id: 'd1', port: 7201 }] } },
      expected: { servicesAdded: ['db'], endpointsAdded: ['db/d1@127.0.0.1:7201'], routesAdded: ['/db -> db'] },
    },
    {
      name: 'canary weights changed',
      next: { ...BASE, canary: { web: { v1: 50, v2: 50 } } },
      expected: { canaryChanged: ['web'] },
    },
    {
      name: 'canary removed',
      next: { ...BASE, canary: {} },
      expected: { canaryChanged: ['web'] },
    },
    {
      name: 'canary added',
      next: { ...BASE, canary: { ...BASE.canary, web: { v1: 50, v2: 50 } } },
      expected: { canaryChanged: ['web'] },
    },
    {
      name: 'canary subset emptied by health',
      next: { ...BASE, health: { ...BASE.health, web: [{ id: 'w1', port: 7001, tags: ['v1'] }, { id: 'w2', port: 7002, tags: ['v2'], status: 'critical' }] } },
      expected: { canaryChanged: ['web'], endpointsChanged: ['web/w2@127.0.0.1:7002: passing w=1 -> critical w=0'] },
    },
    {
      name: 'problem added',
      next: { ...BASE, catalog: { ...BASE.catalog, web: ['urlprefix-/web', 'urlprefix-/x bogus=1'] } },
      expected: { problemsAdded: ['tag web: tag "urlprefix-/x bogus=1": unknown option "bogus" (supported: strip, proto)'] },
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const diff = diffSnapshots(snapshot(BASE), snapshot(c.next));
      assert.deepEqual(diff, { ...EMPTY, ...c.expected });
      assert.deepEqual(compactDiff(diff), c.expected);
    });
  }

  test('a resolved problem is reported', () => {
    const bad: World = { ...BASE, catalog: { ...BASE.catalog, web: ['urlprefix-/web', 'urlprefix-/x bogus=1'] } };
    const diff = diffSnapshots(snapshot(bad), snapshot(BASE));
    assert.deepEqual(diff.problemsResolved, ['tag web: tag "urlprefix-/x bogus=1": unknown option "bogus" (supported: strip, proto)']);
    assert.deepEqual(diff.problemsAdded, []);
  });

  test('against no previous snapshot everything is added', () => {
    const diff = diffSnapshots(undefined, snapshot(BASE));
    assert.deepEqual(diff, {
      ...EMPTY,
      servicesAdded: ['api', 'web'],
      endpointsAdded: ['api/a1@127.0.0.1:7101', 'web/w1@127.0.0.1:7001', 'web/w2@127.0.0.1:7002'],
      routesAdded: ['/api -> api strip=/api', '/web -> web'],
      canaryChanged: ['web'],
    });
  });
});

describe('diffSnapshots: policies and consumers', () => {
  const hash = (c: string): string => `sha256:${c.repeat(64)}`;
  function withKv(kv: KvEntry[]): Snapshot {
    const views = { catalog: { web: ['urlprefix-/web'] }, health: new Map<string, ServiceInstance[]>(), kv };
    const policies = resolvePolicies([], kv, 'gateway/', undefined);
    return buildSnapshot(views, { allowWarning: false, kvPrefix: 'gateway/' }, undefined, policies);
  }
  const doc = (limit: number): KvEntry => ({ key: 'gateway/policies/web', value: JSON.stringify({ appliesTo: { service: 'web' }, limits: { maxBodyBytes: limit } }), modifyIndex: limit });
  const consumer = (id: string, index: number, c = 'a'): KvEntry => ({ key: `gateway/consumers/${id}`, value: JSON.stringify({ keyHash: hash(c) }), modifyIndex: index });

  test('a document version change is named, with old and new version', () => {
    const before = withKv([doc(10)]);
    const after = withKv([doc(20)]);
    const diff = diffSnapshots(before, after);
    assert.equal(diff.policiesChanged.length, 1);
    assert.match(diff.policiesChanged[0] ?? '', /^policies\/web: [0-9a-f]{16} -> [0-9a-f]{16}$/);
  });

  test('documents appearing and disappearing show "none" on the missing side', () => {
    assert.match(diffSnapshots(withKv([]), withKv([doc(10)])).policiesChanged[0] ?? '', /^policies\/web: none -> /);
    assert.match(diffSnapshots(withKv([doc(10)]), withKv([])).policiesChanged[0] ?? '', / -> none$/);
  });

  test('consumers added, removed and rewritten, by id and ModifyIndex, never with the key hash', () => {
    const diff = diffSnapshots(withKv([consumer('alice', 5), consumer('bob', 6)]), withKv([consumer('alice', 9, 'b'), consumer('carol', 7)]));
    assert.deepEqual(compactDiff(diff), { consumersAdded: ['carol'], consumersRemoved: ['bob'], consumersChanged: ['alice@9'] });
    assert.ok(!JSON.stringify(diff).includes('sha256'));
  });
});
