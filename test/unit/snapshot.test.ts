import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews, HealthStatus, KvEntry, ServiceInstance } from '../../src/core/types.ts';
import { buildSnapshot, canaryFor, type BuildOptions, type EndpointSnapshot, type Snapshot } from '../../src/state/snapshot.ts';
import { DEFAULT_ROUTE_OPTIONS } from '../../src/state/route-options.ts';

type Check = ServiceInstance['checks'][number];

const OPTIONS: BuildOptions = { allowWarning: false, kvPrefix: 'gateway/' };
const WARN_OK: BuildOptions = { allowWarning: true, kvPrefix: 'gateway/' };

let nextPort = 20000;
function instance(
  id: string,
  opts: {
    service?: string;
    tags?: string[];
    status?: HealthStatus;
    checks?: Check[];
    passing?: number;
    warning?: number;
    port?: number;
    node?: string;
  } = {},
): ServiceInstance {
  const service = opts.service ?? 'web';
  return {
    id,
    service,
    node: opts.node ?? 'node-1',
    address: '127.0.0.1',
    port: opts.port ?? nextPort++,
    tags: opts.tags ?? [],
    weights: { passing: opts.passing ?? 1, warning: opts.warning ?? 1 },
    checks: opts.checks ?? [
      { id: 'serfHealth', status: 'passing', serviceId: '' },
      { id: `service:${id}`, status: opts.status ?? 'passing', serviceId: id },
    ],
  };
}

function views(
  catalog: Record<string, string[]>,
  health: Record<string, ServiceInstance[]>,
  kv: KvEntry[] = [],
): ConsulViews {
  return { catalog, health: new Map(Object.entries(health)), kv };
}

const kv = (key: string, value: string | null, modifyIndex = 1): KvEntry => ({ key, value, modifyIndex });
const canaryKv = (service: string, weights: Record<string, number>, modifyIndex = 1): KvEntry =>
  kv(`gateway/canary/${service}`, JSON.stringify({ weights }), modifyIndex);

function endpoint(snapshot: Snapshot, service: string, id: string): EndpointSnapshot {
  const e = snapshot.services[service]?.endpoints.find((x) => x.id === id);
  assert.ok(e, `endpoint ${service}/${id} missing`);
  return e;
}

describe('buildSnapshot: health admission', () => {
  const cases: {
    name: string;
    inst: ServiceInstance;
    options: BuildOptions;
    status: HealthStatus;
    weight: number;
  }[] = [
    { name: 'passing is admitted at Weights.Passing', inst: instance('p', { passing: 7, warning: 2 }), options: OPTIONS, status: 'passing', weight: 7 },
    { name: 'warning is not admitted by default', inst: instance('w', { status: 'warning', passing: 7, warning: 2 }), options: OPTIONS, status: 'warning', weight: 0 },
    { name: 'warning with allowWarning gets Weights.Warning', inst: instance('w', { status: 'warning', passing: 7, warning: 2 }), options: WARN_OK, status: 'warning', weight: 2 },
    { name: 'critical is never admitted', inst: instance('c', { status: 'critical' }), options: WARN_OK, status: 'critical', weight: 0 },
    {
      name: 'node check serfHealth critical excludes a passing service',
      inst: instance('n', {
        checks: [
          { id: 'serfHealth', status: 'critical', serviceId: '' },
          { id: 'service:n', status: 'passing', serviceId: 'n' },
        ],
      }),
      options: WARN_OK,
      status: 'critical',
      weight: 0,
    },
    {
      name: 'node maintenance excludes the instance',
      inst: instance('m', {
        checks: [
          { id: 'serfHealth', status: 'passing', serviceId: '' },
          { id: '_node_maintenance', status: 'critical', serviceId: '' },
          { id: 'service:m', status: 'passing', serviceId: 'm' },
        ],
      }),
      options: WARN_OK,
      status: 'critical',
      weight: 0,
    },
    {
      name: 'service maintenance excludes the instance',
      inst: instance('s', {
        checks: [
          { id: 'serfHealth', status: 'passing', serviceId: '' },
          { id: '_service_maintenance:s', status: 'critical', serviceId: 's' },
          { id: 'service:s', status: 'passing', serviceId: 's' },
        ],
      }),
      options: WARN_OK,
      status: 'critical',
      weight: 0,
    },
    {
      name: 'node check warning makes the instance warning',
      inst: instance('nw', {
        passing: 4,
        warning: 1,
        checks: [
          { id: 'serfHealth', status: 'warning', serviceId: '' },
          { id: 'service:nw', status: 'passing', serviceId: 'nw' },
        ],
      }),
      options: WARN_OK,
      status: 'warning',
      weight: 1,
    },
    { name: 'no checks at all counts as passing', inst: instance('none', { checks: [], passing: 3 }), options: OPTIONS, status: 'passing', weight: 3 },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const snap = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: [c.inst] }), c.options);
      const e = endpoint(snap, 'web', c.inst.id);
      assert.equal(e.status, c.status);
      assert.equal(e.weight, c.weight);
      assert.equal(snap.services.web?.healthy, c.weight > 0 ? 1 : 0);
    });
  }

  test('endpoints carry address, port, key, node and tags; healthy counts only admitted ones', () => {
    const a = instance('a', { port: 8081, tags: ['v1'], node: 'alpha', passing: 3 });
    const b = instance('b', { port: 8082, status: 'warning' });
    const c = instance('c', { port: 8083, status: 'critical' });
    const snap = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: [a, b, c] }), OPTIONS);
    assert.deepEqual(endpoint(snap, 'web', 'a'), {
      id: 'a',
      node: 'alpha',
      address: '127.0.0.1',
      port: 8081,
      key: '127.0.0.1:8081',
      tags: ['v1'],
      status: 'passing',
      weight: 3,
    });
    assert.equal(snap.services.web?.endpoints.length, 3);
    assert.equal(snap.services.web?.healthy, 1);
  });

  test('a routed service without a health view has no endpoints', () => {
    const snap = buildSnapshot(views({ web: ['urlprefix-/web'] }, {}), OPTIONS);
    assert.deepEqual(snap.services.web?.endpoints, []);
    assert.equal(snap.services.web?.healthy, 0);
  });

  test('services without urlprefix tags are not part of the snapshot', () => {
    const snap = buildSnapshot(views({ web: ['urlprefix-/web'], consul: [], db: ['primary'] }, { web: [instance('a')], db: [instance('d', { service: 'db' })] }), OPTIONS);
    assert.deepEqual(Object.keys(snap.services), ['web']);
  });
});

describe('buildSnapshot: routes', () => {
  test('a malformed tag is skipped with a problem; other routes of the same and other services stay', () => {
    const snap = buildSnapshot(
      views(
        {
          web: ['urlprefix-/web', 'urlprefix-/bad strip=/nope', 'urlprefix-/web2', 'primary'],
          api: ['urlprefix-api.example.com/v1', 'urlprefix-/x proto=tcp'],
        },
        { web: [instance('w1')], api: [instance('a1', { service: 'api' })] },
      ),
      OPTIONS,
    );
    assert.deepEqual(
      snap.routes.map((r) => [r.id, r.service]),
      [
        ['/web', 'web'],
        ['/web2', 'web'],
        ['api.example.com/v1', 'api'],
      ],
    );
    assert.deepEqual(
      snap.problems.map((p) => [p.kind, p.subject]),
      [
        ['tag', 'api'],
        ['tag', 'web'],
      ],
    );
    assert.match(snap.problems.find((p) => p.subject === 'web')?.message ?? '', /urlprefix-\/bad strip=\/nope.*not a prefix/);
    assert.match(snap.problems.find((p) => p.subject === 'api')?.message ?? '', /proto=tcp: cgw proxies HTTP/);
  });

  test('route fields: host, path, strip, service, source tag and freshness', () => {
    const snap = buildSnapshot(views({ api: ['urlprefix-Api.Example.com:443/v1/ strip=/v1'] }, { api: [] }), OPTIONS);
    assert.deepEqual(snap.routes.map(({ policy: _policy, heldBy: _heldBy, holdReason: _holdReason, ...rest }) => rest), [
      {
        id: 'api.example.com/v1',
        host: 'api.example.com',
        path: '/v1',
        ...DEFAULT_ROUTE_OPTIONS,
        strip: '/v1',
        proto: 'http',
        service: 'api',
        source: { kind: 'tag', tag: 'urlprefix-Api.Example.com:443/v1/ strip=/v1' },
        redirectHttps: false,
        freshness: 'watched',
      },
    ]);
  });

  test('a route claimed by two services goes to the first by name, with a problem for the other', () => {
    const snap = buildSnapshot(
      views(
        { beta: ['urlprefix-/shared', 'urlprefix-/beta'], alpha: ['urlprefix-/shared/'] },
        { alpha: [instance('a', { service: 'alpha' })], beta: [instance('b', { service: 'beta' })] },
      ),
      OPTIONS,
    );
    assert.deepEqual(
      snap.routes.map((r) => [r.id, r.service]),
      [
        ['/beta', 'beta'],
        ['/shared', 'alpha'],
      ],
    );
    assert.equal(snap.problems.length, 1);
    const [problem] = snap.problems;
    assert.equal(problem?.kind, 'route');
    assert.equal(problem?.subject, 'beta');
    assert.match(problem?.message ?? '', /route \/shared is served by service "alpha" \(first by name\); tag "urlprefix-\/shared" of service "beta" ignored/);
  });

  test('the same route twice in one service with other options is reported and the first kept', () => {
    const snap = buildSnapshot(views({ web: ['urlprefix-/web', 'urlprefix-/web strip=/web'] }, { web: [] }), OPTIONS);
    assert.equal(snap.routes.length, 1);
    assert.equal(snap.routes[0]?.strip, null);
    assert.equal(snap.problems.length, 1);
    assert.match(snap.problems[0]?.message ?? '', /repeats route \/web/);
  });

  test('the identical tag repeated is not a problem', () => {
    const snap = buildSnapshot(views({ web: ['urlprefix-/web', 'urlprefix-/web'] }, { web: [] }), OPTIONS);
    assert.equal(snap.routes.length, 1);
    assert.deepEqual(snap.problems, []);
  });
});

describe('buildSnapshot: canary', () => {
  const tagged = (): ServiceInstance[] => [
    instance('a', { port: 9001, tags: ['v1'] }),
    instance('b', { port: 9002, tags: ['v1'] }),
    instance('c', { port: 9003, tags: ['v2'] }),
  ];

  test('valid weights give subsets with effective weights and member keys', () => {
    const snap = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: tagged() }, [canaryKv('web', { v1: 90, v2: 10 }, 7)]), OPTIONS);
    assert.deepEqual(snap.services.web?.canary, {
      key: 'gateway/canary/web',
      modifyIndex: 7,
      weights: { v1: 90, v2: 10 },
      subsets: [
        { tag: 'v1', configuredWeight: 90, effectiveWeight: 90, endpoints: ['127.0.0.1:9001', '127.0.0.1:9002'] },
        { tag: 'v2', configuredWeight: 10, effectiveWeight: 10, endpoints: ['127.0.0.1:9003'] },
      ],
      fallback: false,
    });
    assert.deepEqual(snap.problems, []);
  });

  test('a subset with no healthy instance gets 0 and the others are renormalised to 100', () => {
    const instances = [
      instance('a', { port: 9001, tags: ['v1'] }),
      instance('b', { port: 9002, tags: ['v2'] }),
      instance('c', { port: 9003, tags: ['v3'], status: 'critical' }),
    ];
    const snap = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: instances }, [canaryKv('web', { v1: 60, v2: 30, v3: 10 })]), OPTIONS);
    const canary = snap.services.web?.canary;
    assert.ok(canary);
    assert.deepEqual(
      canary.subsets.map((s) => [s.tag, s.configuredWeight, s.effectiveWeight, s.endpoints.length]),
      [
        ['v1', 60, 66.667, 1],
        ['v2', 30, 33.333, 1],
        ['v3', 10, 0, 0],
      ],
    );
    assert.equal(canary.fallback, false);
  });

  test('all subsets empty → fallback', () => {
    const snap = buildSnapshot(
      views({ web: ['urlprefix-/web'] }, { web: [instance('a', { tags: ['v1'], status: 'critical' }), instance('b', { tags: ['other'] }), instance('c', { tags: ['v2'], status: 'critical' })] }, [
        canaryKv('web', { v1: 50, v2: 50 }),
      ]),
      OPTIONS,
    );
    const canary = snap.services.web?.canary;
    assert.equal(canary?.fallback, true);
    assert.deepEqual(
      canary?.subsets.map((s) => s.effectiveWeight),
      [0, 0],
    );
  });

  test('an invalid KV value keeps the previous weights and records a problem', () => {
    const before = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: tagged() }, [canaryKv('web', { v1: 90, v2: 10 }, 5)]), OPTIONS);
    const after = buildSnapshot(
      views({ web: ['urlprefix-/web'] }, { web: tagged() }, [kv('gateway/canary/web', '{"weights":{"v1":80}}', 6)]),
      OPTIONS,
      before,
    );
    const canary = after.services.web?.canary;
    assert.equal(canary?.modifyIndex, 5);
    assert.deepEqual(canary?.weights, { v1: 90, v2: 10 });
    assert.deepEqual(
      canary?.subsets.map((s) => s.effectiveWeight),
      [90, 10],
    );
    assert.equal(after.problems.length, 1);
    const [problem] = after.problems;
    assert.equal(problem?.kind, 'canary');
    assert.equal(problem?.subject, 'gateway/canary/web');
    assert.equal(problem?.keptLastGood, true);
    assert.match(problem?.message ?? '', /ModifyIndex 6.*weights must sum to 100/);
  });

  test('kept weights are re-applied to today\u2019s health', () => {
    const before = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: tagged() }, [canaryKv('web', { v1: 90, v2: 10 }, 5)]), OPTIONS);
    const sick = [
      instance('a', { port: 9001, tags: ['v1'] }),
      instance('b', { port: 9002, tags: ['v1'] }),
      instance('c', { port: 9003, tags: ['v2'], status: 'critical' }),
    ];
    const after = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: sick }, [kv('gateway/canary/web', 'garbage', 6)]), OPTIONS, before);
    assert.deepEqual(
      after.services.web?.canary?.subsets.map((s) => [s.tag, s.effectiveWeight]),
      [
        ['v1', 100],
        ['v2', 0],
      ],
    );
  });

  const noPrevious: { name: string; value: string | null; error: RegExp }[] = [
    { name: 'not JSON', value: 'v1=90', error: /not JSON/ },
    { name: 'empty value', value: null, error: /empty/ },
    { name: 'wrong sum', value: '{"weights":{"v1":10}}', error: /sum to 100/ },
  ];
  for (const c of noPrevious) {
    test(`an invalid value with no previous snapshot → no canary and a problem (${c.name})`, () => {
      const snap = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: tagged() }, [kv('gateway/canary/web', c.value, 3)]), OPTIONS);
      assert.equal(snap.services.web?.canary, null);
      assert.equal(snap.problems.length, 1);
      assert.equal(snap.problems[0]?.kind, 'canary');
      assert.equal(snap.problems[0]?.keptLastGood, false);
      assert.match(snap.problems[0]?.message ?? '', c.error);
    });
  }

  test('deleting the key returns the service to plain balancing', () => {
    const before = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: tagged() }, [canaryKv('web', { v1: 90, v2: 10 })]), OPTIONS);
    assert.ok(before.services.web?.canary);
    const after = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: tagged() }, []), OPTIONS, before);
    assert.equal(after.services.web?.canary, null);
    assert.deepEqual(after.problems, []);
  });

  test('weights for a service the gateway does not route are reported', () => {
    const snap = buildSnapshot(views({ web: ['urlprefix-/web'], db: [] }, { web: tagged() }, [canaryKv('db', { v1: 100 })]), OPTIONS);
    assert.equal(snap.services.db, undefined);
    assert.equal(snap.problems.length, 1);
    assert.equal(snap.problems[0]?.subject, 'gateway/canary/db');
    assert.match(snap.problems[0]?.message ?? '', /"db" is not routed/);
  });

  test('keys outside <prefix>canary/<service> are ignored', () => {
    const snap = buildSnapshot(
      views({ web: ['urlprefix-/web'] }, { web: tagged() }, [
        kv('other/canary/web', '{"weights":{"v1":100}}'),
        kv('gateway/canary/web/extra', 'garbage'),
        kv('gateway/canary/', 'garbage'),
        kv('gateway/policies/web', 'garbage'),
      ]),
      OPTIONS,
    );
    assert.equal(snap.services.web?.canary, null);
    assert.deepEqual(snap.problems, []);
  });

  test('the KV prefix from the options is honoured', () => {
    const snap = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: tagged() }, [kv('edge/canary/web', '{"weights":{"v1":100}}', 2)]), {
      allowWarning: false,
      kvPrefix: 'edge/',
    });
    assert.equal(snap.services.web?.canary?.key, 'edge/canary/web');
  });
});

describe('canaryFor', () => {
  const ep = (port: number, tags: string[], weight = 1): EndpointSnapshot => ({
    id: `i${port}`,
    node: 'n',
    address: '10.0.0.1',
    port,
    key: `10.0.0.1:${port}`,
    tags,
    status: weight > 0 ? 'passing' : 'critical',
    weight,
  });
  const cases: {
    name: string;
    weights: Record<string, number>;
    endpoints: EndpointSnapshot[];
    effective: [string, number, number][];
    fallback: boolean;
  }[] = [
    { name: 'both subsets live', weights: { v1: 90, v2: 10 }, endpoints: [ep(1, ['v1']), ep(2, ['v2'])], effective: [['v1', 90, 1], ['v2', 10, 1]], fallback: false },
    { name: 'tags are sorted', weights: { zeta: 25, alpha: 75 }, endpoints: [ep(1, ['zeta']), ep(2, ['alpha'])], effective: [['alpha', 75, 1], ['zeta', 25, 1]], fallback: false },
    { name: 'empty canary subset', weights: { v1: 90, v2: 10 }, endpoints: [ep(1, ['v1']), ep(2, ['v2'], 0)], effective: [['v1', 100, 1], ['v2', 0, 0]], fallback: false },
    { name: 'empty stable subset', weights: { v1: 90, v2: 10 }, endpoints: [ep(1, ['v1'], 0), ep(2, ['v2'])], effective: [['v1', 0, 0], ['v2', 100, 1]], fallback: false },
    { name: 'three-way split, one empty', weights: { a: 50, b: 25, c: 25 }, endpoints: [ep(1, ['a']), ep(2, ['b'])], effective: [['a', 66.667, 1], ['b', 33.333, 1], ['c', 0, 0]], fallback: false },
    { name: 'endpoint in two subsets', weights: { v1: 50, v2: 50 }, endpoints: [ep(1, ['v1', 'v2']), ep(2, ['v2'])], effective: [['v1', 50, 1], ['v2', 50, 2]], fallback: false },
    { name: 'a 0 weight subset stays 0', weights: { v1: 100, v2: 0 }, endpoints: [ep(1, ['v1']), ep(2, ['v2'])], effective: [['v1', 100, 1], ['v2', 0, 1]], fallback: false },
    { name: 'only the 0 weight subset is live', weights: { v1: 100, v2: 0 }, endpoints: [ep(2, ['v2'])], effective: [['v1', 0, 0], ['v2', 0, 1]], fallback: true },
    { name: 'no endpoints at all', weights: { v1: 90, v2: 10 }, endpoints: [], effective: [['v1', 0, 0], ['v2', 0, 0]], fallback: true },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const canary = canaryFor('gateway/canary/web', 4, c.weights, c.endpoints);
      assert.equal(canary.key, 'gateway/canary/web');
      assert.equal(canary.modifyIndex, 4);
      assert.deepEqual(canary.weights, c.weights);
      assert.deepEqual(
        canary.subsets.map((s) => [s.tag, s.effectiveWeight, s.endpoints.length]),
        c.effective,
      );
      assert.equal(canary.fallback, c.fallback);
    });
  }
});

describe('buildSnapshot: versioning and immutability', () => {
  const input = (status: HealthStatus = 'passing', canary: Record<string, number> = { v1: 90, v2: 10 }): ConsulViews =>
    views(
      { web: ['urlprefix-/web'], api: ['urlprefix-/api', 'urlprefix-/bad x=y'] },
      {
        web: [instance('w1', { port: 7001, tags: ['v1'] }), instance('w2', { port: 7002, tags: ['v2'], status })],
        api: [instance('a1', { service: 'api', port: 7101 })],
      },
      [canaryKv('web', canary, 9)],
    );

  test('the same input twice gives the same version', () => {
    assert.equal(buildSnapshot(input(), OPTIONS).version, buildSnapshot(input(), OPTIONS).version);
  });

  test('the version is a short hex hash', () => {
    assert.match(buildSnapshot(input(), OPTIONS).version, /^[0-9a-f]{16}$/);
  });

  const changes: { name: string; a: () => ConsulViews; b: () => ConsulViews; options?: BuildOptions }[] = [
    { name: 'an endpoint turns critical', a: () => input('passing'), b: () => input('critical') },
    { name: 'an endpoint turns warning', a: () => input('passing'), b: () => input('warning') },
    { name: 'canary weights change', a: () => input('passing', { v1: 90, v2: 10 }), b: () => input('passing', { v1: 50, v2: 50 }) },
  ];
  for (const c of changes) {
    test(`the version changes when ${c.name}`, () => {
      assert.notEqual(buildSnapshot(c.a(), OPTIONS).version, buildSnapshot(c.b(), OPTIONS).version);
    });
  }

  test('the version changes when allowWarning admits a warning endpoint', () => {
    assert.notEqual(buildSnapshot(input('warning'), OPTIONS).version, buildSnapshot(input('warning'), WARN_OK).version);
  });

  test('the snapshot is deeply frozen', () => {
    const snap = buildSnapshot(input(), OPTIONS);
    const web = snap.services.web;
    assert.ok(web);
    const nested: [string, unknown][] = [
      ['snapshot', snap],
      ['services', snap.services],
      ['service', web],
      ['endpoints', web.endpoints],
      ['endpoint', web.endpoints[0]],
      ['endpoint tags', web.endpoints[0]?.tags],
      ['service tags', web.tags],
      ['canary', web.canary],
      ['canary weights', web.canary?.weights],
      ['canary subsets', web.canary?.subsets],
      ['subset endpoints', web.canary?.subsets[0]?.endpoints],
      ['routes', snap.routes],
      ['route', snap.routes[0]],
      ['route source', snap.routes[0]?.source],
      ['problems', snap.problems],
      ['problem', snap.problems[0]],
    ];
    for (const [name, value] of nested) {
      assert.ok(value !== undefined && value !== null, `${name} missing`);
      assert.ok(Object.isFrozen(value), `${name} is not frozen`);
    }
    assert.throws(() => {
      (web.endpoints[0] as { weight: number }).weight = 100;
    }, TypeError);
    assert.throws(() => {
      (snap.routes as unknown[]).push(snap.routes[0]);
    }, TypeError);
  });
});

describe('buildSnapshot: determinism and purity', () => {
  test('the version does not depend on the order Consul lists instances in', () => {
    const a = instance('a', { port: 30001 });
    const b = instance('b', { port: 30002 });
    const catalog = { web: ['urlprefix-/web'] };
    const ab = buildSnapshot(views(catalog, { web: [a, b] }), OPTIONS);
    const ba = buildSnapshot(views(catalog, { web: [b, a] }), OPTIONS);
    assert.equal(ab.version, ba.version);
    assert.deepEqual(ab.services.web?.endpoints.map((e) => e.id), ['a', 'b']);
  });

  test('the caller\'s views are not frozen by the build', () => {
    const catalog = { web: ['urlprefix-/web'] };
    const web = [instance('a', { tags: ['v1'] })];
    buildSnapshot(views(catalog, { web }), OPTIONS);
    assert.equal(Object.isFrozen(catalog.web), false);
    assert.equal(Object.isFrozen(web[0]?.tags), false);
  });

  test('a canary key for an unrouted service named like a prototype member is reported', () => {
    const snapshot = buildSnapshot(
      views({ web: ['urlprefix-/web'] }, { web: [instance('a')] }, [canaryKv('toString', { v1: 100 })]),
      OPTIONS,
    );
    assert.ok(snapshot.problems.some((p) => p.kind === 'canary' && p.subject === 'gateway/canary/toString' && /not routed/.test(p.message)));
  });
});
