/**
 * Instances as Consul stores them can carry any address string and any port. The ones that cannot
 * be dialled are skipped and reported (kind "instance"); the rest of the service is built as usual.
 * Also Consul's health JSON for such instances: one odd entry must not fail the whole read.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Problem, ServiceInstance } from '../../src/core/types.ts';
import { buildEndpoints, endpointKey, undialable } from '../../src/state/endpoints.ts';
import { buildSnapshot } from '../../src/state/snapshot.ts';
import { catalogServicesSchema, healthServiceSchema } from '../../src/consul/schemas.ts';

describe('undialable: addresses that cannot be dialled', () => {
  const cases: { name: string; address: string; why: RegExp }[] = [
    { name: 'host:port in Address', address: '127.0.0.1:9', why: /not an IP address or host name/ },
    { name: 'a URL', address: 'http://x', why: /not an IP address or host name/ },
    { name: 'a URL with a path', address: 'http://127.0.0.1:8080/x', why: /not an IP address or host name/ },
    { name: 'a space inside', address: 'a b', why: /not an IP address or host name/ },
    { name: 'leading space', address: ' 127.0.0.1', why: /not an IP address or host name/ },
    { name: 'trailing space', address: '127.0.0.1 ', why: /not an IP address or host name/ },
    { name: 'only a space', address: ' ', why: /not an IP address or host name/ },
    { name: 'empty (no service or node address)', address: '', why: /no address/ },
    { name: 'IPv4 octet out of range', address: '300.1.1.1', why: /not an IP address or host name/ },
    { name: 'three-part IPv4', address: '1.2.3', why: /not an IP address or host name/ },
    { name: 'short IPv4', address: '127.1', why: /not an IP address or host name/ },
    { name: 'IPv4 with leading zeros', address: '01.02.03.04', why: /not an IP address or host name/ },
    { name: 'empty label', address: 'a..b', why: /not an IP address or host name/ },
    { name: 'leading dot', address: '.a', why: /not an IP address or host name/ },
    { name: 'leading dash', address: '-a', why: /not an IP address or host name/ },
    { name: 'trailing dash', address: 'a-', why: /not an IP address or host name/ },
    { name: 'label longer than 63', address: 'x'.repeat(64), why: /not an IP address or host name/ },
    { name: 'name longer than 253', address: `${`${'a'.repeat(63)}.`.repeat(4)}a`, why: /not an IP address or host name/ },
    { name: 'non-ASCII name', address: 'exämple.com', why: /not an IP address or host name/ },
    { name: 'zero-width space', address: '\u200b', why: /not an IP address or host name/ },
    { name: 'NUL inside', address: 'a\u0000b', why: /not an IP address or host name/ },
    { name: 'newline inside', address: 'a\nb', why: /not an IP address or host name/ },
    { name: 'IPv6 in brackets', address: '[::1]', why: /not an IP address or host name/ },
    { name: 'IPv6 with a zone id', address: 'fe80::1%eth0', why: /zone id/ },
    { name: 'percent-encoded', address: 'a%20b', why: /not an IP address or host name/ },
    { name: 'userinfo', address: 'user:pw@h', why: /not an IP address or host name/ },
    { name: 'slash', address: 'a/b', why: /not an IP address or host name/ },
    { name: 'query', address: 'a?b', why: /not an IP address or host name/ },
    { name: 'fragment', address: 'a#b', why: /not an IP address or host name/ },
  ];
  for (const { name, address, why } of cases) {
    test(`${name}: ${JSON.stringify(address).slice(0, 40)}`, () => {
      const reason = undialable(address, 8080);
      assert.ok(reason !== null, 'must be refused');
      assert.match(reason, why);
      assert.ok(!/[\n\u0000]/.test(reason), `the reason must not carry raw control characters: ${JSON.stringify(reason)}`);
    });
  }
});

describe('undialable: ports that cannot be dialled', () => {
  for (const port of [0, -1, 65536, 70000, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    test(`port ${port}`, () => {
      assert.match(undialable('127.0.0.1', port) ?? '', /is not 1-65535/);
    });
  }
});

describe('undialable: addresses that work', () => {
  const cases: { address: string; key: string }[] = [
    { address: '127.0.0.1', key: '127.0.0.1:8080' },
    { address: '10.1.2.3', key: '10.1.2.3:8080' },
    { address: '::1', key: '[::1]:8080' },
    { address: '::ffff:127.0.0.1', key: '[::ffff:127.0.0.1]:8080' },
    { address: '2001:db8::1', key: '[2001:db8::1]:8080' },
    { address: 'localhost', key: 'localhost:8080' },
    { address: 'localhost.', key: 'localhost.:8080' },
    { address: 'web-1.node.dc1.consul', key: 'web-1.node.dc1.consul:8080' },
    { address: 'A.EXAMPLE', key: 'A.EXAMPLE:8080' },
    { address: 'a_b', key: 'a_b:8080' },
  ];
  for (const { address, key } of cases) {
    test(address, () => {
      assert.equal(undialable(address, 8080), null);
      assert.equal(undialable(address, 1), null);
      assert.equal(undialable(address, 65535), null);
      assert.equal(endpointKey(address, 8080), key);
      // What the pool dials must be a valid URL.
      assert.doesNotThrow(() => new URL(`http://${address.includes(':') ? `[${address}]` : address}:8080`));
    });
  }
});

function inst(id: string, address: string, port: number, extra: Partial<ServiceInstance> = {}): ServiceInstance {
  return {
    id,
    service: 'web',
    node: 'node-1',
    address,
    port,
    tags: ['urlprefix-/web'],
    weights: { passing: 1, warning: 1 },
    checks: [{ id: `service:${id}`, status: 'passing', serviceId: id }],
    ...extra,
  };
}

describe('buildEndpoints', () => {
  test('undialable instances are skipped and reported; the others are built', () => {
    const problems: Problem[] = [];
    const endpoints = buildEndpoints(
      'web',
      [inst('good', '127.0.0.1', 8080), inst('hostport', '127.0.0.1:9', 8080), inst('port0', '127.0.0.1', 0), inst('v6', '::1', 8081), inst('big', '127.0.0.1', 70000)],
      false,
      problems,
    );
    assert.deepEqual(endpoints.map((e) => e.id).sort(), ['good', 'v6']);
    assert.deepEqual(
      problems.map((p) => [p.kind, p.subject]).sort(),
      [
        ['instance', 'web/big'],
        ['instance', 'web/hostport'],
        ['instance', 'web/port0'],
      ],
    );
    for (const p of problems) assert.match(p.message, /instance skipped \(node node-1\)/);
  });

  test('weights that are not positive numbers give no traffic; huge ones are capped', () => {
    const problems: Problem[] = [];
    const endpoints = buildEndpoints(
      'web',
      [
        inst('neg', '127.0.0.1', 1, { weights: { passing: -1, warning: 1 } }),
        inst('nan', '127.0.0.1', 2, { weights: { passing: Number.NaN, warning: 1 } }),
        inst('huge', '127.0.0.1', 3, { weights: { passing: 1e12, warning: 1 } }),
        inst('frac', '127.0.0.1', 4, { weights: { passing: 2.7, warning: 1 } }),
      ],
      false,
      problems,
    );
    const weight = (id: string) => endpoints.find((e) => e.id === id)?.weight;
    assert.equal(weight('neg'), 0);
    assert.equal(weight('nan'), 0);
    assert.equal(weight('huge'), 1_000_000);
    assert.equal(weight('frac'), 2);
    assert.deepEqual(problems, []);
  });

  test('a snapshot with a bad instance still builds every service, and says why one instance is missing', () => {
    const health = new Map<string, ServiceInstance[]>([
      ['web', [inst('good', '127.0.0.1', 8080), inst('bad', 'http://x', 8080)]],
      ['api', [{ ...inst('api-1', '127.0.0.1', 9090), service: 'api', tags: ['urlprefix-/api'] }]],
    ]);
    const snapshot = buildSnapshot({ catalog: { web: ['urlprefix-/web'], api: ['urlprefix-/api'] }, health, kv: [] }, { allowWarning: false, kvPrefix: 'gateway/' });
    assert.deepEqual(Object.keys(snapshot.services).sort(), ['api', 'web']);
    assert.equal(snapshot.services.web?.healthy, 1);
    assert.equal(snapshot.services.api?.healthy, 1);
    assert.deepEqual(
      snapshot.problems.filter((p) => p.kind === 'instance').map((p) => p.subject),
      ['web/bad'],
    );
  });
});

/** One entry of `/v1/health/service/<name>` as Consul 1.8 writes it. */
function healthEntry(id: string, service: Record<string, unknown>, node: Record<string, unknown> = { Node: 'n1', Address: '127.0.0.1' }): unknown {
  return {
    Node: { ID: '', Datacenter: 'dc1', ...node },
    Service: { ID: id, Service: 'web', Tags: ['urlprefix-/web'], Address: '127.0.0.1', Port: 8080, Weights: { Passing: 1, Warning: 1 }, ...service },
    Checks: [{ CheckID: `service:${id}`, Status: 'passing', ServiceID: id }],
  };
}

describe('healthServiceSchema: one odd instance does not fail the read of its service', () => {
  const cases: { name: string; service: Record<string, unknown>; node?: Record<string, unknown>; address: string; port: number }[] = [
    { name: 'port 70000 (the catalog API stores it)', service: { Port: 70000 }, address: '127.0.0.1', port: 70000 },
    { name: 'port -1', service: { Port: -1 }, address: '127.0.0.1', port: -1 },
    { name: 'port 0', service: { Port: 0 }, address: '127.0.0.1', port: 0 },
    { name: 'address host:port', service: { Address: '127.0.0.1:9' }, address: '127.0.0.1:9', port: 8080 },
    { name: 'no service address: the node address', service: { Address: '' }, address: '127.0.0.1', port: 8080 },
    { name: 'null service address', service: { Address: null }, address: '127.0.0.1', port: 8080 },
    { name: 'no service or node address', service: { Address: '' }, node: { Node: 'n1', Address: '' }, address: '', port: 8080 },
    { name: 'node without Address field', service: {}, node: { Node: 'n1' }, address: '127.0.0.1', port: 8080 },
    { name: 'negative weights', service: { Weights: { Passing: -3, Warning: -1 } }, address: '127.0.0.1', port: 8080 },
    { name: 'weights null', service: { Weights: null }, address: '127.0.0.1', port: 8080 },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const parsed = healthServiceSchema.safeParse([healthEntry('good', { Port: 9000 }), healthEntry('odd', c.service, c.node)]);
      assert.ok(parsed.success, parsed.success ? '' : JSON.stringify(parsed.error.issues));
      assert.deepEqual(parsed.data.map((i) => i.id), ['good', 'odd']);
      const odd = parsed.data.find((i) => i.id === 'odd');
      assert.equal(odd?.address, c.address);
      assert.equal(odd?.port, c.port);
      // And the snapshot build skips (and reports) exactly the instance that cannot be dialled.
      const problems: Problem[] = [];
      const endpoints = buildEndpoints('web', parsed.data, false, problems);
      assert.ok(endpoints.some((e) => e.id === 'good'));
      assert.equal(endpoints.some((e) => e.id === 'odd'), undialable(c.address, c.port) === null);
    });
  }

  test('a body that is not a list of health entries still fails loudly', () => {
    assert.equal(healthServiceSchema.safeParse({ error: 'ACL not found' }).success, false);
    assert.equal(healthServiceSchema.safeParse([{ Node: 'x' }]).success, false);
  });
});

describe('catalogServicesSchema', () => {
  test('service names that are Object.prototype members are kept as own entries, __proto__ too', () => {
    const body = JSON.parse('{"__proto__":["urlprefix-/p"],"constructor":["urlprefix-/c"],"toString":null,"hasOwnProperty":["b","a"],"web":["urlprefix-/web"]}') as unknown;
    const catalog = catalogServicesSchema.parse(body);
    assert.deepEqual(Object.keys(catalog), ['__proto__', 'constructor', 'hasOwnProperty', 'toString', 'web']);
    assert.equal(Object.getPrototypeOf(catalog), Object.prototype, 'the prototype must not be replaced');
    assert.ok(Object.hasOwn(catalog, '__proto__'));
    assert.deepEqual(catalog.__proto__, ['urlprefix-/p']);
    assert.deepEqual(catalog.toString, []);
    assert.deepEqual(catalog.hasOwnProperty, ['a', 'b']);
  });

  test('a malformed body still fails', () => {
    assert.equal(catalogServicesSchema.safeParse([]).success, false);
    assert.equal(catalogServicesSchema.safeParse(null).success, false);
    assert.equal(catalogServicesSchema.safeParse({ web: 'urlprefix-/web' }).success, false);
    assert.equal(catalogServicesSchema.safeParse({ web: [1] }).success, false);
  });
});
