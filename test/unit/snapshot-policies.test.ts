import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews, KvEntry, ServiceInstance } from '../../src/core/types.ts';
import { documentId, type RawDocument } from '../../src/policy/documents.ts';
import { resolvePolicies, type PolicySet } from '../../src/policy/resolve.ts';
import { buildSnapshot, discoveryModes, servicesNamedByRoutes, type BuildOptions, type RouteSnapshot, type Snapshot } from '../../src/state/snapshot.ts';

const PREFIX = 'gateway/';
const OPTIONS: BuildOptions = { allowWarning: false, kvPrefix: PREFIX };

let nextPort = 21000;
function instance(id: string, service: string, tags: string[] = []): ServiceInstance {
  return {
    id,
    service,
    node: 'node-1',
    address: '127.0.0.1',
    port: nextPort++,
    tags,
    weights: { passing: 1, warning: 1 },
    checks: [
      { id: 'serfHealth', status: 'passing', serviceId: '' },
      { id: `service:${id}`, status: 'passing', serviceId: id },
    ],
  };
}

function views(catalog: Record<string, string[]>, health: Record<string, ServiceInstance[]> = {}, kv: KvEntry[] = []): ConsulViews {
  return { catalog, health: new Map(Object.entries(health)), kv };
}

function file(name: string, text: string, kind: 'policy' | 'route' = 'policy'): RawDocument {
  const id = documentId(kind, name);
  return { id, kind, name, origin: { kind: 'file', path: `/etc/cgw/${id}.yaml` }, text };
}
const kv = (key: string, value: string, modifyIndex = 1): KvEntry => ({ key: `${PREFIX}${key}`, value, modifyIndex });

function policies(files: RawDocument[], kvEntries: KvEntry[] = [], previous?: PolicySet): PolicySet {
  return resolvePolicies(files, kvEntries, PREFIX, previous);
}

function routeOf(snapshot: Snapshot, id: string): RouteSnapshot {
  const r = snapshot.routes.find((x) => x.id === id);
  assert.ok(r, `route ${id} missing; have ${snapshot.routes.map((x) => x.id).join(', ')}`);
  return r;
}

const LEGACY = `
path: /legacy
strip: /legacy
upstreams:
  - http://127.0.0.1:9000
  - { url: "https://billing.internal", weight: 3 }
  - { url: "http://[::1]:9001", weight: 2 }
`;

describe('buildSnapshot with policies: static routes', () => {
  const set = policies([file('legacy-billing', LEGACY, 'route')]);
  const snapshot = buildSnapshot(views({}), OPTIONS, undefined, set);

  test('a route document with upstreams creates service static:<name>, kind static, no canary', () => {
    const service = snapshot.services['static:legacy-billing'];
    assert.ok(service);
    assert.equal(service.kind, 'static');
    assert.deepEqual(service.tags, []);
    assert.equal(service.canary, null);
    assert.equal(service.healthy, 3);
    assert.deepEqual(Object.keys(snapshot.services), ['static:legacy-billing']);
  });

  test('upstream URLs become passing endpoints: http and https keys, default ports, weights', () => {
    assert.deepEqual(snapshot.services['static:legacy-billing']?.endpoints, [
      { id: 'http://127.0.0.1:9000', node: '', address: '127.0.0.1', port: 9000, key: '127.0.0.1:9000', tags: [], status: 'passing', weight: 1 },
      { id: 'https://billing.internal', node: '', address: 'billing.internal', port: 443, key: 'https://billing.internal:443', tags: [], status: 'passing', weight: 3, scheme: 'https' },
      { id: 'http://[::1]:9001', node: '', address: '::1', port: 9001, key: '[::1]:9001', tags: [], status: 'passing', weight: 2 },
    ]);
  });

  test('http without a port defaults to 80', () => {
    const s = buildSnapshot(views({}), OPTIONS, undefined, policies([file('plain', 'path: /plain\nupstreams: [http://legacy.internal]\n', 'route')]));
    const e = s.services['static:plain']?.endpoints[0];
    assert.equal(e?.port, 80);
    assert.equal(e?.key, 'legacy.internal:80');
    assert.equal(e?.scheme, undefined);
  });

  test('the route: path, strip, static service, freshness static, file source', () => {
    const r = routeOf(snapshot, '/legacy');
    assert.equal(r.host, null);
    assert.equal(r.path, '/legacy');
    assert.equal(r.strip, '/legacy');
    assert.equal(r.service, 'static:legacy-billing');
    assert.equal(r.freshness, 'static');
    assert.deepEqual(r.source, { kind: 'file', document: 'routes/legacy-billing', path: '/etc/cgw/routes/legacy-billing.yaml' });
  });

  test('a static service is not watched in Consul: not in servicesNamedByRoutes', () => {
    assert.deepEqual(servicesNamedByRoutes(set), new Set());
  });

  test('a static route stays static even with a discovery policy for its service', () => {
    const s = buildSnapshot(
      views({}),
      OPTIONS,
      undefined,
      policies([file('legacy-billing', LEGACY, 'route'), file('p', JSON.stringify({ appliesTo: { service: 'static:legacy-billing' }, discovery: { mode: 'poll' } }))]),
    );
    assert.equal(routeOf(s, '/legacy').freshness, 'static');
  });
});

describe('buildSnapshot with policies: routes to Consul services', () => {
  const INVENTORY = 'path: /inventory\nservice: inventory\n';

  test('a route document names a Consul service without urlprefix- tags', () => {
    const set = policies([file('inventory', INVENTORY, 'route')]);
    const s = buildSnapshot(views({ inventory: [] }, { inventory: [instance('inv-1', 'inventory'), instance('inv-2', 'inventory')] }), OPTIONS, undefined, set);
    const r = routeOf(s, '/inventory');
    assert.equal(r.service, 'inventory');
    assert.equal(r.strip, null);
    assert.equal(r.freshness, 'watched');
    assert.equal(s.services.inventory?.kind, 'consul');
    assert.equal(s.services.inventory?.healthy, 2);
    assert.deepEqual(servicesNamedByRoutes(set), new Set(['inventory']));
  });

  test('a route document for a service with no instances yet: the route exists, no endpoints', () => {
    const s = buildSnapshot(views({}), OPTIONS, undefined, policies([file('inventory', INVENTORY, 'route')]));
    assert.equal(routeOf(s, '/inventory').service, 'inventory');
    assert.deepEqual(s.services.inventory?.endpoints, []);
    assert.equal(s.services.inventory?.healthy, 0);
  });

  test('a document route wins over a tag route with the same id; the tag is reported', () => {
    const s = buildSnapshot(
      views({ api: ['urlprefix-/inventory'], inventory: [] }, { api: [instance('api-1', 'api')], inventory: [instance('inv-1', 'inventory')] }),
      OPTIONS,
      undefined,
      policies([file('inventory', INVENTORY, 'route')]),
    );
    assert.equal(routeOf(s, '/inventory').service, 'inventory');
    assert.equal(routeOf(s, '/inventory').source.kind, 'file');
    assert.equal(s.services.api, undefined, 'api has no other route, so it is not routed');
    assert.deepEqual(s.problems, [
      { kind: 'route', subject: 'api', message: 'route /inventory is declared by document routes/inventory; tag "urlprefix-/inventory" ignored' },
    ]);
  });

  test('two documents with the same route id: the first by id wins, the other is reported', () => {
    const s = buildSnapshot(
      views({}),
      OPTIONS,
      undefined,
      policies([file('a-inventory', INVENTORY, 'route'), file('b-inventory', 'path: /inventory\nupstreams: [http://127.0.0.1:9100]\n', 'route')]),
    );
    assert.equal(routeOf(s, '/inventory').service, 'inventory');
    assert.equal(s.services['static:b-inventory'], undefined);
    assert.deepEqual(s.problems, [
      { kind: 'route', subject: 'routes/b-inventory', message: 'route /inventory is declared by document routes/a-inventory; document routes/b-inventory ignored' },
    ]);
  });

  test('document and tag routes live side by side; host routes keep their host in the id', () => {
    const s = buildSnapshot(
      views({ web: ['urlprefix-/web'] }, { web: [instance('web-1', 'web')] }),
      OPTIONS,
      undefined,
      policies([file('shop', 'host: Shop.Example.com\npath: /\nservice: web\n', 'route')]),
    );
    assert.deepEqual(s.routes.map((r) => [r.id, r.service, r.source.kind]), [
      ['/web', 'web', 'tag'],
      ['shop.example.com/', 'web', 'file'],
    ]);
  });

  test('route source kinds: file and kv (with key and ModifyIndex)', () => {
    const set = policies([file('inventory', INVENTORY, 'route')], [kv('routes/orders', 'path: /orders\nservice: orders\n', 42)]);
    const s = buildSnapshot(views({}), OPTIONS, undefined, set);
    assert.deepEqual(routeOf(s, '/inventory').source, { kind: 'file', document: 'routes/inventory', path: '/etc/cgw/routes/inventory.yaml' });
    assert.deepEqual(routeOf(s, '/orders').source, { kind: 'kv', document: 'routes/orders', key: 'gateway/routes/orders', modifyIndex: 42 });
  });

  test('a KV route document overrides the file of the same name', () => {
    const set = policies([file('inventory', INVENTORY, 'route')], [kv('routes/inventory', 'path: /stock\nservice: inventory\n', 9)]);
    const s = buildSnapshot(views({}), OPTIONS, undefined, set);
    assert.deepEqual(s.routes.map((r) => r.id), ['/stock']);
  });
});

describe('buildSnapshot with policies: discovery and effective policies', () => {
  const POLL = JSON.stringify({ appliesTo: { service: 'inventory' }, discovery: { mode: 'poll', interval: '10s' } });
  const PINNED = JSON.stringify({ appliesTo: { service: 'legacy' }, discovery: { mode: 'pinned' } });
  const WATCH = JSON.stringify({ appliesTo: { service: 'web' }, discovery: { mode: 'watch' } });

  const cases: { name: string; service: string; freshness: RouteSnapshot['freshness'] }[] = [
    { name: 'poll → polled', service: 'inventory', freshness: 'polled' },
    { name: 'pinned → pinned', service: 'legacy', freshness: 'pinned' },
    { name: 'watch → watched', service: 'web', freshness: 'watched' },
    { name: 'no discovery policy → watched', service: 'other', freshness: 'watched' },
  ];
  const set = policies([file('inventory-poll', POLL), file('legacy-pinned', PINNED), file('web-watch', WATCH)]);
  const s = buildSnapshot(
    views({ inventory: ['urlprefix-/inventory'], legacy: ['urlprefix-/old'], web: ['urlprefix-/web'], other: ['urlprefix-/other'] }),
    OPTIONS,
    undefined,
    set,
  );
  for (const { name, service, freshness } of cases) {
    test(`freshness from the service's discovery policy: ${name}`, () => {
      const r = s.routes.find((x) => x.service === service);
      assert.equal(r?.freshness, freshness);
    });
  }

  test('discoveryModes lists services that do not use a blocking watch', () => {
    assert.deepEqual(
      discoveryModes(set),
      new Map([
        ['inventory', { mode: 'poll', interval: 10_000 }],
        ['legacy', { mode: 'pinned', interval: 30_000 }],
      ]),
    );
  });

  test('the service policy is attached to the service snapshot', () => {
    assert.deepEqual(s.services.inventory?.policy.discovery, { mode: 'poll', interval: 10_000 });
    assert.equal(s.services.inventory?.policy.sources.discovery, 'policies/inventory-poll');
    assert.equal(s.services.other?.policy.discovery.mode, 'watch');
  });

  test('the effective route policy is attached to each route, with its sources', () => {
    const withPolicies = policies([
      file('defaults', JSON.stringify({ appliesTo: 'defaults', timeouts: { request: '30s' }, retries: { attempts: 2 } })),
      file('web', JSON.stringify({ appliesTo: { service: 'web' }, rateLimits: [{ name: 'ip', by: 'ip', limit: 10, window: '1s' }] })),
      file('web-admin', JSON.stringify({ appliesTo: { route: '/web/admin' }, auth: { methods: ['apiKey'] } })),
      file('legacy', LEGACY, 'route'),
    ]);
    const snap = buildSnapshot(views({ web: ['urlprefix-/web', 'urlprefix-/web/admin'] }, { web: [instance('web-1', 'web')] }), OPTIONS, undefined, withPolicies);
    const admin = routeOf(snap, '/web/admin').policy;
    assert.deepEqual(admin.auth?.methods, ['apiKey']);
    assert.deepEqual(admin.rateLimits.map((r) => r.name), ['ip']);
    assert.deepEqual(admin.timeouts, { request: 30_000 });
    assert.equal(admin.retries.attempts, 2);
    assert.deepEqual(admin.sources, { auth: 'policies/web-admin', rateLimits: 'policies/web', timeouts: 'policies/defaults', retries: 'policies/defaults' });
    const web = routeOf(snap, '/web').policy;
    assert.equal(web.auth, null);
    assert.equal(web.sources.auth, undefined);
    const legacy = routeOf(snap, '/legacy').policy;
    assert.deepEqual(legacy.rateLimits, [], 'a static route inherits defaults, not another service');
    assert.equal(legacy.retries.attempts, 2);
  });
});

describe('buildSnapshot with policies: problems and versions', () => {
  const WEB = views({ web: ['urlprefix-/web'] }, { web: [instance('web-1', 'web')] });
  const SERVICE = (connect: string) => JSON.stringify({ appliesTo: { service: 'web' }, retries: { attempts: 1, backoff: { base: connect } } });

  test('policy problems appear in snapshot.problems, next to tag problems, sorted', () => {
    const set = policies([file('web', SERVICE('10ms'))], [kv('policies/bad', 'appliesTo: nowhere\n', 5), kv('consumers/Bad', '{}', 6)]);
    const s = buildSnapshot(views({ web: ['urlprefix-/web', 'urlprefix-web'] }, { web: [instance('web-1', 'web')] }), OPTIONS, undefined, set);
    assert.deepEqual(s.problems.map((p) => [p.kind, p.subject]), [
      ['consumer', 'gateway/consumers/Bad'],
      ['policy', 'policies/bad'],
      ['tag', 'web'],
    ]);
    assert.match(s.problems.find((p) => p.kind === 'policy')?.message ?? '', /^KV gateway\/policies\/bad \(ModifyIndex 5\) rejected: appliesTo: /);
  });

  test('the policy set in force is carried in the snapshot (next build\'s last good)', () => {
    const set = policies([file('web', SERVICE('10ms'))]);
    const s = buildSnapshot(WEB, OPTIONS, undefined, set);
    assert.deepEqual(s.policies, set);
  });

  test('the version changes when a policy changes', () => {
    const a = buildSnapshot(WEB, OPTIONS, undefined, policies([file('web', SERVICE('10ms'))]));
    const b = buildSnapshot(WEB, OPTIONS, undefined, policies([file('web', SERVICE('20ms'))]));
    assert.notEqual(a.version, b.version);
  });

  test('the version changes when a route document changes', () => {
    const a = buildSnapshot(views({}), OPTIONS, undefined, policies([file('legacy', LEGACY, 'route')]));
    const b = buildSnapshot(views({}), OPTIONS, undefined, policies([file('legacy', LEGACY.replace('weight: 3', 'weight: 4'), 'route')]));
    assert.notEqual(a.version, b.version);
  });

  test('the version does not change when only the formatting of a document changes', () => {
    const json = buildSnapshot(WEB, OPTIONS, undefined, policies([file('web', SERVICE('10ms'))]));
    const yaml = buildSnapshot(
      WEB,
      OPTIONS,
      undefined,
      policies([file('web', '# same policy, as YAML\nretries:\n  backoff: { base: 10ms }\n  attempts: 1\nappliesTo: { service: web }\n')]),
    );
    assert.equal(json.version, yaml.version);
  });

  test('an added document changes the version even when unused: the policy set is part of the snapshot', () => {
    // The policy set is part of the snapshot (it is the next build's last good), so even an unused
    // document changes the version: the runtime is rebuilt, reusing every balancer.
    const a = buildSnapshot(WEB, OPTIONS, undefined, policies([]));
    const b = buildSnapshot(WEB, OPTIONS, undefined, policies([file('unused', JSON.stringify({ appliesTo: { service: 'nobody' } }))]));
    assert.notEqual(a.version, b.version);
  });

  test('an invalid KV version keeps the last good policy in the snapshot', () => {
    const v1set = policies([], [kv('policies/web', SERVICE('10ms'), 3)]);
    const v1 = buildSnapshot(WEB, OPTIONS, undefined, v1set);
    const v2set = policies([], [kv('policies/web', '{"appliesTo":', 4)], v1.policies);
    const v2 = buildSnapshot(WEB, OPTIONS, v1, v2set);
    assert.deepEqual(routeOf(v2, '/web').policy, routeOf(v1, '/web').policy);
    assert.equal(v2.problems[0]?.keptLastGood, true);
  });

  test('no policies: same snapshot as without the argument', () => {
    assert.equal(buildSnapshot(WEB, OPTIONS, undefined, policies([])).version, buildSnapshot(WEB, OPTIONS).version);
  });
});

describe('policies whose target does not exist', () => {
  const views = { catalog: { web: ['urlprefix-/web'] }, health: new Map(), kv: [] };
  const resolveDocs = (docs: Record<string, object>) =>
    resolvePolicies([], Object.entries(docs).map(([name, doc], i) => ({ key: `gateway/policies/${name}`, value: JSON.stringify(doc), modifyIndex: i + 1 })), 'gateway/', undefined);

  test('a route policy for a route nobody serves is reported, not silently ignored', () => {
    const snap = buildSnapshot(views, { allowWarning: false, kvPrefix: 'gateway/' }, undefined, resolveDocs({ typo: { appliesTo: { route: '/wbe' }, limits: { maxBodyBytes: 10 } } }));
    assert.deepEqual(snap.problems.map((p) => [p.kind, p.subject]), [['policy', 'policies/typo']]);
    assert.match(snap.problems[0]?.message ?? '', /route \/wbe, which does not exist/);
  });

  test('a trailing slash in appliesTo.route still names the route (paths stay case-sensitive)', () => {
    const upper = buildSnapshot(views, { allowWarning: false, kvPrefix: 'gateway/' }, undefined, resolveDocs({ web: { appliesTo: { route: '/WEB' }, limits: { maxBodyBytes: 10 } } }));
    assert.match(upper.problems[0]?.message ?? '', /route \/WEB, which does not exist/);
    const snap = buildSnapshot(views, { allowWarning: false, kvPrefix: 'gateway/' }, undefined, resolveDocs({ web: { appliesTo: { route: '/web/' }, limits: { maxBodyBytes: 10 } } }));
    assert.deepEqual(snap.problems, []);
    assert.equal(snap.routes[0]?.policy.limits.maxBodyBytes, 10);
  });

  test('a service policy for a service that is not routed is reported', () => {
    const snap = buildSnapshot(views, { allowWarning: false, kvPrefix: 'gateway/' }, undefined, resolveDocs({ pay: { appliesTo: { service: 'payments' }, limits: { maxBodyBytes: 10 } } }));
    assert.match(snap.problems[0]?.message ?? '', /service "payments", which is not routed/);
  });
});

describe('authorize on a public route', () => {
  test('is reported, naming the document that made the route public', () => {
    const kv = [
      { key: 'gateway/policies/svc', value: JSON.stringify({ appliesTo: { service: 'web' }, authorize: { scopes: ['admin'] } }), modifyIndex: 1 },
      { key: 'gateway/policies/open', value: JSON.stringify({ appliesTo: { route: '/web' }, auth: { methods: [] } }), modifyIndex: 2 },
    ];
    const snap = buildSnapshot({ catalog: { web: ['urlprefix-/web'] }, health: new Map(), kv }, { allowWarning: false, kvPrefix: 'gateway/' }, undefined, resolvePolicies([], kv, 'gateway/', undefined));
    assert.deepEqual(snap.problems.map((p) => p.subject), ['policies/svc']);
    assert.match(snap.problems[0]?.message ?? '', /route \/web is public \(auth.methods is empty in policies\/open\)/);
  });

  test('is fine once the route authenticates', () => {
    const kv = [{ key: 'gateway/policies/svc', value: JSON.stringify({ appliesTo: { service: 'web' }, auth: { methods: ['apiKey'] }, authorize: { scopes: ['admin'] } }), modifyIndex: 1 }];
    const snap = buildSnapshot({ catalog: { web: ['urlprefix-/web'] }, health: new Map(), kv }, { allowWarning: false, kvPrefix: 'gateway/' }, undefined, resolvePolicies([], kv, 'gateway/', undefined));
    assert.deepEqual(snap.problems, []);
  });
});
