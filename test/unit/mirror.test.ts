/**
 * Shadow traffic, the pure parts: the mirror section's schema, the sampler at its edges, which
 * services a mirror makes the gateway watch and build, the problems a mirror that cannot send
 * shows, the compiled mirror (target label, timeout, no mirror where it cannot apply) and the
 * subset pick that never falls back to the instances serving the client.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews, ServiceInstance } from '../../src/core/types.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { own } from '../../src/core/own.ts';
import { formatZodIssues } from '../../src/policy/canary.ts';
import { documentId, type RawDocument } from '../../src/policy/documents.ts';
import { resolvePolicies, type PolicySet } from '../../src/policy/resolve.ts';
import { policyDocumentSchema } from '../../src/policy/schema.ts';
import { buildSnapshot, servicesNamedByDocuments, type BuildOptions, type RouteSnapshot, type Snapshot } from '../../src/state/snapshot.ts';
import { compileMirror, MIRROR_TIMEOUT_CAP_MS, samplerOf } from '../../src/runtime/mirror.ts';
import { ServiceBalancer } from '../../src/balancer/service-balancer.ts';
import { UpstreamPools } from '../../src/balancer/upstream-pools.ts';
import { MirrorGate } from '../../src/proxy/mirror.ts';
import { formatConfigError, parseGatewayConfig } from '../../src/config.ts';
import { ZodError } from 'zod';

const PREFIX = 'gateway/';
const OPTIONS: BuildOptions = { allowWarning: false, kvPrefix: PREFIX };

function mirrorError(mirror: unknown, appliesTo: unknown = { route: '/web' }): string {
  const r = policyDocumentSchema.safeParse({ appliesTo, mirror });
  assert.equal(r.success, false, `should be rejected: ${JSON.stringify(mirror)}`);
  return r.success ? '' : formatZodIssues(r.error);
}

function mirrorOf(mirror: unknown, appliesTo: unknown = { route: '/web' }) {
  const r = policyDocumentSchema.safeParse({ appliesTo, mirror });
  assert.ok(r.success, r.success ? '' : `should be accepted: ${formatZodIssues(r.error)}`);
  return r.data.mirror;
}

describe('mirror section: accepted', () => {
  test('subset with a whole percent: maxBodyBytes defaults to 64 KiB, no timeout', () => {
    assert.deepEqual(mirrorOf({ subset: 'shadow', percent: 30 }), { subset: 'shadow', percent: 30, maxBodyBytes: 65_536 });
  });
  test('service with a decimal percent, a body limit and a timeout (ms out)', () => {
    assert.deepEqual(mirrorOf({ service: 'web-next', percent: 0.5, maxBodyBytes: 0, timeout: '750ms' }, { service: 'web' }), { service: 'web-next', percent: 0.5, maxBodyBytes: 0, timeout: 750 });
  });
  test('percent 100 and the smallest positive share', () => {
    assert.equal(mirrorOf({ subset: 'a', percent: 100 })?.percent, 100);
    assert.equal(mirrorOf({ subset: 'a', percent: 0.001 })?.percent, 0.001);
  });
  test('prototype names as a tag or a service name are plain strings', () => {
    assert.equal(mirrorOf({ subset: '__proto__', percent: 1 })?.subset, '__proto__');
    assert.equal(mirrorOf({ subset: 'constructor', percent: 1 })?.subset, 'constructor');
    assert.equal(mirrorOf({ service: 'constructor', percent: 1 })?.service, 'constructor');
  });
});

describe('mirror section: rejected with the bad field named', () => {
  const cases: { name: string; mirror: unknown; appliesTo?: unknown; error: string | RegExp }[] = [
    { name: 'neither subset nor service', mirror: { percent: 10 }, error: /^mirror: set exactly one of subset .* or service/ },
    { name: 'both subset and service', mirror: { subset: 'a', service: 'b', percent: 10 }, error: /^mirror: set exactly one of subset/ },
    { name: 'percent 0', mirror: { subset: 'a', percent: 0 }, error: /^mirror\.percent: percent must be above 0/ },
    { name: 'negative percent', mirror: { subset: 'a', percent: -5 }, error: /^mirror\.percent: percent must be above 0/ },
    { name: 'percent over 100', mirror: { subset: 'a', percent: 100.5 }, error: 'mirror.percent: percent must be at most 100' },
    { name: 'percent as a string', mirror: { subset: 'a', percent: '30%' }, error: /^mirror\.percent: percent is a number/ },
    { name: 'percent missing', mirror: { subset: 'a' }, error: /^mirror\.percent: / },
    { name: 'percent NaN-like null', mirror: { subset: 'a', percent: null }, error: /^mirror\.percent: / },
    { name: 'unknown field (strict)', mirror: { subset: 'a', percent: 1, weight: 3 }, error: /^mirror: Unrecognized key: "weight"/ },
    { name: '__proto__ as a field (JSON own key)', mirror: JSON.parse('{"subset":"a","percent":1,"__proto__":{"service":"x"}}'), error: /^mirror: Unrecognized key: "__proto__"/ },
    { name: 'empty tag', mirror: { subset: '', percent: 1 }, error: /^mirror\.subset: tag must not be empty/ },
    { name: 'tag with a space', mirror: { subset: 'a b', percent: 1 }, error: /^mirror\.subset: tag must not contain spaces/ },
    { name: 'oversized tag', mirror: { subset: 'x'.repeat(10_000), percent: 1 }, error: 'mirror.subset: tag is longer than 128 characters' },
    { name: '__proto__ as a service name', mirror: { service: '__proto__', percent: 1 }, error: /^mirror\.service: service names are letters/ },
    { name: 'service with a colon (static:...)', mirror: { service: 'static:x', percent: 1 }, error: /^mirror\.service: service names/ },
    { name: 'maxBodyBytes fractional', mirror: { subset: 'a', percent: 1, maxBodyBytes: 1.5 }, error: /^mirror\.maxBodyBytes: / },
    { name: 'maxBodyBytes over 64 MiB', mirror: { subset: 'a', percent: 1, maxBodyBytes: 64 * 1024 * 1024 + 1 }, error: /^mirror\.maxBodyBytes: / },
    { name: 'timeout not a duration', mirror: { subset: 'a', percent: 1, timeout: 'soon' }, error: /^mirror\.timeout: not a duration/ },
    { name: 'timeout over 30 s', mirror: { subset: 'a', percent: 1, timeout: '1m' }, error: 'mirror.timeout: must be between 10ms and 30s' },
    { name: 'an array', mirror: [{ subset: 'a', percent: 1 }], error: /^mirror: / },
    { name: 'in defaults', mirror: { subset: 'a', percent: 1 }, appliesTo: 'defaults', error: 'mirror: mirror is set per route or service, not in defaults' },
    { name: 'a service mirroring to itself', mirror: { service: 'web', percent: 1 }, appliesTo: { service: 'web' }, error: /^mirror\.service: a service cannot mirror to itself/ },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const error = mirrorError(c.mirror, c.appliesTo);
      if (typeof c.error === 'string') assert.equal(error, c.error);
      else assert.match(error, c.error);
    });
  }
});

describe('samplerOf', () => {
  test('100 % copies every request, whatever the draw', () => {
    assert.equal(samplerOf(100, () => 0.9999999999)(), true);
    assert.equal(samplerOf(100, () => 0)(), true);
  });
  test('a share copies draws below it and none at or above it', () => {
    const cases: [number, number, boolean][] = [
      [30, 0, true],
      [30, 0.2999, true],
      [30, 0.3, false],
      [30, 0.9999, false],
      [0.001, 0.0000099, true],
      [0.001, 0.00001, false],
      [99.9, 0.998, true],
      [99.9, 0.9991, false],
    ];
    for (const [percent, draw, expected] of cases) assert.equal(samplerOf(percent, () => draw)(), expected, `${percent} % with draw ${draw}`);
  });
  test('over many draws the share is close to the percent (seeded)', () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const sample = samplerOf(30, random);
    let hits = 0;
    for (let i = 0; i < 100_000; i++) if (sample()) hits++;
    assert.ok(Math.abs(hits / 1000 - 30) < 1, `${hits / 1000} %`);
  });
});

let nextPort = 31000;
function instance(id: string, service: string, tags: string[] = []): ServiceInstance {
  return {
    id,
    service,
    node: 'node-1',
    address: '127.0.0.1',
    port: nextPort++,
    tags,
    weights: { passing: 1, warning: 1 },
    checks: [{ id: `service:${id}`, status: 'passing', serviceId: id }],
  };
}
function views(catalog: Record<string, string[]>, health: Record<string, ServiceInstance[]> = {}): ConsulViews {
  return { catalog, health: new Map(Object.entries(health)), kv: [] };
}
function file(name: string, text: string, kind: 'policy' | 'route' = 'policy'): RawDocument {
  const id = documentId(kind, name);
  return { id, kind, name, origin: { kind: 'file', path: `/etc/cgw/${id}.yaml` }, text };
}
function policies(files: RawDocument[]): PolicySet {
  return resolvePolicies(files, [], PREFIX, undefined);
}
function routeOf(snapshot: Snapshot, id: string): RouteSnapshot {
  const r = snapshot.routes.find((x) => x.id === id);
  assert.ok(r, `route ${id} missing`);
  return r;
}
const mirrorProblems = (s: Snapshot) => s.problems.filter((p) => p.kind === 'policy' && /mirror/.test(p.message));

describe('snapshot: shadow services and mirror problems', () => {
  const set = policies([file('web', JSON.stringify({ appliesTo: { service: 'web' }, mirror: { service: 'web-next', percent: 20 } }))]);

  test('a mirrored-to service is watched like one a route document names', () => {
    assert.deepEqual(servicesNamedByDocuments(set), new Set(['web-next']));
  });

  test('its instances are in the snapshot though nothing routes to it; the route carries the mirror', () => {
    const s = buildSnapshot(
      views({ web: ['urlprefix-/web'], 'web-next': [] }, { web: [instance('w1', 'web', ['urlprefix-/web'])], 'web-next': [instance('n1', 'web-next'), instance('n2', 'web-next')] }),
      OPTIONS,
      undefined,
      set,
    );
    assert.equal(s.services['web-next']?.healthy, 2);
    assert.deepEqual(routeOf(s, '/web').policy.mirror, { service: 'web-next', percent: 20, maxBodyBytes: 65_536 });
    assert.equal(routeOf(s, '/web').policy.sources.mirror, 'policies/web');
    assert.deepEqual(s.routes.map((r) => r.service), ['web'], 'the shadow service gets no route');
    assert.deepEqual(mirrorProblems(s), []);
  });

  test('a target Consul does not know, and a subset tag no instance carries, are problems of the document', () => {
    const s = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: [instance('w1', 'web', ['urlprefix-/web'])] }), OPTIONS, undefined, set);
    assert.deepEqual(mirrorProblems(s).map((p) => [p.subject, p.message]), [['policies/web', 'route /web mirrors to service "web-next", which is not registered in Consul; shadow requests are skipped (no_target) until it is']]);
    const subset = policies([file('web', JSON.stringify({ appliesTo: { route: '/web' }, mirror: { subset: 'shadow', percent: 5 } }))]);
    const t = buildSnapshot(views({ web: ['urlprefix-/web', 'v1'] }, { web: [instance('w1', 'web', ['urlprefix-/web', 'v1'])] }), OPTIONS, undefined, subset);
    assert.match(mirrorProblems(t)[0]?.message ?? '', /subset "shadow", a tag no instance of service "web" carries/);
  });

  test('a route document mirroring to its own service, and a gRPC route, are not mirrored (problem shown)', () => {
    const selfMirror = policies([file('web', JSON.stringify({ appliesTo: { route: '/web' }, mirror: { service: 'web', percent: 5 } }))]);
    const s = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: [instance('w1', 'web', ['urlprefix-/web'])] }), OPTIONS, undefined, selfMirror);
    assert.match(mirrorProblems(s)[0]?.message ?? '', /would mirror to its own service "web"/);
    const grpc = policies([file('g', JSON.stringify({ appliesTo: { service: 'rpc' }, mirror: { subset: 'shadow', percent: 5 } }))]);
    const g = buildSnapshot(views({ rpc: ['urlprefix-/rpc proto=grpc', 'shadow'] }, { rpc: [instance('r1', 'rpc', ['urlprefix-/rpc proto=grpc', 'shadow'])] }), OPTIONS, undefined, grpc);
    assert.match(mirrorProblems(g)[0]?.message ?? '', /gRPC route/);
    assert.equal(compileMirror(routeOf(g, '/rpc'), { balancer: undefined as never }, new Map(), createMetrics({ defaultMetrics: false }), 1000), null);
  });

  test('a service named constructor as target is an own key, never an inherited one', () => {
    const c = policies([file('web', JSON.stringify({ appliesTo: { service: 'web' }, mirror: { service: 'constructor', percent: 5 } }))]);
    const s = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: [instance('w1', 'web', ['urlprefix-/web'])] }), OPTIONS, undefined, c);
    assert.match(mirrorProblems(s)[0]?.message ?? '', /service "constructor", which is not registered/);
    assert.deepEqual(own(s.services, 'constructor')?.endpoints, []);
  });
});

describe('compiled mirror', () => {
  const pools = new UpstreamPools({ connectTimeoutMs: 1000, connectionsPerEndpoint: 1 });
  const metrics = createMetrics({ defaultMetrics: false });
  const set = policies([file('web', JSON.stringify({ appliesTo: { route: '/web' }, mirror: { subset: 'shadow', percent: 100 } }))]);
  const s = buildSnapshot(
    views({ web: ['urlprefix-/web', 'v1', 'shadow'] }, { web: [instance('w1', 'web', ['urlprefix-/web', 'v1']), instance('w2', 'web', ['urlprefix-/web', 'shadow'])] }),
    OPTIONS,
    undefined,
    set,
  );
  const service = s.services.web;
  assert.ok(service);
  const balancer = new ServiceBalancer(service, pools, 'round_robin');

  test('a subset mirror picks only instances with the tag; target label; timeout capped', () => {
    const mirror = compileMirror(routeOf(s, '/web'), { balancer }, new Map(), metrics, 60_000);
    assert.ok(mirror);
    assert.equal(mirror.target, 'subset:shadow');
    assert.equal(mirror.timeoutMs, MIRROR_TIMEOUT_CAP_MS);
    const shadowKey = service.endpoints.find((e) => e.tags.includes('shadow'))?.key;
    for (let i = 0; i < 10; i++) assert.equal(mirror.pick()?.key, shadowKey);
    assert.equal(mirror.sampled(), true);
  });

  test('a tag no healthy instance carries picks nothing (never an instance serving the client)', () => {
    assert.equal(balancer.pickTagged('nosuch'), undefined);
    assert.equal(balancer.pickTagged('__proto__'), undefined);
    assert.equal(balancer.pickTagged('constructor'), undefined);
  });

  test('a service mirror whose service has no slot picks nothing', () => {
    const other = policies([file('web', JSON.stringify({ appliesTo: { route: '/web' }, mirror: { service: 'gone', percent: 1, timeout: '200ms' } }))]);
    const t = buildSnapshot(views({ web: ['urlprefix-/web'] }, { web: [instance('w3', 'web', ['urlprefix-/web'])] }), OPTIONS, undefined, other);
    const mirror = compileMirror(routeOf(t, '/web'), { balancer }, new Map(), metrics, 60_000);
    assert.equal(mirror?.target, 'service:gone');
    assert.equal(mirror?.timeoutMs, 200);
    assert.equal(mirror?.pick(), undefined);
  });

  test('outcomes are counted under route and target', async () => {
    const mirror = compileMirror(routeOf(s, '/web'), { balancer }, new Map(), metrics, 1_000);
    mirror?.count('no_target');
    mirror?.count('no_target');
    const values = (await metrics.mirrorRequests.get()).values;
    assert.deepEqual(values.find((v) => v.labels.outcome === 'no_target'), { labels: { route: '/web', target: 'subset:shadow', outcome: 'no_target' }, value: 2 });
    await pools.closeAll(100);
  });
});

describe('--mirror-max-in-flight', () => {
  const refused: [string, string][] = [
    ['negative', '-1'],
    ['over the bound', '10001'],
    ['not a whole number', '2.5'],
    ['a prototype name', '__proto__'],
    ['constructor', 'constructor'],
    ['empty', ''],
  ];
  for (const [name, value] of refused) {
    test(`refused: ${name}`, () => {
      try {
        parseGatewayConfig({ mirrorMaxInFlight: value } as never);
      } catch (err) {
        assert.ok(err instanceof ZodError);
        assert.match(formatConfigError(err), /^--mirror-max-in-flight: /);
        return;
      }
      assert.fail(`${JSON.stringify(value)} accepted`);
    });
  }
  test('0 is accepted (mirroring off) and 100 is the default', () => {
    assert.equal(parseGatewayConfig({ mirrorMaxInFlight: '0' } as never).mirrorMaxInFlight, 0);
    assert.equal(parseGatewayConfig({}).mirrorMaxInFlight, 100);
  });
});

describe('MirrorGate', () => {
  test('lets at most max copies in, and one more after one leaves; the gauge follows', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const gate = new MirrorGate(2, metrics.mirrorInFlight);
    assert.deepEqual([gate.tryEnter(), gate.tryEnter(), gate.tryEnter()], [true, true, false]);
    assert.equal((await metrics.mirrorInFlight.get()).values[0]?.value, 2);
    gate.leave();
    assert.equal(gate.tryEnter(), true);
    assert.equal(gate.size, 2);
  });
  test('max 0 lets nothing in', () => {
    const gate = new MirrorGate(0, createMetrics({ defaultMetrics: false }).mirrorInFlight);
    assert.equal(gate.tryEnter(), false);
  });
});
