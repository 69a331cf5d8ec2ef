/**
 * Who serves a route several services claim, and what keeps a protected route from being taken
 * over: src/state/route-owners.ts on its own, then the whole takeover scenario through successive
 * buildSnapshot calls (each one's previous snapshot is its memory).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews, KvEntry, Problem, ServiceInstance } from '../../src/core/types.ts';
import { documentId, type RawDocument } from '../../src/policy/documents.ts';
import { indexPolicies, routePolicy } from '../../src/policy/effective.ts';
import { resolvePolicies, type PolicySet } from '../../src/policy/resolve.ts';
import { chooseOwners, guardRoutes, type ClaimedRoute, type OwnershipMemory, type RouteGuard } from '../../src/state/route-owners.ts';
import { buildSnapshot, type Snapshot } from '../../src/state/snapshot.ts';

const PREFIX = 'gateway/';

function file(name: string, doc: unknown): RawDocument {
  const id = documentId('policy', name);
  return { id, kind: 'policy', name, origin: { kind: 'file', path: `/etc/cgw/${name}.json` }, text: JSON.stringify(doc) };
}

const ADMIN_KEYS = file('admin-keys', { appliesTo: { service: 'admin' }, auth: { methods: ['apiKey'] } });
const INTRUDER_KEYS = file('intruder-keys', { appliesTo: { service: 'intruder' }, auth: { methods: ['apiKey'] } });
const ADMIN_PUBLIC = file('admin-keys', { appliesTo: { service: 'admin' }, auth: { methods: [] } });
const ADMIN_TIMEOUTS = file('admin-keys', { appliesTo: { service: 'admin' }, timeouts: { request: '5s' } });
const DEFAULTS_KEYS = file('defaults', { appliesTo: 'defaults', auth: { methods: ['apiKey'] } });
const ROUTE_KEYS = file('admin-route', { appliesTo: { route: '/admin' }, auth: { methods: ['apiKey'] } });

function policies(files: RawDocument[], kv: KvEntry[] = []): PolicySet {
  return resolvePolicies(files, kv, PREFIX, undefined);
}

const tag = (id: string, service: string, text = `urlprefix-${id}`): ClaimedRoute => ({ id, service, source: { kind: 'tag', tag: text } });
const declared = (id: string, service: string, document: string): ClaimedRoute => ({ id, service, source: { kind: 'kv', document } });
const NO_MEMORY: OwnershipMemory = { owners: new Map(), guards: {} };
const memory = (owners: Record<string, string>, guards: Record<string, RouteGuard> = {}): OwnershipMemory => ({ owners: new Map(Object.entries(owners)), guards });

describe('chooseOwners', () => {
  const cases: {
    name: string;
    claims: ClaimedRoute[];
    memory: OwnershipMemory;
    files?: RawDocument[];
    winner: string;
    problems: { kind: string; subject: string; message: RegExp }[];
  }[] = [
    { name: 'one claim: no problem', claims: [tag('/admin', 'admin')], memory: NO_MEMORY, winner: 'admin', problems: [] },
    {
      name: 'no memory, no policy: the first by name',
      claims: [tag('/admin', 'aaa'), tag('/admin', 'admin')],
      memory: NO_MEMORY,
      winner: 'aaa',
      problems: [{ kind: 'route', subject: 'admin', message: /served by service "aaa" \(first by name\)/ }],
    },
    {
      name: 'the incumbent keeps the route against a newcomer that sorts first',
      claims: [tag('/admin', 'aaa'), tag('/admin', 'admin')],
      memory: memory({ '/admin': 'admin' }),
      winner: 'admin',
      problems: [{ kind: 'route', subject: 'aaa', message: /served by service "admin" \(it served the route first\); tag "urlprefix-\/admin" of service "aaa" ignored/ }],
    },
    {
      name: 'the incumbent keeps the route against a newcomer that sorts last',
      claims: [tag('/admin', 'admin'), tag('/admin', 'zzz')],
      memory: memory({ '/admin': 'admin' }),
      winner: 'admin',
      problems: [{ kind: 'route', subject: 'zzz', message: /it served the route first/ }],
    },
    {
      name: 'no memory (a gateway started with both registered): the claimant a service policy targets',
      claims: [tag('/admin', 'aaa'), tag('/admin', 'admin')],
      memory: NO_MEMORY,
      files: [ADMIN_KEYS],
      winner: 'admin',
      problems: [{ kind: 'route', subject: 'aaa', message: /policy policies\/admin-keys targets it/ }],
    },
    {
      name: 'a guard wins over the incumbent: the protected service gets its route back',
      claims: [tag('/admin', 'admin'), tag('/admin', 'intruder')],
      memory: memory({ '/admin': 'intruder' }, { '/admin': { service: 'admin', document: 'policies/admin-keys' } }),
      files: [ADMIN_KEYS],
      winner: 'admin',
      problems: [{ kind: 'route', subject: 'intruder', message: /protected by policy policies\/admin-keys/ }],
    },
    {
      name: 'a guard for a service that no longer claims the route: the incumbent keeps it',
      claims: [tag('/admin', 'intruder'), tag('/admin', 'other')],
      memory: memory({ '/admin': 'other' }, { '/admin': { service: 'admin', document: 'policies/admin-keys' } }),
      winner: 'other',
      problems: [{ kind: 'route', subject: 'intruder', message: /it served the route first/ }],
    },
    {
      name: 'a route document wins over every tag, whatever the memory',
      claims: [tag('/admin', 'admin'), declared('/admin', 'static:admin-doc', 'routes/admin-doc')],
      memory: memory({ '/admin': 'admin' }, { '/admin': { service: 'admin', document: 'policies/admin-keys' } }),
      winner: 'static:admin-doc',
      problems: [{ kind: 'route', subject: 'admin', message: /declared by document routes\/admin-doc; tag "urlprefix-\/admin" ignored/ }],
    },
    {
      name: 'the same tag of the same service listed twice: nothing to report',
      claims: [tag('/admin', 'admin'), tag('/admin', 'admin')],
      memory: NO_MEMORY,
      winner: 'admin',
      problems: [],
    },
    {
      name: 'one service repeating a route with other options: a tag problem',
      claims: [tag('/admin', 'admin'), tag('/admin', 'admin', 'urlprefix-/admin strip=/admin')],
      memory: NO_MEMORY,
      winner: 'admin',
      problems: [{ kind: 'tag', subject: 'admin', message: /repeats route \/admin with other options/ }],
    },
    {
      name: 'another spelling of the same route (the id is normalised) cannot take it either',
      claims: [tag('/admin', 'aaa', 'urlprefix-//admin/'), tag('/admin', 'admin')],
      memory: memory({ '/admin': 'admin' }),
      winner: 'admin',
      problems: [{ kind: 'route', subject: 'aaa', message: /tag "urlprefix-\/\/admin\/" of service "aaa" ignored/ }],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const problems: Problem[] = [];
      const winners = chooseOwners(c.claims, c.memory, indexPolicies(policies(c.files ?? [])), problems);
      assert.deepEqual(winners.map((w) => [w.id, w.service]), [['/admin', c.winner]]);
      assert.equal(problems.length, c.problems.length, JSON.stringify(problems));
      for (const [i, expected] of c.problems.entries()) {
        const p = problems[i];
        assert.equal(p?.kind, expected.kind);
        assert.equal(p?.subject, expected.subject);
        assert.match(p?.message ?? '', expected.message);
      }
    });
  }

  test('routes of different ids do not interfere, and come out sorted', () => {
    const winners = chooseOwners([tag('/b', 'x'), tag('/a', 'y'), tag('host.example/a', 'z')], NO_MEMORY, indexPolicies(policies([])), []);
    assert.deepEqual(winners.map((w) => w.id), ['/a', '/b', 'host.example/a']);
  });
});

describe('guardRoutes', () => {
  const ADMIN_GUARD: RouteGuard = { service: 'admin', document: 'policies/admin-keys' };
  const route = (service: string, files: RawDocument[], source: ClaimedRoute['source'] = { kind: 'tag', tag: 'urlprefix-/admin' }) => ({
    id: '/admin',
    service,
    source,
    policy: routePolicy(indexPolicies(policies(files)), service, '/admin'),
  });
  const cases: {
    name: string;
    files: RawDocument[];
    routes: (files: RawDocument[]) => ReturnType<typeof route>[];
    memory: OwnershipMemory;
    guards: Record<string, RouteGuard>;
    held: boolean;
  }[] = [
    { name: 'auth from the service\'s own policy: guarded', files: [ADMIN_KEYS], routes: (f) => [route('admin', f)], memory: NO_MEMORY, guards: { '/admin': ADMIN_GUARD }, held: false },
    { name: 'auth from defaults: no guard (it protects every claimant alike)', files: [DEFAULTS_KEYS], routes: (f) => [route('admin', f)], memory: NO_MEMORY, guards: {}, held: false },
    {
      name: 'auth from a route policy: guarded (against routes that would take its requests under another id)',
      files: [ROUTE_KEYS],
      routes: (f) => [route('admin', f)],
      memory: NO_MEMORY,
      guards: { '/admin': { service: 'admin', document: 'policies/admin-route' } },
      held: false,
    },
    {
      name: 'a route policy follows the route: another service taking it over is protected by it, not held',
      files: [ROUTE_KEYS],
      routes: (f) => [route('intruder', f)],
      memory: memory({ '/admin': 'admin' }, { '/admin': { service: 'admin', document: 'policies/admin-route' } }),
      guards: { '/admin': { service: 'intruder', document: 'policies/admin-route' } },
      held: false,
    },
    { name: 'a public service policy: no guard', files: [ADMIN_PUBLIC], routes: (f) => [route('admin', f)], memory: NO_MEMORY, guards: {}, held: false },
    {
      name: 'the owner left, an intruder claims by tag without auth: held, guard kept',
      files: [ADMIN_KEYS],
      routes: (f) => [route('intruder', f)],
      memory: memory({ '/admin': 'admin' }, { '/admin': ADMIN_GUARD }),
      guards: { '/admin': ADMIN_GUARD },
      held: true,
    },
    {
      name: 'the intruder has auth of its own: not held, no guard for the old owner',
      files: [ADMIN_KEYS, INTRUDER_KEYS],
      routes: (f) => [route('intruder', f)],
      memory: memory({ '/admin': 'admin' }, { '/admin': ADMIN_GUARD }),
      guards: { '/admin': { service: 'intruder', document: 'policies/intruder-keys' } },
      held: false,
    },
    {
      name: 'a route document (an operator) gives the route to another service: not held',
      files: [ADMIN_KEYS],
      routes: (f) => [route('static:doc', f, { kind: 'kv', document: 'routes/doc' })],
      memory: memory({ '/admin': 'admin' }, { '/admin': ADMIN_GUARD }),
      guards: {},
      held: false,
    },
    {
      name: 'the protecting policy was deleted: the guard goes, nothing held',
      files: [],
      routes: (f) => [route('intruder', f)],
      memory: memory({ '/admin': 'admin' }, { '/admin': ADMIN_GUARD }),
      guards: {},
      held: false,
    },
    {
      name: 'the protecting policy no longer authenticates: the guard goes',
      files: [ADMIN_PUBLIC],
      routes: (f) => [route('intruder', f)],
      memory: memory({ '/admin': 'admin' }, { '/admin': ADMIN_GUARD }),
      guards: {},
      held: false,
    },
    {
      name: 'the protecting policy lost its auth section: the guard goes',
      files: [ADMIN_TIMEOUTS],
      routes: (f) => [route('intruder', f)],
      memory: memory({ '/admin': 'admin' }, { '/admin': ADMIN_GUARD }),
      guards: {},
      held: false,
    },
    {
      name: 'nobody claims the route now: the guard waits for the next claim',
      files: [ADMIN_KEYS],
      routes: () => [],
      memory: memory({ '/admin': 'admin' }, { '/admin': ADMIN_GUARD }),
      guards: { '/admin': ADMIN_GUARD },
      held: false,
    },
    {
      name: 'the owner serves the route again: guarded, not held',
      files: [ADMIN_KEYS],
      routes: (f) => [route('admin', f)],
      memory: memory({ '/admin': 'intruder' }, { '/admin': ADMIN_GUARD }),
      guards: { '/admin': ADMIN_GUARD },
      held: false,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const index = indexPolicies(policies(c.files));
      const { guards, holds } = guardRoutes(c.routes(c.files), c.memory, index);
      assert.deepEqual(guards, c.guards);
      assert.equal(holds.has('/admin'), c.held);
      if (c.held) {
        const hold = holds.get('/admin');
        assert.equal(hold?.document, 'policies/admin-keys');
        assert.match(hold?.reason ?? '', /service "intruder" claims it without authentication/);
      }
    });
  }
});

describe('route takeover through successive snapshots', () => {
  const OPTIONS = { allowWarning: false, kvPrefix: PREFIX };
  let port = 30000;
  const instance = (service: string, tags: string[]): ServiceInstance => ({
    id: `${service}-1`,
    service,
    node: 'node-1',
    address: '127.0.0.1',
    port: port++,
    tags,
    weights: { passing: 1, warning: 1 },
    checks: [{ id: `service:${service}-1`, status: 'passing', serviceId: `${service}-1` }],
  });
  const ADMIN = instance('admin', ['urlprefix-/admin']);
  function views(services: ServiceInstance[]): ConsulViews {
    const catalog: Record<string, string[]> = {};
    const health = new Map<string, ServiceInstance[]>();
    for (const s of services) {
      catalog[s.service] = [...s.tags];
      health.set(s.service, [s]);
    }
    return { catalog, health, kv: [] };
  }
  const admin = (s: Snapshot) => s.routes.find((r) => r.id === '/admin');

  // Intruders whose names sort before and after the owner's, and spellings of the same route.
  for (const intruder of [instance('aaa', ['urlprefix-/admin']), instance('zzz', ['urlprefix-/admin/']), instance('intruder', ['urlprefix-//admin strip=/admin'])]) {
    test(`${intruder.service} (${intruder.tags[0] ?? ''}): kept out, then held while the owner is gone, then the owner is back`, () => {
      const set = policies([ADMIN_KEYS]);
      const s1 = buildSnapshot(views([ADMIN]), OPTIONS, undefined, set);
      assert.equal(admin(s1)?.service, 'admin');
      assert.deepEqual(s1.routeGuards, { '/admin': { service: 'admin', document: 'policies/admin-keys' } });

      const s2 = buildSnapshot(views([ADMIN, intruder]), OPTIONS, s1, set);
      assert.equal(admin(s2)?.service, 'admin', 'the newcomer must not take the route');
      assert.deepEqual(admin(s2)?.policy.auth?.methods, ['apiKey']);
      assert.ok(s2.problems.some((p) => p.kind === 'route' && p.subject === intruder.service), 'the claim is the problem');

      const s3 = buildSnapshot(views([intruder]), OPTIONS, s2, set);
      assert.equal(admin(s3)?.service, intruder.service);
      assert.equal(admin(s3)?.heldBy, 'policies/admin-keys', 'without its owner the route is held, not open');
      assert.ok(s3.problems.some((p) => p.kind === 'route' && p.subject === '/admin' && /answers 503/.test(p.message)));

      const s4 = buildSnapshot(views([intruder]), OPTIONS, s3, set);
      assert.equal(admin(s4)?.heldBy, 'policies/admin-keys', 'an unrelated rebuild keeps the hold');

      const s5 = buildSnapshot(views([ADMIN, intruder]), OPTIONS, s4, set);
      assert.equal(admin(s5)?.service, 'admin', 'the owner gets its route back');
      assert.equal(admin(s5)?.heldBy, null);
      assert.deepEqual(admin(s5)?.policy.auth?.methods, ['apiKey']);
    });
  }

  /** Newcomers that take /admin's requests without claiming the id /admin. */
  const capturing: { name: string; tags: string[]; route: string; path: string }[] = [
    { name: 'a nested path', tags: ['urlprefix-/admin/secret'], route: '/admin/secret', path: '/admin/secret' },
    { name: 'a host route on the same path', tags: ['urlprefix-127.0.0.1/admin'], route: '127.0.0.1/admin', path: '/admin' },
    { name: 'a host route on a nested path', tags: ['urlprefix-localhost/admin/x'], route: 'localhost/admin/x', path: '/admin/x/y' },
    { name: 'a glob host route on the same path', tags: ['urlprefix-*.example.com/admin'], route: '*.example.com/admin', path: '/admin' },
  ];
  for (const c of capturing) {
    test(`a newcomer on ${c.name} (${c.tags[0] ?? ''}) is held, and stays held`, () => {
      const set = policies([ADMIN_KEYS]);
      const intruder = instance('intruder', c.tags);
      const s1 = buildSnapshot(views([ADMIN]), OPTIONS, undefined, set);
      const s2 = buildSnapshot(views([ADMIN, intruder]), OPTIONS, s1, set);
      const held = s2.routes.find((r) => r.id === c.route);
      assert.equal(held?.service, 'intruder');
      assert.equal(held?.heldBy, 'policies/admin-keys');
      assert.match(held?.holdReason ?? '', /would take requests of route \/admin/);
      assert.ok(s2.problems.some((p) => p.kind === 'route' && p.subject === c.route));
      assert.equal(admin(s2)?.heldBy, null, 'the owner\'s route is untouched');
      const s3 = buildSnapshot(views([ADMIN, intruder]), OPTIONS, s2, set);
      assert.equal(s3.routes.find((r) => r.id === c.route)?.heldBy, 'policies/admin-keys', 'the next rebuild keeps the hold');
      const s4 = buildSnapshot(views([intruder]), OPTIONS, s3, set);
      assert.equal(s4.routes.find((r) => r.id === c.route)?.heldBy, 'policies/admin-keys', 'and so does the owner leaving');
      // The intruder brings its own authentication: served, no longer held.
      const both = policies([ADMIN_KEYS, INTRUDER_KEYS]);
      const s5 = buildSnapshot(views([ADMIN, intruder]), OPTIONS, s4, both);
      assert.equal(s5.routes.find((r) => r.id === c.route)?.heldBy, null);
    });
  }

  test('a route protected by a route policy: a newcomer on a nested path is held too', () => {
    const set = policies([ROUTE_KEYS]);
    const intruder = instance('intruder', ['urlprefix-/admin/secret']);
    const s1 = buildSnapshot(views([ADMIN]), OPTIONS, undefined, set);
    const s2 = buildSnapshot(views([ADMIN, intruder]), OPTIONS, s1, set);
    assert.equal(s2.routes.find((r) => r.id === '/admin/secret')?.heldBy, 'policies/admin-route');
    const s3 = buildSnapshot(views([ADMIN, intruder]), OPTIONS, s2, set);
    assert.equal(s3.routes.find((r) => r.id === '/admin/secret')?.heldBy, 'policies/admin-route', 'and stays held');
    // Deleting the protecting policy lifts the hold.
    const s4 = buildSnapshot(views([ADMIN, intruder]), OPTIONS, s3, policies([]));
    assert.equal(s4.routes.find((r) => r.id === '/admin/secret')?.heldBy, null);
  });

  const notCapturing: { name: string; tags: string[]; route: string }[] = [
    { name: 'a host route above the guarded path (a whole host)', tags: ['urlprefix-shop.example.com/'], route: 'shop.example.com/' },
    { name: 'a sibling path', tags: ['urlprefix-/administrator'], route: '/administrator' },
    { name: 'the root route (the longer /admin still wins)', tags: ['urlprefix-/'], route: '/' },
    { name: 'a host route on another path', tags: ['urlprefix-127.0.0.1/web'], route: '127.0.0.1/web' },
  ];
  for (const c of notCapturing) {
    test(`a newcomer on ${c.name} is not held`, () => {
      const set = policies([ADMIN_KEYS]);
      const s1 = buildSnapshot(views([ADMIN]), OPTIONS, undefined, set);
      const s2 = buildSnapshot(views([ADMIN, instance('other', c.tags)]), OPTIONS, s1, set);
      assert.equal(s2.routes.find((r) => r.id === c.route)?.heldBy, null);
    });
  }

  test('routes that existed before the guard (an operator\'s public sub-route of another service) are left alone', () => {
    const docs = instance('docs', ['urlprefix-/admin/docs']);
    const set = policies([ADMIN_KEYS]);
    const s1 = buildSnapshot(views([ADMIN, docs]), OPTIONS, undefined, set);
    const s2 = buildSnapshot(views([ADMIN, docs]), OPTIONS, s1, set);
    assert.equal(s2.routes.find((r) => r.id === '/admin/docs')?.heldBy, null);
    // Also when the policy arrives later: the sub-route was there first.
    const s3 = buildSnapshot(views([ADMIN, docs]), OPTIONS, undefined, policies([]));
    const s4 = buildSnapshot(views([ADMIN, docs]), OPTIONS, s3, set);
    const s5 = buildSnapshot(views([ADMIN, docs]), OPTIONS, s4, set);
    assert.equal(s5.routes.find((r) => r.id === '/admin/docs')?.heldBy, null);
  });

  test('the same service adding a sub-route is never held', () => {
    const set = policies([ADMIN_KEYS]);
    const s1 = buildSnapshot(views([ADMIN]), OPTIONS, undefined, set);
    const more = { ...ADMIN, tags: ['urlprefix-/admin', 'urlprefix-/admin/v2'] };
    const s2 = buildSnapshot(views([more]), OPTIONS, s1, set);
    assert.equal(s2.routes.find((r) => r.id === '/admin/v2')?.heldBy, null);
  });

  // Guards live in the snapshot: a gateway that starts without one cannot know who served a route
  // (README, tag format: protect such routes with a route policy).
  test('a gateway started with owner and intruder registered routes to the policy-protected owner', () => {
    const s = buildSnapshot(views([ADMIN, instance('aaa', ['urlprefix-/admin'])]), OPTIONS, undefined, policies([ADMIN_KEYS]));
    assert.equal(admin(s)?.service, 'admin');
  });
});
