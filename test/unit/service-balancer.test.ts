import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews, KvEntry } from '../../src/core/types.ts';
import { webInstance, type InstanceSpec } from '../helpers/instances.ts';
import { buildSnapshot, type ServiceSnapshot } from '../../src/state/snapshot.ts';
import { ServiceBalancer, type PickerKind } from '../../src/balancer/service-balancer.ts';
import { UpstreamPools, type UpstreamEndpoint } from '../../src/balancer/upstream-pools.ts';
import { OutlierDetector, type OutlierConfig } from '../../src/resilience/outlier.ts';

// Pools are created lazily by `get` and never connect: no request is sent in these tests.
const pools = new UpstreamPools({ connectTimeoutMs: 1000, connectionsPerEndpoint: 1 });
after(() => pools.closeAll(0));

const instance = webInstance;

function service(specs: InstanceSpec[], canary?: Record<string, number>): ServiceSnapshot {
  const kv: KvEntry[] = canary ? [{ key: 'gateway/canary/web', value: JSON.stringify({ weights: canary }), modifyIndex: 1 }] : [];
  const views: ConsulViews = { catalog: { web: ['urlprefix-/web'] }, health: new Map([['web', specs.map(instance)]]), kv };
  const snap = buildSnapshot(views, { allowWarning: false, kvPrefix: 'gateway/' });
  const svc = snap.services.web;
  assert.ok(svc);
  return svc;
}

function tally(balancer: ServiceBalancer, n: number, canaryTag?: string, exclude?: UpstreamEndpoint): Map<string, number> {
  const out = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const ep = balancer.pick(canaryTag, exclude);
    assert.ok(ep, 'pick returned undefined');
    out.set(ep.key, (out.get(ep.key) ?? 0) + 1);
  }
  return out;
}

/** Sums picks per subset, given which ports belong to which tag. */
function bySubset(counts: Map<string, number>, subsets: Record<string, number[]>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [tag, ports] of Object.entries(subsets)) {
    out[tag] = ports.reduce((sum, p) => sum + (counts.get(`127.0.0.1:${p}`) ?? 0), 0);
  }
  return out;
}

const CANARY_SPECS: InstanceSpec[] = [
  { port: 31001, tags: ['v1'] },
  { port: 31002, tags: ['v1'] },
  { port: 31003, tags: ['v2'] },
];
const CANARY_SUBSETS = { v1: [31001, 31002], v2: [31003] };
const PICKERS: PickerKind[] = ['round_robin', 'least_request'];

describe('ServiceBalancer: canary split', () => {
  for (const kind of PICKERS) {
    test(`canary 90/10 gives exactly 9:1 over 100 picks (${kind})`, () => {
      const balancer = new ServiceBalancer(service(CANARY_SPECS, { v1: 90, v2: 10 }), pools, kind);
      assert.deepEqual(bySubset(tally(balancer, 100), CANARY_SUBSETS), { v1: 90, v2: 10 });
    });
  }

  test('picks inside a subset are spread over its endpoints (round robin)', () => {
    const balancer = new ServiceBalancer(service(CANARY_SPECS, { v1: 90, v2: 10 }), pools, 'round_robin');
    const counts = tally(balancer, 100);
    assert.equal(counts.get('127.0.0.1:31001'), 45);
    assert.equal(counts.get('127.0.0.1:31002'), 45);
    assert.equal(counts.get('127.0.0.1:31003'), 10);
  });

  const forced: { tag: string; expected: Record<string, number> }[] = [
    { tag: 'v2', expected: { v1: 0, v2: 50 } },
    { tag: 'v1', expected: { v1: 50, v2: 0 } },
  ];
  for (const { tag, expected } of forced) {
    for (const kind of PICKERS) {
      test(`X-Canary: ${tag} forces that subset (${kind})`, () => {
        const balancer = new ServiceBalancer(service(CANARY_SPECS, { v1: 90, v2: 10 }), pools, kind);
        assert.deepEqual(bySubset(tally(balancer, 50, tag), CANARY_SUBSETS), expected);
      });
    }
  }

  const fallbackTags = ['v3', 'unknown'];
  for (const tag of fallbackTags) {
    test(`X-Canary: ${tag} (empty or unknown subset) falls back to the weighted choice`, () => {
      // v3 has only a critical endpoint: effective weights become 62.5 / 37.5, i.e. 5:3.
      const specs: InstanceSpec[] = [
        { port: 31101, tags: ['v1'] },
        { port: 31102, tags: ['v2'] },
        { port: 31103, tags: ['v3'], status: 'critical' },
      ];
      const svc = service(specs, { v1: 50, v2: 30, v3: 20 });
      assert.deepEqual(
        svc.canary?.subsets.map((s) => s.effectiveWeight),
        [62.5, 37.5, 0],
      );
      const balancer = new ServiceBalancer(svc, pools, 'round_robin');
      assert.deepEqual(bySubset(tally(balancer, 80, tag), { v1: [31101], v2: [31102], v3: [31103] }), { v1: 50, v2: 30, v3: 0 });
    });
  }

  test('a canary in fallback balances over all healthy endpoints by weight', () => {
    const specs: InstanceSpec[] = [
      { port: 31201, passing: 3 },
      { port: 31202, passing: 1 },
      { port: 31203, tags: ['v2'], status: 'critical' },
      { port: 31204, tags: ['v1'], status: 'critical' },
    ];
    const svc = service(specs, { v1: 50, v2: 50 });
    assert.equal(svc.canary?.fallback, true);
    const balancer = new ServiceBalancer(svc, pools, 'round_robin');
    const counts = tally(balancer, 40, 'v2');
    assert.deepEqual([counts.get('127.0.0.1:31201'), counts.get('127.0.0.1:31202'), counts.get('127.0.0.1:31203')], [30, 10, undefined]);
  });
});

describe('ServiceBalancer: plain balancing', () => {
  test('Weights.Passing is honoured over a full cycle', () => {
    const balancer = new ServiceBalancer(service([{ port: 31301, passing: 3 }, { port: 31302, passing: 1 }]), pools, 'round_robin');
    const counts = tally(balancer, 40);
    assert.equal(counts.get('127.0.0.1:31301'), 30);
    assert.equal(counts.get('127.0.0.1:31302'), 10);
  });

  test('unhealthy endpoints are never picked and not counted', () => {
    const balancer = new ServiceBalancer(
      service([{ port: 31401 }, { port: 31402, status: 'critical' }, { port: 31403, status: 'warning' }]),
      pools,
      'round_robin',
    );
    assert.equal(balancer.healthy, 1);
    assert.deepEqual([...tally(balancer, 10).keys()], ['127.0.0.1:31401']);
  });

  for (const kind of PICKERS) {
    test(`no healthy endpoint → undefined (${kind})`, () => {
      const balancer = new ServiceBalancer(service([{ port: 31501, status: 'critical' }]), pools, kind);
      assert.equal(balancer.healthy, 0);
      assert.equal(balancer.pick(), undefined);
      assert.equal(balancer.pick('v1'), undefined);
    });
  }

  test('least_request prefers the endpoint with fewer requests in flight', () => {
    const balancer = new ServiceBalancer(service([{ port: 31601 }, { port: 31602 }]), pools, 'least_request');
    const busy = pools.get({ key: '127.0.0.1:31601', address: '127.0.0.1', port: 31601 });
    busy.inflight = 10;
    try {
      assert.deepEqual([...tally(balancer, 50).keys()], ['127.0.0.1:31602']);
    } finally {
      busy.inflight = 0;
    }
  });
});

describe('ServiceBalancer: exclude (retry elsewhere)', () => {
  for (const kind of PICKERS) {
    test(`exclude gives another endpoint (${kind})`, () => {
      const balancer = new ServiceBalancer(service([{ port: 31701 }, { port: 31702 }, { port: 31703 }]), pools, kind);
      const failed = pools.get({ key: '127.0.0.1:31702', address: '127.0.0.1', port: 31702 });
      for (let i = 0; i < 60; i++) {
        const ep = balancer.pick(undefined, failed);
        assert.ok(ep);
        assert.notEqual(ep.key, failed.key);
      }
    });

    test(`exclude of the only endpoint of a forced subset goes elsewhere (${kind})`, () => {
      const balancer = new ServiceBalancer(service(CANARY_SPECS, { v1: 90, v2: 10 }), pools, kind);
      const failed = pools.get({ key: '127.0.0.1:31003', address: '127.0.0.1', port: 31003 });
      for (let i = 0; i < 30; i++) {
        const ep = balancer.pick('v2', failed);
        assert.ok(ep);
        assert.notEqual(ep.key, failed.key);
      }
    });
  }

  test('the single endpoint of a service is still returned when excluded', () => {
    const balancer = new ServiceBalancer(service([{ port: 31801 }]), pools, 'round_robin');
    const only = pools.get({ key: '127.0.0.1:31801', address: '127.0.0.1', port: 31801 });
    assert.equal(balancer.pick(undefined, only), only);
  });

  test('endpoints are shared pool entries keyed by address:port', () => {
    const balancer = new ServiceBalancer(service([{ port: 31901 }]), pools, 'round_robin');
    const ep = balancer.pick();
    assert.equal(ep, pools.peek('127.0.0.1:31901'));
    assert.equal(ep?.origin, 'http://127.0.0.1:31901');
  });
});

describe('ServiceBalancer.fingerprint', () => {
  const base: InstanceSpec[] = [
    { port: 32001, tags: ['v1'] },
    { port: 32002, tags: ['v2'] },
  ];
  test('equal for equal input', () => {
    const a = new ServiceBalancer(service(base, { v1: 90, v2: 10 }), pools, 'round_robin');
    const b = new ServiceBalancer(service(base, { v1: 90, v2: 10 }), pools, 'round_robin');
    assert.equal(a.fingerprint, b.fingerprint);
    assert.equal(ServiceBalancer.fingerprintOf(service(base, { v1: 90, v2: 10 }), 'round_robin'), a.fingerprint);
  });

  const different: { name: string; a: () => [ServiceSnapshot, PickerKind]; b: () => [ServiceSnapshot, PickerKind] }[] = [
    {
      name: 'an endpoint weight changes',
      a: () => [service(base), 'round_robin'],
      b: () => [service([{ port: 32001, tags: ['v1'], passing: 5 }, { port: 32002, tags: ['v2'] }]), 'round_robin'],
    },
    {
      name: 'canary weights change',
      a: () => [service(base, { v1: 90, v2: 10 }), 'round_robin'],
      b: () => [service(base, { v1: 50, v2: 50 }), 'round_robin'],
    },
    {
      name: 'a canary is added',
      a: () => [service(base), 'round_robin'],
      b: () => [service(base, { v1: 90, v2: 10 }), 'round_robin'],
    },
    {
      name: 'an endpoint turns critical',
      a: () => [service(base), 'round_robin'],
      b: () => [service([{ port: 32001, tags: ['v1'] }, { port: 32002, tags: ['v2'], status: 'critical' }]), 'round_robin'],
    },
    {
      name: 'an endpoint tag changes',
      a: () => [service(base), 'round_robin'],
      b: () => [service([{ port: 32001, tags: ['v1'] }, { port: 32002, tags: ['v3'] }]), 'round_robin'],
    },
    {
      name: 'the picker kind changes',
      a: () => [service(base), 'round_robin'],
      b: () => [service(base), 'least_request'],
    },
  ];
  for (const c of different) {
    test(`different when ${c.name}`, () => {
      const [sa, ka] = c.a();
      const [sb, kb] = c.b();
      assert.notEqual(new ServiceBalancer(sa, pools, ka).fingerprint, new ServiceBalancer(sb, pools, kb).fingerprint);
    });
  }

  test('unchanged when only an unhealthy endpoint changes status between critical and warning', () => {
    // Neither is admitted (allowWarning=false), so the balancer would be identical.
    const a = service([{ port: 32001 }, { port: 32002, status: 'critical' }]);
    const b = service([{ port: 32001 }, { port: 32002, status: 'warning' }]);
    assert.equal(ServiceBalancer.fingerprintOf(a, 'round_robin'), ServiceBalancer.fingerprintOf(b, 'round_robin'));
  });
});

describe('ServiceBalancer: outlier ejection', () => {
  const OUTLIER: OutlierConfig = { enabled: true, consecutiveFailures: 2, statuses: [502], baseEjection: 1000, maxEjection: 5000, maxEjectedPercent: 100 };
  const key = (port: number): string => `127.0.0.1:${port}`;

  function detector(config: Partial<OutlierConfig> = {}) {
    const clock = { t: 1000 };
    const outlier = new OutlierDetector({ ...OUTLIER, ...config }, { now: () => clock.t });
    const eject = (...ports: number[]): void => {
      for (const port of ports) for (let i = 0; i < 2; i++) outlier.record(key(port), 'failure');
    };
    return { outlier, clock, eject };
  }

  /** As the runtime builds one: the resilience registry tells the detector the endpoint set first. */
  function balancerWith(svc: ServiceSnapshot, kind: PickerKind, outlier: OutlierDetector): ServiceBalancer {
    outlier.setEndpoints(svc.endpoints.filter((e) => e.weight > 0).map((e) => e.key));
    return new ServiceBalancer(svc, pools, kind, outlier);
  }

  test('the balancer leaves the endpoint set to the registry (it runs on every build, reused balancers too)', () => {
    const { outlier } = detector();
    outlier.setEndpoints([key(33001)]);
    new ServiceBalancer(service([{ port: 33001 }, { port: 33002 }, { port: 33003, status: 'critical' }]), pools, 'round_robin', outlier);
    assert.deepEqual(Object.keys(outlier.status()), [key(33001)]);
  });

  for (const kind of PICKERS) {
    test(`an ejected endpoint is not picked until it returns (${kind})`, () => {
      const { outlier, clock, eject } = detector();
      const balancer = balancerWith(service([{ port: 33101 }, { port: 33102 }, { port: 33103 }]), kind, outlier);
      eject(33102);
      assert.deepEqual([...tally(balancer, 60).keys()].sort(), [key(33101), key(33103)]);
      clock.t += 1000;
      assert.ok(tally(balancer, 60).has(key(33102)), 'back after its ejection');
    });

    test(`exclude and ejection together leave the third endpoint (${kind})`, () => {
      const { outlier, eject } = detector();
      const balancer = balancerWith(service([{ port: 33201 }, { port: 33202 }, { port: 33203 }]), kind, outlier);
      eject(33201);
      assert.deepEqual([...tally(balancer, 30, undefined, pools.get({ key: key(33202), address: '127.0.0.1', port: 33202 })).keys()], [key(33203)]);
    });

    test(`panic: every endpoint ejected still picks, honouring exclude (${kind})`, () => {
      const { outlier, eject } = detector();
      const balancer = balancerWith(service([{ port: 33301 }, { port: 33302 }]), kind, outlier);
      eject(33301, 33302);
      assert.equal(outlier.ejectedCount, 2);
      assert.equal(tally(balancer, 20).size, 2);
      assert.deepEqual([...tally(balancer, 20, undefined, pools.get({ key: key(33301), address: '127.0.0.1', port: 33301 })).keys()], [key(33302)]);
    });

    test(`a canary subset whose endpoints are all ejected sends its share elsewhere (${kind})`, () => {
      const { outlier, eject } = detector();
      const balancer = balancerWith(service(CANARY_SPECS, { v1: 90, v2: 10 }), kind, outlier);
      eject(31003);
      assert.deepEqual(bySubset(tally(balancer, 100), CANARY_SUBSETS), { v1: 100, v2: 0 });
      assert.deepEqual(bySubset(tally(balancer, 20, 'v2'), CANARY_SUBSETS), { v1: 20, v2: 0 }, 'even when forced by X-Canary');
    });

    test(`inside a canary subset, ejected endpoints are skipped (${kind})`, () => {
      const { outlier, eject } = detector();
      const balancer = balancerWith(service(CANARY_SPECS, { v1: 90, v2: 10 }), kind, outlier);
      eject(31001);
      const counts = tally(balancer, 100);
      assert.equal(counts.get(key(31001)), undefined);
      assert.equal(counts.get(key(31002)), 90);
      assert.equal(counts.get(key(31003)), 10);
    });
  }

  test('the ejection cap keeps endpoints in rotation', () => {
    const { outlier, eject } = detector({ maxEjectedPercent: 50 });
    const balancer = balancerWith(service([{ port: 33401 }, { port: 33402 }]), 'round_robin', outlier);
    eject(33401, 33402);
    assert.deepEqual([...tally(balancer, 20).keys()], [key(33402)]);
  });

  test('a rebuild without an endpoint forgets its state; the same detector carries the rest', () => {
    const { outlier, eject } = detector();
    balancerWith(service([{ port: 33501 }, { port: 33502 }, { port: 33503 }]), 'round_robin', outlier);
    eject(33501, 33502);
    const rebuilt = balancerWith(service([{ port: 33502 }, { port: 33503 }]), 'round_robin', outlier);
    assert.deepEqual(Object.keys(outlier.status()), [key(33502), key(33503)]);
    assert.deepEqual([...tally(rebuilt, 20).keys()], [key(33503)], 'still ejected after the rebuild');
  });

  test('the detector is not part of the fingerprint', () => {
    const svc = service([{ port: 33601 }, { port: 33602 }]);
    const { outlier } = detector();
    assert.equal(new ServiceBalancer(svc, pools, 'round_robin', outlier).fingerprint, new ServiceBalancer(svc, pools, 'round_robin').fingerprint);
  });
});
