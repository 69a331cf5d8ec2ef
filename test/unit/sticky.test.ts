/**
 * Sticky canary subsets: finding the cookie in a Cookie header, the `stickiness` policy section,
 * and which subset a request is kept on (and what the answer tells the client).
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews, KvEntry } from '../../src/core/types.ts';
import { webInstance, type InstanceSpec } from '../helpers/instances.ts';
import { buildSnapshot, type ServiceSnapshot } from '../../src/state/snapshot.ts';
import { ServiceBalancer, type EjectionView } from '../../src/balancer/service-balancer.ts';
import { UpstreamPools } from '../../src/balancer/upstream-pools.ts';
import { findCookie, MAX_COOKIE_SCAN_CHARS } from '../../src/proxy/cookies.ts';
import { requestedSubset } from '../../src/proxy/sticky.ts';
import { responseHeaderList } from '../../src/proxy/headers.ts';
import type { Exchange } from '../../src/proxy/pipeline.ts';
import { policyDocumentSchema } from '../../src/policy/schema.ts';
import { stickinessSchema, type StickinessPolicy } from '../../src/policy/stickiness.ts';

const pools = new UpstreamPools({ connectTimeoutMs: 1000, connectionsPerEndpoint: 1 });
after(() => pools.closeAll(0));

const anyValue = (v: string): string => v;

describe('findCookie', () => {
  const cases: Array<[string, string | string[] | undefined, string | undefined]> = [
    ['no Cookie header', undefined, undefined],
    ['empty header', '', undefined],
    ['the only pair', 'sub=v2', 'v2'],
    ['among others', 'a=1; sub=v2; b=3', 'v2'],
    ['last pair', 'a=1; sub=v1', 'v1'],
    ['no space after ;', 'a=1;sub=v1', 'v1'],
    ['tabs and spaces around name and value (RFC 6265 §5.2)', 'a=1;\t sub \t=  v1 \t', 'v1'],
    ['a quoted value', 'sub="v2"', 'v2'],
    ['a lone quote is kept as text', 'sub="v2', '"v2'],
    ['a longer name that starts with it', 'subset=v9; sub=v1', 'v1'],
    ['a name that ends with it', 'xsub=v9', undefined],
    ['case matters (RFC 6265 §5.4 compares names exactly)', 'SUB=v1', undefined],
    ['name without =', 'sub; a=1', undefined],
    ['empty value', 'sub=', ''],
    ['value with =', 'sub=v1=x', 'v1=x'],
    ['several Cookie fields (array)', ['a=1', 'sub=v2'], 'v2'],
    ['HTTP/2 split cookies joined by Node', 'a=1; b=2; sub=v1', 'v1'],
    ['a duplicate: the first wins (RFC 6265 §5.4: longer path first)', 'sub=v2; sub=v1', 'v2'],
  ];
  for (const [name, header, expected] of cases) {
    test(name, () => assert.equal(findCookie(header, 'sub', anyValue), expected));
  }

  test('a duplicate whose first value is refused: the next one that is accepted', () => {
    const known = new Set(['v1', 'v2']);
    assert.equal(findCookie('sub=bogus; sub=v1', 'sub', (v) => (known.has(v) ? v : undefined)), 'v1');
    assert.equal(findCookie(['sub=__proto__', 'sub=v2'], 'sub', (v) => (known.has(v) ? v : undefined)), 'v2');
  });

  test('a pair past the scan bound is not read, nor one cut by it', () => {
    const filler = `a=${'x'.repeat(MAX_COOKIE_SCAN_CHARS)}`;
    assert.equal(findCookie(`${filler}; sub=v1`, 'sub', anyValue), undefined);
    const cut = `${'a=1; '.repeat(10)}sub=v1${'1'.repeat(MAX_COOKIE_SCAN_CHARS)}`;
    assert.equal(findCookie(cut, 'sub', anyValue), undefined);
    assert.equal(findCookie(`sub=v1; ${filler}`, 'sub', anyValue), 'v1');
  });

  test('a header of many thousands of pairs ends quickly without the cookie', () => {
    const many = 'a=1; '.repeat(100_000) + 'sub=v1';
    assert.equal(findCookie(many, 'sub', anyValue), undefined);
  });
});

describe('stickiness policy section', () => {
  const ok: Array<[string, unknown, StickinessPolicy]> = [
    ['cookie with ttl', { cookie: 'cgw_subset', ttl: '1h' }, { cookie: 'cgw_subset', ttl: 3_600_000 }],
    ['cookie without ttl: 24h', { cookie: 'sub' }, { cookie: 'sub', ttl: 86_400_000 }],
    ['ttl at the bounds', { cookie: 'sub', ttl: '1s' }, { cookie: 'sub', ttl: 1000 }],
    ['30 days', { cookie: 'sub', ttl: '720h' }, { cookie: 'sub', ttl: 2_592_000_000 }],
    ['header, lower-cased', { header: 'X-Subset' }, { header: 'x-subset' }],
  ];
  for (const [name, input, expected] of ok) {
    test(`accepts ${name}`, () => assert.deepEqual(stickinessSchema.parse(input), expected));
  }
  const bad: Array<[string, unknown, RegExp]> = [
    ['neither', {}, /exactly one of cookie, header/],
    ['both', { cookie: 'a', header: 'x-a' }, /exactly one of cookie, header/],
    ['ttl with a header', { header: 'x-a', ttl: '1h' }, /ttl/],
    ['ttl below 1s', { cookie: 'a', ttl: '500ms' }, /between/],
    ['ttl above 30 days', { cookie: 'a', ttl: '31d' }, /between|not a duration/],
    ['ttl not a duration', { cookie: 'a', ttl: 'soon' }, /not a duration/],
    ['cookie name with a space', { cookie: 'a b' }, /token/],
    ['cookie name with =', { cookie: 'a=b' }, /token/],
    ['cookie name with ;', { cookie: 'a;b' }, /token/],
    ['empty cookie name', { cookie: '' }, /token/],
    ['huge cookie name', { cookie: 'a'.repeat(1000) }, /64/],
    ['cookie name __proto__', { cookie: '__proto__' }, /reserved/],
    ['cookie name constructor', { cookie: 'constructor' }, /reserved/],
    ['header host', { header: 'Host' }, /reserved/],
    ['header content-length', { header: 'content-length' }, /reserved/],
    ['header x-canary', { header: 'X-Canary' }, /reserved/],
    ['header cookie', { header: 'cookie' }, /reserved/],
    ['header set-cookie', { header: 'set-cookie' }, /reserved/],
    ['hop-by-hop connection', { header: 'connection' }, /reserved/],
    ['hop-by-hop transfer-encoding', { header: 'transfer-encoding' }, /reserved/],
    ['the gateway\'s own x-cgw-', { header: 'x-cgw-subject' }, /reserved/],
    ['header __proto__', { header: '__proto__' }, /reserved/],
    ['header with a colon', { header: 'x:a' }, /token/],
    ['unknown field', { cookie: 'a', path: '/' }, /nrecognized/],
    ['not an object', 'sub', /object/],
  ];
  for (const [name, input, message] of bad) {
    test(`refuses ${name}`, () => {
      const r = stickinessSchema.safeParse(input);
      assert.equal(r.success, false);
      assert.match(r.error?.issues.map((i) => i.message).join('; ') ?? '', message);
    });
  }

  test('service or defaults only, never a route document', () => {
    assert.ok(policyDocumentSchema.safeParse({ appliesTo: { service: 'web' }, stickiness: { cookie: 'sub' } }).success);
    assert.ok(policyDocumentSchema.safeParse({ appliesTo: 'defaults', stickiness: { header: 'x-subset' } }).success);
    const r = policyDocumentSchema.safeParse({ appliesTo: { route: '/web' }, stickiness: { cookie: 'sub' } });
    assert.equal(r.success, false);
    assert.match(JSON.stringify(r.error?.issues), /stickiness applies to a whole service/);
  });
});

const SPECS: InstanceSpec[] = [
  { port: 34001, tags: ['v1'] },
  { port: 34002, tags: ['v1'] },
  { port: 34003, tags: ['v2'] },
  { port: 34004, tags: ['v3'] },
];
const V1 = new Set(['127.0.0.1:34001', '127.0.0.1:34002']);
const V2 = new Set(['127.0.0.1:34003']);

function service(weights: Record<string, number> | null, stickiness: StickinessPolicy | null, specs: InstanceSpec[] = SPECS): ServiceSnapshot {
  const kv: KvEntry[] = weights ? [{ key: 'gateway/canary/web', value: JSON.stringify({ weights }), modifyIndex: 1 }] : [];
  const views: ConsulViews = { catalog: { web: ['urlprefix-/web'] }, health: new Map([['web', specs.map(webInstance)]]), kv };
  const svc = buildSnapshot(views, { allowWarning: false, kvPrefix: 'gateway/' }).services.web;
  assert.ok(svc);
  return { ...svc, policy: { ...svc.policy, stickiness } };
}

interface FakeExchange {
  req: { headers: Record<string, string | string[]> };
  encrypted: boolean;
  extraHeaders: readonly string[] | null;
}

function exchange(headers: Record<string, string | string[]>, encrypted = false): FakeExchange {
  return { req: { headers }, encrypted, extraHeaders: null };
}

const counted = new Map<string, number>();
const countSticky = (outcome: string): void => void counted.set(outcome, (counted.get(outcome) ?? 0) + 1);

function decide(balancer: ServiceBalancer, headers: Record<string, string | string[]>, encrypted = false): { tag: string | undefined; extra: readonly string[] | null } {
  const ex = exchange(headers, encrypted);
  const tag = requestedSubset(ex as unknown as Exchange, { balancer, countSticky });
  return { tag, extra: ex.extraHeaders };
}

const COOKIE: StickinessPolicy = { cookie: 'sub', ttl: 3_600_000 };
const HEADER: StickinessPolicy = { header: 'x-subset' };

describe('which subset a request is kept on (cookie mode)', () => {
  const weights = { v1: 90, v2: 10, v3: 0 };
  const balancer = new ServiceBalancer(service(weights, COOKIE), pools, 'round_robin');

  test('a valid cookie keeps the subset, and no new cookie is sent', () => {
    counted.clear();
    decide(balancer, { cookie: 'sub=v9' });
    assert.deepEqual(Object.fromEntries(counted), { assigned: 1 });
    counted.clear();
    for (let i = 0; i < 50; i++) assert.deepEqual(decide(balancer, { cookie: 'a=1; sub=v2' }), { tag: 'v2', extra: null });
    for (let i = 0; i < 50; i++) assert.deepEqual(decide(balancer, { cookie: 'sub="v1"' }), { tag: 'v1', extra: null });
    assert.deepEqual(Object.fromEntries(counted), { kept: 100 });
  });

  test('the kept subset is where the balancer sends the request', () => {
    for (let i = 0; i < 30; i++) assert.ok(V2.has(balancer.pick(decide(balancer, { cookie: 'sub=v2' }).tag)?.key ?? ''));
  });

  const ignored: Array<[string, string | undefined]> = [
    ['no cookie', undefined],
    ['a subset at weight 0', 'sub=v3'],
    ['an unknown tag', 'sub=v9'],
    ['__proto__', 'sub=__proto__'],
    ['constructor', 'sub=constructor'],
    ['hasOwnProperty', 'sub=hasOwnProperty'],
    ['a tag in another case', 'sub=V2'],
    ['empty', 'sub='],
    ['a value with a tag inside', 'sub=v2x'],
    ['quotes inside', 'sub=v"2'],
    ['a huge value', `sub=${'v'.repeat(100_000)}`],
    ['another cookie named like a tag', 'v2=sub'],
  ];
  for (const [name, cookie] of ignored) {
    test(`${name}: balanced by weight and a new cookie names the subset`, () => {
      const seen = new Map<string, number>();
      for (let i = 0; i < 100; i++) {
        const { tag, extra } = decide(balancer, cookie === undefined ? {} : { cookie });
        assert.ok(tag === 'v1' || tag === 'v2', `subset ${String(tag)}`);
        assert.deepEqual(extra, ['set-cookie', `sub=${tag}; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax`]);
        seen.set(tag, (seen.get(tag) ?? 0) + 1);
      }
      assert.deepEqual(Object.fromEntries(seen), { v1: 90, v2: 10 });
    });
  }

  test('over TLS the cookie is Secure', () => {
    const { tag, extra } = decide(balancer, {}, true);
    assert.deepEqual(extra, ['set-cookie', `sub=${tag}; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax; Secure`]);
  });

  test('the cookie joins headers the pipeline added before (HSTS, rate limits)', () => {
    const ex = exchange({});
    ex.extraHeaders = ['strict-transport-security', 'max-age=1'];
    const tag = requestedSubset(ex as unknown as Exchange, { balancer, countSticky });
    assert.equal(ex.extraHeaders[0], 'strict-transport-security');
    assert.equal(ex.extraHeaders[2], 'set-cookie');
    assert.match(String(ex.extraHeaders[3]), new RegExp(`^sub=${String(tag)};`));
  });

  test('X-Canary wins over the cookie, and no cookie is set', () => {
    assert.deepEqual(decide(balancer, { 'x-canary': 'v1', cookie: 'sub=v2' }), { tag: 'v1', extra: null });
    // Even at weight 0: X-Canary forces any tag healthy instances carry.
    assert.deepEqual(decide(balancer, { 'x-canary': 'v3' }), { tag: 'v3', extra: null });
  });

  test('an X-Canary naming no healthy subset leaves the cookie in charge', () => {
    assert.deepEqual(decide(balancer, { 'x-canary': 'nosuch', cookie: 'sub=v2' }), { tag: 'v2', extra: null });
  });

  test('a subset without healthy instances is not kept', () => {
    const sick = new ServiceBalancer(service(weights, COOKIE, SPECS.map((s) => (s.tags?.includes('v2') ? { ...s, status: 'critical' as const } : s))), pools, 'round_robin');
    for (let i = 0; i < 20; i++) {
      const { tag, extra } = decide(sick, { cookie: 'sub=v2' });
      assert.equal(tag, 'v1');
      assert.deepEqual(extra, ['set-cookie', 'sub=v1; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax']);
    }
  });

  test('a subset whose every instance is ejected is not kept; one left suffices', () => {
    const ejected = new Set<string>(['127.0.0.1:34003']);
    const view: EjectionView = { hasEjected: true, isEjected: (key) => ejected.has(key) };
    const b = new ServiceBalancer(service(weights, COOKIE), pools, 'round_robin', view);
    assert.notEqual(decide(b, { cookie: 'sub=v2' }).extra, null);
    assert.deepEqual(decide(b, { cookie: 'sub=v1' }), { tag: 'v1', extra: null });
    ejected.add('127.0.0.1:34001');
    assert.deepEqual(decide(b, { cookie: 'sub=v1' }), { tag: 'v1', extra: null });
  });

  test('a retry (pick with the failed endpoint excluded) stays in the kept subset when it has another endpoint', () => {
    const { tag } = decide(balancer, { cookie: 'sub=v1' });
    const first = balancer.pick(tag);
    assert.ok(first && V1.has(first.key));
    for (let i = 0; i < 10; i++) {
      const retry = balancer.pick(tag, first);
      assert.ok(retry && V1.has(retry.key) && retry !== first);
    }
  });
});

describe('which subset a request is kept on (header mode)', () => {
  const balancer = new ServiceBalancer(service({ v1: 50, v2: 50 }, HEADER), pools, 'round_robin');

  test('a valid header keeps the subset, and the answer names it again', () => {
    for (let i = 0; i < 20; i++) assert.deepEqual(decide(balancer, { 'x-subset': 'v2' }), { tag: 'v2', extra: ['x-subset', 'v2'] });
  });

  for (const value of ['v9', '__proto__', 'constructor', 'v1, v2', '', 'V1']) {
    test(`"${value}" is ignored: a subset by weight, named in the answer`, () => {
      const { tag, extra } = decide(balancer, { 'x-subset': value });
      assert.ok(tag === 'v1' || tag === 'v2');
      assert.deepEqual(extra, ['x-subset', tag]);
    });
  }

  test('the cookie is not read in header mode', () => {
    const { extra } = decide(balancer, { cookie: 'x-subset=v2' });
    assert.equal(extra?.[0], 'x-subset');
  });
});

describe('services stickiness does not apply to', () => {
  test('no stickiness policy: nothing compiled, X-Canary as before, no header added', () => {
    const b = new ServiceBalancer(service({ v1: 90, v2: 10 }, null), pools, 'round_robin');
    assert.equal(b.sticky, null);
    counted.clear();
    assert.deepEqual(decide(b, { cookie: 'sub=v2' }), { tag: undefined, extra: null });
    assert.equal(counted.size, 0, 'nothing counted');
    assert.deepEqual(decide(b, { 'x-canary': 'v2' }), { tag: 'v2', extra: null });
  });

  test('no canary weights: stickiness is ignored, no cookie set', () => {
    const b = new ServiceBalancer(service(null, COOKIE), pools, 'round_robin');
    assert.equal(b.sticky, null);
    assert.deepEqual(decide(b, {}), { tag: undefined, extra: null });
  });

  test('weights whose subsets are all without healthy instances (plain balancing): no cookie', () => {
    const specs = SPECS.map((s) => (s.tags?.includes('v3') ? s : { ...s, status: 'critical' as const }));
    const b = new ServiceBalancer(service({ v1: 50, v2: 50 }, COOKIE, specs), pools, 'round_robin');
    assert.equal(b.sticky, null);
  });

  test('a policy change alone gives the service a new balancer (fingerprint)', () => {
    const a = service({ v1: 90, v2: 10 }, null);
    assert.notEqual(ServiceBalancer.fingerprintOf(a, 'round_robin'), ServiceBalancer.fingerprintOf({ ...a, policy: { ...a.policy, stickiness: COOKIE } }, 'round_robin'));
  });

  test('a tag that cannot be carried in a cookie is balanced by weight and never named', () => {
    const specs: InstanceSpec[] = [
      { port: 34101, tags: ['v1'] },
      { port: 34102, tags: ['v"2'] },
    ];
    const b = new ServiceBalancer(service({ v1: 50, 'v"2': 50 }, COOKIE, specs), pools, 'round_robin');
    for (let i = 0; i < 10; i++) {
      const { tag, extra } = decide(b, { cookie: 'sub="v"2"' });
      if (tag === 'v"2') assert.equal(extra, null);
      else assert.deepEqual(extra, ['set-cookie', 'sub=v1; Max-Age=3600; Path=/; HttpOnly; SameSite=Lax']);
    }
  });
});

describe('the answer head', () => {
  const raw = (...pairs: string[]): Buffer[] => pairs.map((p) => Buffer.from(p, 'latin1'));

  test("the gateway's cookie joins the upstream's Set-Cookie fields, never replaces them", () => {
    const head = responseHeaderList(raw('Set-Cookie', 'session=abc; Path=/', 'set-cookie', 'theme=dark', 'Content-Type', 'text/plain'), 'rid', ['set-cookie', 'sub=v1; Max-Age=60; Path=/; HttpOnly; SameSite=Lax'], false);
    const cookies = head.filter((_, i) => i % 2 === 1 && (head[i - 1] as string).toLowerCase() === 'set-cookie');
    assert.deepEqual(cookies, ['session=abc; Path=/', 'theme=dark', 'sub=v1; Max-Age=60; Path=/; HttpOnly; SameSite=Lax']);
  });

  test("in header mode the gateway's header replaces an upstream's of the same name", () => {
    const head = responseHeaderList(raw('X-Subset', 'forged', 'content-type', 'text/plain'), 'rid', ['x-subset', 'v2'], false);
    const named = head.filter((_, i) => i % 2 === 1 && (head[i - 1] as string).toLowerCase() === 'x-subset');
    assert.deepEqual(named, ['v2']);
  });
});
