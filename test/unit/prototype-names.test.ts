/**
 * Names from outside that are also names of Object.prototype members: Consul service names, canary
 * keys, consumer ids, policy document names. `constructor`, `toString` and `hasOwnProperty` must
 * work as ordinary names; `__proto__` cannot be routed and is reported; none of them may make a
 * build throw or change what another name means.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews, KvEntry, ServiceInstance } from '../../src/core/types.ts';
import { canonicalJson, contentHash } from '../../src/core/hash.ts';
import { own, setOwn, unroutableServiceName } from '../../src/core/own.ts';
import { catalogServicesSchema } from '../../src/consul/schemas.ts';
import { generateApiKey } from '../../src/policy/consumers.ts';
import { resolvePolicies } from '../../src/policy/resolve.ts';
import { buildSnapshot, type Snapshot } from '../../src/state/snapshot.ts';
import { diffSnapshots } from '../../src/state/diff.ts';

const OPTIONS = { allowWarning: false, kvPrefix: 'gateway/' };
const NAMES = ['constructor', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf'];

let port = 32000;
function instance(service: string, tags: string[]): ServiceInstance {
  return {
    id: `${service}-1`,
    service,
    node: 'node-1',
    address: '127.0.0.1',
    port: port++,
    tags,
    weights: { passing: 1, warning: 1 },
    checks: [{ id: `service:${service}-1`, status: 'passing', serviceId: `${service}-1` }],
  };
}

/** Views as the watches produce them: the catalog through its schema, from Consul's JSON text. */
function views(services: string[], kv: KvEntry[] = []): ConsulViews {
  const body = `{${services.map((s) => `${JSON.stringify(s)}:${JSON.stringify([`urlprefix-/${s}`, 'v1'])}`).join(',')}}`;
  const catalog = catalogServicesSchema.parse(JSON.parse(body));
  return { catalog, health: new Map(services.map((s) => [s, [instance(s, [`urlprefix-/${s}`, 'v1'])]])), kv };
}

function build(v: ConsulViews, previous?: Snapshot): Snapshot {
  const policies = resolvePolicies([], v.kv, 'gateway/', previous?.policies);
  return buildSnapshot(v, OPTIONS, previous, policies);
}

describe('service names', () => {
  test('constructor, toString, hasOwnProperty, valueOf, isPrototypeOf are routed like any name', () => {
    const s = build(views([...NAMES, 'web']));
    assert.deepEqual(Object.keys(s.services).sort(), [...NAMES, 'web'].sort());
    for (const name of NAMES) {
      assert.equal(own(s.services, name)?.healthy, 1, name);
      assert.equal(s.routes.find((r) => r.id === `/${name}`)?.service, name);
    }
    assert.deepEqual(s.problems, []);
  });

  test('__proto__ is reported (kind service) and changes nothing else', () => {
    const s = build(views(['__proto__', 'web']));
    assert.deepEqual(Object.keys(s.services), ['web']);
    assert.equal(Object.getPrototypeOf(s.services), Object.prototype);
    assert.deepEqual(s.routes.map((r) => r.id), ['/web']);
    const problem = s.problems.find((p) => p.kind === 'service');
    assert.equal(problem?.subject, '__proto__');
    assert.match(problem?.message ?? '', /cannot be routed/);
  });

  test('. and .. are reported too: Consul\'s HTTP API cannot address their health', () => {
    for (const name of ['.', '..']) {
      assert.match(unroutableServiceName(name) ?? '', /cannot address it/);
      const s = build(views([name, 'web']));
      assert.deepEqual(Object.keys(s.services), ['web']);
      const problem = s.problems.find((p) => p.kind === 'service');
      assert.equal(problem?.subject, name);
      assert.match(problem?.message ?? '', /cannot be routed \(Consul's HTTP API cannot address it/);
    }
    for (const name of ['...', '.web', 'a..b', 'constructor']) assert.equal(unroutableServiceName(name), null, name);
  });

  test('a catalog that differs only by a __proto__ service hashes differently (so the watch passes the change on)', () => {
    const a = catalogServicesSchema.parse(JSON.parse('{"web":["urlprefix-/web"]}'));
    const b = catalogServicesSchema.parse(JSON.parse('{"__proto__":["urlprefix-/x"],"web":["urlprefix-/web"]}'));
    assert.notEqual(contentHash(a), contentHash(b));
    assert.equal(canonicalJson(b), '{"__proto__":["urlprefix-/x"],"web":["urlprefix-/web"]}');
  });
});

describe('canary keys', () => {
  test('weights for constructor apply; __proto__ is not routed; an invalid toString value is refused', () => {
    const kv: KvEntry[] = [
      { key: 'gateway/canary/constructor', value: '{"weights":{"v1":100}}', modifyIndex: 1 },
      { key: 'gateway/canary/__proto__', value: '{"weights":{"v1":100}}', modifyIndex: 2 },
      { key: 'gateway/canary/toString', value: '{"weights":{"v2":100}}', modifyIndex: 3 },
      { key: 'gateway/canary/hasOwnProperty', value: '[[[[', modifyIndex: 4 },
    ];
    const s = build(views(['constructor', 'toString', 'hasOwnProperty', '__proto__'], kv));
    assert.deepEqual(own(s.services, 'constructor')?.canary?.weights, { v1: 100 });
    assert.equal(own(s.services, 'toString')?.canary, null);
    assert.equal(own(s.services, 'hasOwnProperty')?.canary, null);
    const subjects = s.problems.filter((p) => p.kind === 'canary').map((p) => p.subject).sort();
    assert.deepEqual(subjects, ['gateway/canary/__proto__', 'gateway/canary/hasOwnProperty', 'gateway/canary/toString']);
  });

  test('weights naming __proto__ or constructor as tags', () => {
    const kv: KvEntry[] = [{ key: 'gateway/canary/web', value: '{"weights":{"constructor":100}}', modifyIndex: 1 }];
    const s = build(views(['web'], kv));
    // No instance carries a "constructor" tag: refused like any missing tag, no crash.
    assert.equal(own(s.services, 'web')?.canary, null);
    assert.ok(s.problems.some((p) => p.kind === 'canary' && /"constructor"/.test(p.message)));
    const s2 = build(views(['web'], [{ key: 'gateway/canary/web', value: '{"weights":{"__proto__":100}}', modifyIndex: 2 }]));
    assert.equal(own(s2.services, 'web')?.canary, null);
    assert.ok(s2.problems.some((p) => p.kind === 'canary'));
  });
});

describe('consumer ids', () => {
  const { keyHash } = generateApiKey('constructor');

  test('an invalid record at consumers/constructor is a problem, not a build that throws', () => {
    const kv: KvEntry[] = [{ key: 'gateway/consumers/constructor', value: 'not json', modifyIndex: 5 }];
    const policies = resolvePolicies([], kv, 'gateway/', undefined);
    assert.deepEqual(Object.keys(policies.consumers), []);
    const problem = policies.problems.find((p) => p.subject === 'gateway/consumers/constructor');
    assert.equal(problem?.keptLastGood, false, 'there is no last good record');
    assert.doesNotThrow(() => buildSnapshot(views(['web'], kv), OPTIONS, undefined, policies));
  });

  test('a valid record at consumers/constructor is a consumer like any other, and its last good version is kept', () => {
    const good: KvEntry[] = [{ key: 'gateway/consumers/constructor', value: JSON.stringify({ keyHash, plan: 'gold' }), modifyIndex: 6 }];
    const first = resolvePolicies([], good, 'gateway/', undefined);
    assert.equal(own(first.consumers, 'constructor')?.record.keyHash, keyHash);
    const broken = resolvePolicies([], [{ key: 'gateway/consumers/constructor', value: '{', modifyIndex: 7 }], 'gateway/', first);
    assert.equal(own(broken.consumers, 'constructor')?.modifyIndex, 6);
    assert.equal(broken.problems.find((p) => p.subject === 'gateway/consumers/constructor')?.keptLastGood, true);
  });

  test('__proto__ and other ids outside the id syntax are refused', () => {
    const kv: KvEntry[] = ['__proto__', 'toString', 'hasOwnProperty'].map((id, i) => ({ key: `gateway/consumers/${id}`, value: JSON.stringify({ keyHash }), modifyIndex: i + 1 }));
    const policies = resolvePolicies([], kv, 'gateway/', undefined);
    assert.deepEqual(Object.keys(policies.consumers), []);
    assert.equal(Object.getPrototypeOf(policies.consumers), Object.prototype);
    assert.equal(policies.problems.filter((p) => p.kind === 'consumer').length, 3);
  });
});

describe('the change log line', () => {
  test('a consumer and a service named constructor appear as added, not as changed', () => {
    const { keyHash } = generateApiKey('constructor');
    const prev = build(views(['web']));
    const kv: KvEntry[] = [
      { key: 'gateway/consumers/constructor', value: JSON.stringify({ keyHash }), modifyIndex: 9 },
      { key: 'gateway/canary/web', value: '{"weights":{"v1":100}}', modifyIndex: 10 },
    ];
    const next = build(views(['web', 'constructor'], kv), prev);
    const diff = diffSnapshots(prev, next);
    assert.deepEqual(diff.consumersAdded, ['constructor']);
    assert.deepEqual(diff.consumersChanged, []);
    assert.deepEqual(diff.servicesAdded, ['constructor']);
    assert.deepEqual(diff.canaryChanged, ['web']);
  });
});

describe('policy document names', () => {
  test('policies/constructor, policies/toString and policies/__proto__ in KV resolve without throwing', () => {
    const kv: KvEntry[] = [
      { key: 'gateway/policies/constructor', value: JSON.stringify({ appliesTo: { service: 'toString' }, auth: { methods: ['apiKey'] } }), modifyIndex: 1 },
      { key: 'gateway/policies/toString', value: JSON.stringify({ appliesTo: { service: 'constructor' }, timeouts: { request: '5s' } }), modifyIndex: 2 },
      { key: 'gateway/policies/__proto__', value: JSON.stringify({ appliesTo: { service: '__proto__' }, auth: { methods: ['apiKey'] } }), modifyIndex: 3 },
    ];
    const s = build(views(['constructor', 'toString', '__proto__'], kv));
    assert.deepEqual(s.routes.find((r) => r.id === '/toString')?.policy.auth?.methods, ['apiKey']);
    assert.equal(s.routes.find((r) => r.id === '/toString')?.policy.sources.auth, 'policies/constructor');
    assert.equal(s.routes.find((r) => r.id === '/constructor')?.policy.timeouts.request, 5000);
    // The __proto__ service is not routed, so its policy does nothing and says so.
    assert.ok(s.problems.some((p) => p.kind === 'policy' && p.subject === 'policies/__proto__' && /not routed/.test(p.message)));
  });
});

describe('setOwn', () => {
  test('__proto__ becomes an own entry and the prototype stays', () => {
    const record: Record<string, number> = {};
    setOwn(record, '__proto__', 1);
    setOwn(record, 'constructor', 2);
    assert.deepEqual(Object.keys(record), ['__proto__', 'constructor']);
    assert.equal(Object.getPrototypeOf(record), Object.prototype);
    assert.equal(own(record, '__proto__'), 1);
    assert.equal(own(record, 'constructor'), 2);
    assert.equal(own(record, 'toString'), undefined);
  });
});
