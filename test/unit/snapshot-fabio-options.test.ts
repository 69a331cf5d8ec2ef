import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews, ServiceInstance } from '../../src/core/types.ts';
import { buildSnapshot, type BuildOptions } from '../../src/state/snapshot.ts';

const OPTIONS: BuildOptions = { allowWarning: false, kvPrefix: 'gateway/', datacenter: 'dc1' };

function instance(id: string, service: string, port: number): ServiceInstance {
  return {
    id,
    service,
    node: 'node-1',
    address: '10.0.0.5',
    port,
    tags: [],
    weights: { passing: 1, warning: 1 },
    checks: [{ id: `service:${id}`, status: 'passing', serviceId: id }],
  };
}

function views(catalog: Record<string, string[]>): ConsulViews {
  const health = new Map(Object.keys(catalog).map((name, i) => [name, [instance(`${name}-1`, name, 8000 + i)]]));
  return { catalog, health, kv: [] };
}

describe('buildSnapshot: fabio options on routes', () => {
  test('every option reaches the route; route documents and plain tags get the defaults', () => {
    const snap = buildSnapshot(views({ api: ['urlprefix-*.example.com/api strip=/api prepend=/v2 host=dst allow=ip:10.0.0.0/8 proto=grpc'] }), OPTIONS);
    const [route] = snap.routes;
    assert.ok(route);
    assert.equal(route.id, '*.example.com/api');
    assert.equal(route.host, '*.example.com');
    assert.equal(route.strip, '/api');
    assert.equal(route.prepend, '/v2');
    assert.equal(route.upstreamHost, 'dst');
    assert.deepEqual(route.access, { kind: 'allow', cidrs: ['10.0.0.0/8'] });
    assert.equal(route.proto, 'grpc');
    assert.equal(route.tlsSkipVerify, false);
    assert.equal(route.redirect, null);
  });

  test('$DC follows the datacenter option: unknown → a problem; known → the route; the build changes with it', () => {
    const v = views({ web: ['urlprefix-/web/$DC'] });
    const unknown = buildSnapshot(v, { ...OPTIONS, datacenter: null });
    assert.deepEqual(unknown.routes, []);
    assert.match(unknown.problems.find((p) => p.kind === 'tag')?.message ?? '', /\$DC: the datacenter .* not known yet/);
    const known = buildSnapshot(v, OPTIONS, unknown);
    assert.deepEqual(known.routes.map((r) => r.id), ['/web/dc1']);
    assert.equal(known.problems.length, 0);
    assert.notEqual(known.version, unknown.version);
  });
});

describe('buildSnapshot: how a service is dialled', () => {
  test('proto=https gives https endpoints with their own key; tlsskipverify and host= travel with them', () => {
    const snap = buildSnapshot(
      views({
        plain: ['urlprefix-/plain'],
        secure: ['urlprefix-/secure proto=https'],
        insecure: ['urlprefix-/insecure proto=https tlsskipverify=true'],
        named: ['urlprefix-/named proto=https host=api.internal:8443'],
        grpcs: ['urlprefix-/grpcs proto=grpcs'],
      }),
      OPTIONS,
    );
    const ep = (name: string) => snap.services[name]?.endpoints[0];
    assert.match(ep('plain')?.key ?? '', /^10\.0\.0\.5:80\d\d$/);
    assert.equal(ep('plain')?.scheme, undefined);
    assert.match(ep('secure')?.key ?? '', /^https:\/\/10\.0\.0\.5:80\d\d$/);
    assert.deepEqual([ep('secure')?.scheme, ep('secure')?.tlsSkipVerify, ep('secure')?.serverName], ['https', undefined, undefined]);
    assert.deepEqual([ep('insecure')?.scheme, ep('insecure')?.tlsSkipVerify], ['https', true]);
    assert.deepEqual([ep('named')?.scheme, ep('named')?.serverName], ['https', 'api.internal']);
    assert.equal(ep('grpcs')?.scheme, 'https');
  });

  test('tags of one service that disagree: the first (sorted) decides, the other is a problem of its own', () => {
    const snap = buildSnapshot(views({ mixed: ['urlprefix-/b', 'urlprefix-/a proto=https', 'urlprefix-/c proto=https'] }), OPTIONS);
    assert.deepEqual(snap.routes.map((r) => r.id).sort(), ['/a', '/c']);
    assert.equal(snap.services.mixed?.endpoints[0]?.scheme, 'https');
    const problems = snap.problems.filter((p) => p.kind === 'tag');
    assert.equal(problems.length, 1);
    assert.match(problems[0]?.message ?? '', /tag "urlprefix-\/b": asks to dial the instances over plain HTTP, but tag "urlprefix-\/a proto=https" .* over TLS/);
  });

  test('a redirect route never decides how instances are dialled', () => {
    const snap = buildSnapshot(views({ r: ['urlprefix-/a redirect=301,https://x.example$path', 'urlprefix-/b proto=https tlsskipverify=true'] }), OPTIONS);
    assert.deepEqual(snap.routes.map((r) => r.id).sort(), ['/a', '/b']);
    assert.equal(snap.problems.length, 0);
  });

  test('changing proto=https to http rebuilds the service with http endpoints', () => {
    const before = buildSnapshot(views({ s: ['urlprefix-/s proto=https'] }), OPTIONS);
    const after = buildSnapshot(views({ s: ['urlprefix-/s'] }), OPTIONS, before);
    assert.equal(before.services.s?.endpoints[0]?.scheme, 'https');
    assert.equal(after.services.s?.endpoints[0]?.scheme, undefined);
    assert.notEqual(after.version, before.version);
  });
});
