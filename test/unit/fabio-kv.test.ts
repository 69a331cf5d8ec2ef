import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews, KvEntry, ServiceInstance } from '../../src/core/types.ts';
import { buildSnapshot, type BuildOptions, type Snapshot } from '../../src/state/snapshot.ts';
import { MAX_FABIO_TARGETS, shareOf, slotsOf, targetUrl } from '../../src/state/fabio-kv.ts';

const OPTIONS: BuildOptions = { allowWarning: false, kvPrefix: 'gateway/' };
const KEY = 'fabio/config';

function instance(service: string, port: number, tags: string[] = [], status: 'passing' | 'critical' = 'passing'): ServiceInstance {
  const id = `${service}-${port}`;
  return { id, service, node: 'n1', address: '127.0.0.1', port, tags, weights: { passing: 1, warning: 1 }, checks: [{ id: `service:${id}`, status, serviceId: id }] };
}

function views(fabio: KvEntry[] | undefined, catalog: Record<string, string[]> = {}, health: Record<string, ServiceInstance[]> = {}): ConsulViews {
  return { catalog, health: new Map(Object.entries(health)), kv: [], ...(fabio ? { fabio } : {}) };
}

const entry = (value: string | null, key = KEY, modifyIndex = 1): KvEntry => ({ key, value, modifyIndex });

function build(value: string, catalog: Record<string, string[]> = {}, health: Record<string, ServiceInstance[]> = {}, previous?: Snapshot): Snapshot {
  return buildSnapshot(views([entry(value)], catalog, health), OPTIONS, previous);
}

function routeTable(s: Snapshot): Record<string, string> {
  const out: Record<string, string> = {};
  for (const r of s.routes) out[r.id] = `${r.service} ${r.source.kind}${r.source.kind === 'fabio-kv' ? ` ${r.source.document}` : ''}`;
  return out;
}

function weightsOf(s: Snapshot, service: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const e of s.services[service]?.endpoints ?? []) out[e.id] = e.weight;
  return out;
}

const kvProblems = (s: Snapshot) => s.problems.filter((p) => p.kind === 'fabio-kv');

describe('fabio KV routes: route add', () => {
  test('adds a route to a fixed upstream, served by a static service named after the route', () => {
    const s = build('route add product-svc /product http://127.0.0.1:8000');
    assert.deepEqual(routeTable(s), { '/product': 'fabio:/product fabio-kv fabio/config line 1' });
    const service = s.services['fabio:/product'];
    assert.equal(service?.kind, 'static');
    assert.deepEqual(service?.endpoints.map((e) => [e.key, e.weight]), [['127.0.0.1:8000', 10000]]);
    assert.equal(s.routes[0]?.freshness, 'static');
    assert.deepEqual(kvProblems(s), []);
  });

  test('two lines for one src give one route with both targets (fabio example: product-svc on :8000 and :9000)', () => {
    const s = build('# route traffic for product-svc to 1.2.3.4:8000 and :9000\nroute add product-svc /product http://1.2.3.4:8000\nroute add product-svc /product http://1.2.3.4:9000');
    assert.deepEqual(s.services['fabio:/product']?.endpoints.map((e) => e.key), ['1.2.3.4:8000', '1.2.3.4:9000']);
    assert.equal(s.routes[0]?.source.kind === 'fabio-kv' && s.routes[0].source.line, 2);
  });

  test('fixed weights follow fabio: 5% to one target, the rest shared', () => {
    const s = build('route add a /x http://10.0.0.1:80 weight 0.05\nroute add a /x http://10.0.0.2:80\nroute add a /x http://10.0.0.3:80');
    assert.deepEqual(s.services['fabio:/x']?.endpoints.map((e) => e.weight), [500, 4750, 4750]);
  });

  test('a host route, its options read by the tag parser (strip=)', () => {
    const s = build('route add api Example.com/api/v1 https://10.0.0.9:8443/ opts "strip=/api"');
    const route = s.routes[0];
    assert.equal(route?.id, 'example.com/api/v1');
    assert.equal(route?.strip, '/api');
    assert.equal(s.services['fabio:example.com/api/v1']?.endpoints[0]?.scheme, 'https');
  });

  test('fabio routes win over tags; documents would win over both', () => {
    const s = build('route add web /web http://10.0.0.1:80', { web: ['urlprefix-/web'] }, { web: [instance('web', 9001)] });
    assert.deepEqual(routeTable(s), { '/web': 'fabio:/web fabio-kv fabio/config line 1' });
    assert.ok(s.problems.some((p) => p.kind === 'route' && /declared by fabio route at fabio\/config line 1; tag "urlprefix-\/web" ignored/.test(p.message)));
  });

  const refused: { line: string; error: RegExp }[] = [
    { line: 'route add a :8080 tcp://10.0.0.1:80', error: /TCP listener port/ },
    { line: 'route add a /x tcp://10.0.0.1:80', error: /only http and https targets/ },
    { line: 'route add a /x http://10.0.0.1:80/base', error: /without path, query or credentials/ },
    { line: 'route add a /x http://user:pw@10.0.0.1:80/', error: /without path, query or credentials/ },
    { line: 'route add a /x 10.0.0.1:80', error: /only http and https|not a URL/ },
    { line: 'route add a /x http://10.0.0.1:0/', error: /port 0 is not 1-65535/ },
    { line: 'route add a x http://10.0.0.1:80', error: /has no path/ },
    { line: 'route add a /a/../b http://10.0.0.1:80', error: /segment/ },
    { line: 'route add a /x http://10.0.0.1:80 opts "tlsskipverify=true"', error: /do not apply to route add lines/ },
    { line: 'route add a /x http://10.0.0.1:80 opts "proto=grpc"', error: /do not apply to route add lines/ },
    { line: 'route add a /x http://10.0.0.1:80 opts "strip=/y"', error: /not a prefix/ },
  ];
  for (const { line, error } of refused) {
    test(`refused, the other lines apply: ${line}`, () => {
      const s = build(`route add ok /ok http://10.0.0.1:80\n${line}`);
      assert.deepEqual(Object.keys(routeTable(s)), ['/ok']);
      const problem = kvProblems(s).find((p) => p.subject === 'fabio/config line 2');
      assert.ok(problem, `no problem for line 2: ${JSON.stringify(s.problems)}`);
      assert.match(problem.message, error);
      assert.ok(problem.message.startsWith(JSON.stringify(line)), problem.message);
      assert.match(problem.message, /line ignored$/);
    });
  }

  test('a later line for the same src with other options is refused, the first stays', () => {
    const s = build('route add a /x http://10.0.0.1:80\nroute add a /x http://10.0.0.2:80 opts "strip=/x"');
    assert.deepEqual(s.services['fabio:/x']?.endpoints.map((e) => e.key), ['10.0.0.1:80']);
    assert.match(kvProblems(s)[0]?.message ?? '', /already has other options from fabio\/config line 1/);
  });
});

describe('fabio KV routes: route del', () => {
  const tagged = { web: ['urlprefix-/web', 'urlprefix-/web2'], api: ['urlprefix-/api'] };
  const health = { web: [instance('web', 9001, ['green']), instance('web', 9002, ['blue'])], api: [instance('api', 9003, ['green'])] };

  test('route del <svc> removes every tag route of the service (fabio docs: manual overrides)', () => {
    const s = build('route del web', tagged, health);
    assert.deepEqual(Object.keys(routeTable(s)), ['/api']);
  });

  test('route del <svc> <src> removes one tag route', () => {
    const s = build('route del web /web2/', tagged, health);
    assert.deepEqual(Object.keys(routeTable(s)), ['/api', '/web']);
  });

  test('route del <svc> <src> <dst> removes a target an earlier line added', () => {
    const s = build('route add a /x http://10.0.0.1:80\nroute add a /x http://10.0.0.2:80\nroute del a /x http://10.0.0.1:80');
    assert.deepEqual(s.services['fabio:/x']?.endpoints.map((e) => e.key), ['10.0.0.2:80']);
  });

  test('a route whose last target is deleted is gone; a later add starts it again', () => {
    assert.deepEqual(routeTable(build('route add a /x http://10.0.0.1:80\nroute del a')), {});
    const again = build('route add a /x http://10.0.0.1:80 opts "strip=/x"\nroute del a /x\nroute add b /x http://10.0.0.2:80');
    assert.deepEqual(again.services['fabio:/x']?.endpoints.map((e) => e.key), ['10.0.0.2:80']);
    assert.equal(again.routes[0]?.strip, null);
  });

  test('order matters as in fabio: add after del stays, del after add removes', () => {
    assert.deepEqual(Object.keys(routeTable(build('route del a\nroute add a /x http://10.0.0.1:80'))), ['/x']);
    assert.deepEqual(Object.keys(routeTable(build('route add a /x http://10.0.0.1:80\nroute del a'))), []);
  });

  test('route del <svc> <src> <dst> naming a Consul instance is refused with a way out', () => {
    const s = build('route del web /web http://127.0.0.1:9001/', tagged, health);
    assert.deepEqual(Object.keys(routeTable(s)), ['/api', '/web', '/web2']);
    assert.match(kvProblems(s)[0]?.message ?? '', /cannot be removed from a tag route one by one \(put it in maintenance: consul maint\)/);
  });

  test('route del <svc> tags takes that service\'s instances carrying the tags out of rotation', () => {
    const s = build('route del web tags "green"', tagged, health);
    assert.deepEqual(weightsOf(s, 'web'), { 'web-9001': 0, 'web-9002': 1 });
    assert.deepEqual(weightsOf(s, 'api'), { 'api-9003': 1 });
  });

  test('route del tags takes every service\'s instances and fabio targets carrying them out', () => {
    const s = build('route add a /x http://10.0.0.1:80 tags "green"\nroute add a /x http://10.0.0.2:80\nroute del tags "green"', tagged, health);
    assert.deepEqual(weightsOf(s, 'web'), { 'web-9001': 0, 'web-9002': 1 });
    assert.deepEqual(weightsOf(s, 'api'), { 'api-9003': 0 });
    assert.deepEqual(s.services['fabio:/x']?.endpoints.map((e) => e.key), ['10.0.0.2:80']);
  });

  test('deleting what does not exist is no problem (fabio: a no-op)', () => {
    const s = build('route del nothing\nroute del nothing /x', tagged, health);
    assert.deepEqual(kvProblems(s), []);
  });
});

describe('fabio KV routes: route weight', () => {
  const catalog = { web: ['urlprefix-/web'] };
  const health = {
    web: [instance('web', 9001, ['v1']), instance('web', 9002, ['v1']), instance('web', 9003, ['v2'])],
  };

  test('on a tag route: the instances carrying the tags share the weight, the others the rest', () => {
    const s = build('route weight web /web weight 0.1 tags "v2"', catalog, health);
    assert.deepEqual(weightsOf(s, 'web'), { 'web-9001': 4500, 'web-9002': 4500, 'web-9003': 1000 });
  });

  test('without a service name (route weight <src> weight <w> tags)', () => {
    const s = build('route weight /web weight 0.5 tags "v2"', catalog, health);
    assert.deepEqual(weightsOf(s, 'web'), { 'web-9001': 2500, 'web-9002': 2500, 'web-9003': 5000 });
  });

  test('weight 1 sends everything to the matching instances (fabio: vault active example)', () => {
    const s = build('route weight web /web weight 1.00 tags "v2"', catalog, health);
    assert.deepEqual(weightsOf(s, 'web'), { 'web-9001': 0, 'web-9002': 0, 'web-9003': 10000 });
  });

  test('the share follows health: a critical instance drops out, the rule applies to the healthy ones', () => {
    const down = { web: [instance('web', 9001, ['v1']), instance('web', 9002, ['v1'], 'critical'), instance('web', 9003, ['v2'])] };
    const s = build('route weight web /web weight 0.1 tags "v2"', catalog, down);
    assert.deepEqual(weightsOf(s, 'web'), { 'web-9001': 9000, 'web-9002': 0, 'web-9003': 1000 });
  });

  test('no healthy instance with the tags: a problem, plain balancing', () => {
    const s = build('route weight web /web weight 0.1 tags "v3"', catalog, health);
    assert.deepEqual(weightsOf(s, 'web'), { 'web-9001': 3333, 'web-9002': 3333, 'web-9003': 3333 });
    assert.match(kvProblems(s)[0]?.message ?? '', /no healthy instance of service "web" carries tags v3/);
  });

  test('on a fabio route: the fixed weights of its targets', () => {
    const s = build('route add a /x http://10.0.0.1:80 tags "old"\nroute add a /x http://10.0.0.2:80 tags "new"\nroute weight a /x weight 0.2 tags "new"');
    assert.deepEqual(s.services['fabio:/x']?.endpoints.map((e) => [e.key, e.weight]), [
      ['10.0.0.1:80', 8000],
      ['10.0.0.2:80', 2000],
    ]);
  });

  const noEffect: { line: string; error: RegExp }[] = [
    { line: 'route weight web /nope weight 0.1 tags "v2"', error: /no route \/nope/ },
    { line: 'route weight other /web weight 0.1 tags "v2"', error: /served by service "web", not "other"/ },
    { line: 'route weight a /x weight 0.1 tags "zzz"', error: /no target of route \/x matches service "a" and tags zzz/ },
  ];
  for (const { line, error } of noEffect) {
    test(`no effect, reported: ${line}`, () => {
      const s = build(`route add a /x http://10.0.0.1:80\n${line}`, catalog, health);
      assert.deepEqual(weightsOf(s, 'web'), { 'web-9001': 1, 'web-9002': 1, 'web-9003': 1 });
      assert.match(kvProblems(s)[0]?.message ?? '', error);
    });
  }

  test('canary weights of cgw win over fabio weight lines, and say so', () => {
    const s = buildSnapshot(
      { ...views([entry('route weight web /web weight 0.1 tags "v2"')], catalog, health), kv: [{ key: 'gateway/canary/web', value: '{"weights":{"v1":50,"v2":50}}', modifyIndex: 3 }] },
      OPTIONS,
    );
    assert.deepEqual(weightsOf(s, 'web'), { 'web-9001': 1, 'web-9002': 1, 'web-9003': 1 });
    assert.match(kvProblems(s)[0]?.message ?? '', /canary weights, which win over fabio route weight lines/);
  });

  test('fabio share arithmetic: fixed weights normalised above 1, and all-fixed scaled up', () => {
    assert.deepEqual(shareOf([]), []);
    assert.deepEqual(shareOf([0, 0]), [0.5, 0.5]);
    assert.deepEqual(shareOf([0.8, 0.8, 0]), [0.5, 0.5, 0]);
    assert.deepEqual(shareOf([0.25, 0.25]), [0.5, 0.5]);
    assert.deepEqual(slotsOf([0.00001, 0, 0.99999]), [1, 0, 10000]);
  });
});

describe('fabio KV routes: keys, values and limits', () => {
  test('the key and its subkeys apply in key order (fabio >= 1.5.7), a later key can delete an earlier key\'s route', () => {
    const s = buildSnapshot(
      views([entry('route add svc / http://10.0.0.1:80', 'fabio/config/catchall'), entry('route add svc /maint http://10.0.0.2:80', 'fabio/config/maint'), entry('route del svc /', 'fabio/config/zz')]),
      OPTIONS,
    );
    assert.deepEqual(routeTable(s), { '/maint': 'fabio:/maint fabio-kv fabio/config/maint line 1' });
  });

  test('a garbage value keeps the last good lines of that key; deleting the key drops them', () => {
    const good = build('route add a /x http://10.0.0.1:80');
    const garbage = buildSnapshot(views([{ key: KEY, value: null, modifyIndex: 2, undecodable: true }]), OPTIONS, good);
    assert.deepEqual(Object.keys(routeTable(garbage)), ['/x']);
    const problem = kvProblems(garbage)[0];
    assert.equal(problem?.subject, KEY);
    assert.equal(problem?.keptLastGood, true);
    assert.match(problem?.message ?? '', /ModifyIndex 2: value is not UTF-8 text; the last good value \(ModifyIndex 1\) stays in force/);
    const huge = buildSnapshot(views([entry(`route add a /y http://10.0.0.1:80\n${'#'.repeat(300 * 1024)}`, KEY, 3)]), OPTIONS, garbage);
    assert.deepEqual(Object.keys(routeTable(huge)), ['/x']);
    assert.match(kvProblems(huge)[0]?.message ?? '', /larger than 262144 bytes/);
    const gone = buildSnapshot(views([]), OPTIONS, huge);
    assert.deepEqual(routeTable(gone), {});
    assert.deepEqual(kvProblems(gone), []);
  });

  test('two refused values in a row still name the good value in force', () => {
    const good = build('route add a /x http://10.0.0.1:80');
    const bad1 = buildSnapshot(views([{ key: KEY, value: null, modifyIndex: 2, undecodable: true }]), OPTIONS, good);
    const bad2 = buildSnapshot(views([{ key: KEY, value: null, modifyIndex: 3, undecodable: true }]), OPTIONS, bad1);
    assert.deepEqual(Object.keys(routeTable(bad2)), ['/x']);
    assert.match(kvProblems(bad2)[0]?.message ?? '', /ModifyIndex 3: .*the last good value \(ModifyIndex 1\) stays in force/);
  });

  test('many route weight lines without effect: the first 50 listed, the rest counted', () => {
    const value = Array.from({ length: 120 }, (_, i) => `route weight /nope${i} weight 0.1 tags "x"`).join('\n');
    const s = build(value);
    assert.equal(kvProblems(s).length, 51);
    assert.ok(kvProblems(s).some((p) => p.subject === 'route weight lines' && p.message.startsWith('70 more')));
  });

  test('a refused value with no good version before adds nothing and says so', () => {
    const s = buildSnapshot(views([{ key: KEY, value: null, modifyIndex: 2, undecodable: true }]), OPTIONS);
    assert.deepEqual(s.routes, []);
    assert.match(kvProblems(s)[0]?.message ?? '', /no good value is known/);
  });

  test('more keys than the cap: the first ones apply, the rest are reported', () => {
    const entries = Array.from({ length: 70 }, (_, i) => entry(`route add s /r${String(i).padStart(2, '0')} http://10.0.0.1:80`, `fabio/config/k${String(i).padStart(2, '0')}`));
    const s = buildSnapshot(views(entries), OPTIONS);
    assert.equal(s.routes.length, 64);
    assert.match(kvProblems(s)[0]?.message ?? '', /more than 64 fabio route keys/);
  });

  test('more targets than the cap: the lines beyond it are refused, one problem each', () => {
    const lines = Array.from({ length: MAX_FABIO_TARGETS + 2 }, (_, i) => `route add s /t${i} http://10.0.${Math.floor(i / 250)}.${(i % 250) + 1}:80`);
    const s = build(lines.join('\n'));
    assert.equal(s.routes.length, MAX_FABIO_TARGETS);
    assert.deepEqual(
      kvProblems(s).map((p) => p.subject),
      [`fabio/config line ${MAX_FABIO_TARGETS + 1}`, `fabio/config line ${MAX_FABIO_TARGETS + 2}`],
    );
    assert.match(kvProblems(s)[0]?.message ?? '', /more than 1000 targets/);
  });

  test('more commands than the cap over all keys: the rest are ignored, reported once', () => {
    const value = Array.from({ length: 4_000 }, () => 'route del nobody').join('\n');
    const s = buildSnapshot(views(['a', 'b', 'c'].map((k) => entry(value, `fabio/config/${k}`))), OPTIONS);
    const capped = kvProblems(s).filter((p) => /more than 10000 fabio route lines/.test(p.message));
    assert.deepEqual(capped.map((p) => p.subject), ['fabio/config/c line 2001']);
  });

  test('a key full of junk lists its first 50 bad lines and counts the rest in one problem; the good lines apply', () => {
    const value = ['route add a /x http://10.0.0.1:80', ...Array.from({ length: 4_000 }, (_, i) => `junk ${i}`)].join('\n');
    const s = build(value);
    assert.deepEqual(Object.keys(routeTable(s)), ['/x']);
    const problems = kvProblems(s);
    assert.equal(problems.length, 51);
    assert.ok(problems.some((p) => p.subject === KEY && p.message.startsWith('3950 more refused or ineffective lines')));
  });

  test('without the fabio view (turned off) nothing changes', () => {
    const s = buildSnapshot(views(undefined, { web: ['urlprefix-/web'] }, { web: [instance('web', 9001)] }), OPTIONS);
    assert.deepEqual(routeTable(s), { '/web': 'web tag' });
  });

  test('__proto__ and constructor as service names, tags and paths behave like any other name', () => {
    const s = build(
      'route add __proto__ /__proto__ http://10.0.0.1:80 tags "constructor"\nroute add constructor /constructor http://10.0.0.2:80\nroute weight __proto__ /__proto__ weight 0.5 tags "constructor"\nroute del constructor /constructor\nroute del tags "__proto__"\nroute weight /hasOwnProperty weight 0.5 tags "toString"',
      { constructor: ['urlprefix-/c'] },
      { constructor: [instance('constructor', 9005, ['__proto__'])] },
    );
    assert.deepEqual(routeTable(s), { '/__proto__': 'fabio:/__proto__ fabio-kv fabio/config line 1', '/c': 'constructor tag' });
    assert.deepEqual(weightsOf(s, 'constructor'), { 'constructor-9005': 0 });
    assert.equal(Object.getPrototypeOf(s.services), Object.prototype);
    assert.match(kvProblems(s)[0]?.message ?? '', /no route \/hasOwnProperty/);
  });

  test('escape sequences in a bad line are shown escaped', () => {
    const s = build('route \u001b[31mred\u0085');
    assert.match(kvProblems(s)[0]?.message ?? '', /^"route \\u001b\[31mred\\u0085"/);
  });

  test('an unchanged fabio view reuses the build; a changed one rebuilds', () => {
    const fabio = [entry('route add a /x http://10.0.0.1:80')];
    const v = views(fabio);
    const first = buildSnapshot(v, OPTIONS);
    assert.equal(buildSnapshot(v, OPTIONS, first).routes, first.routes);
    const next = buildSnapshot(views([entry('route add a /y http://10.0.0.1:80', KEY, 2)]), OPTIONS, first);
    assert.deepEqual(Object.keys(routeTable(next)), ['/y']);
  });

  test('targetUrl keeps scheme, host and port only', () => {
    assert.deepEqual(targetUrl('http://10.0.0.1:8080/'), { url: 'http://10.0.0.1:8080' });
    assert.deepEqual(targetUrl('HTTP://Example.com'), { url: 'http://example.com' });
    assert.deepEqual(targetUrl('http://[::1]:81'), { url: 'http://[::1]:81' });
  });
});
