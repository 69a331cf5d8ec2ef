import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { acceptableRequestId, responseHeaderList, upstreamRequestHeaders, type ForwardContext } from '../../src/proxy/headers.ts';

const CTX: ForwardContext = { requestId: 'req-1', clientIp: '10.0.0.9', proto: 'http' };

describe('upstreamRequestHeaders: hop-by-hop removal', () => {
  const hopByHop = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'];
  for (const name of hopByHop) {
    test(`${name} is not forwarded`, () => {
      const out = upstreamRequestHeaders({ host: 'example.com', accept: '*/*', [name]: 'x' }, CTX);
      assert.equal(out[name], undefined);
      assert.equal(out.accept, '*/*');
    });
  }

  const connectionCases: { name: string; headers: IncomingHttpHeaders; removed: string[]; kept: string[] }[] = [
    {
      name: 'a header named in Connection is removed',
      headers: { connection: 'X-Trace-Hop', 'x-trace-hop': '1', 'x-keep': 'yes' },
      removed: ['connection', 'x-trace-hop'],
      kept: ['x-keep'],
    },
    {
      name: 'several names, mixed case and spaces',
      headers: { connection: 'keep-alive ,  Foo, BAR', foo: '1', bar: '2', baz: '3' },
      removed: ['foo', 'bar'],
      kept: ['baz'],
    },
    {
      name: 'Connection: close alone removes nothing else',
      headers: { connection: 'close', 'x-a': '1', 'x-b': '2' },
      removed: ['connection'],
      kept: ['x-a', 'x-b'],
    },
    {
      name: 'a Connection-named header can be an end-to-end name',
      headers: { connection: 'cookie', cookie: 'a=1', 'user-agent': 'ua' },
      removed: ['cookie'],
      kept: ['user-agent'],
    },
  ];
  for (const c of connectionCases) {
    test(c.name, () => {
      const out = upstreamRequestHeaders(c.headers, CTX);
      for (const name of c.removed) assert.equal(out[name], undefined, `${name} should be removed`);
      for (const name of c.kept) assert.equal(out[name], c.headers[name], `${name} should be kept`);
    });
  }
});

describe('upstreamRequestHeaders: forwarding headers', () => {
  const xff: { name: string; prior: string | string[] | undefined; expected: string }[] = [
    { name: 'no prior value', prior: undefined, expected: '10.0.0.9' },
    { name: 'appended to one prior hop', prior: '203.0.113.7', expected: '203.0.113.7, 10.0.0.9' },
    { name: 'appended to a prior chain', prior: '203.0.113.7, 198.51.100.2', expected: '203.0.113.7, 198.51.100.2, 10.0.0.9' },
    { name: 'an empty prior value is replaced', prior: '', expected: '10.0.0.9' },
    { name: 'repeated header lines are joined', prior: ['203.0.113.7', '198.51.100.2'], expected: '203.0.113.7, 198.51.100.2, 10.0.0.9' },
  ];
  for (const c of xff) {
    test(`X-Forwarded-For: ${c.name}`, () => {
      const headers: IncomingHttpHeaders = { host: 'example.com' };
      if (c.prior !== undefined) (headers as Record<string, string | string[]>)['x-forwarded-for'] = c.prior;
      assert.equal(upstreamRequestHeaders(headers, CTX)['x-forwarded-for'], c.expected);
    });
  }

  const protoCases: { proto: ForwardContext['proto']; incoming: string | undefined }[] = [
    { proto: 'http', incoming: undefined },
    { proto: 'https', incoming: undefined },
    { proto: 'http', incoming: 'https' },
  ];
  for (const { proto, incoming } of protoCases) {
    test(`X-Forwarded-Proto is ${proto} (client sent ${incoming ?? 'nothing'})`, () => {
      const headers: IncomingHttpHeaders = { host: 'example.com' };
      if (incoming) headers['x-forwarded-proto'] = incoming;
      assert.equal(upstreamRequestHeaders(headers, { ...CTX, proto })['x-forwarded-proto'], proto);
    });
  }

  test('X-Forwarded-Host is the Host the client asked for, and Host is passed on', () => {
    const out = upstreamRequestHeaders({ host: 'Shop.Example.com:8080', 'x-forwarded-host': 'spoofed.test' }, CTX);
    assert.equal(out['x-forwarded-host'], 'Shop.Example.com:8080');
    assert.equal(out.host, 'Shop.Example.com:8080');
  });

  test('a Forwarded or X-Forwarded-For chain the client named in Connection is not forwarded; our hop still is', () => {
    const out = upstreamRequestHeaders(
      { host: 'example.com', connection: 'forwarded, X-Forwarded-For', forwarded: 'for=1.2.3.4', 'x-forwarded-for': '1.2.3.4' },
      CTX,
    );
    assert.equal(out.forwarded, `for=${CTX.clientIp};host=example.com;proto=${CTX.proto}`);
    assert.equal(out['x-forwarded-for'], CTX.clientIp);
  });

  test('underscore spellings of the forwarding headers the gateway sets are dropped (CGI maps - and _ alike)', () => {
    const incoming: IncomingHttpHeaders = { host: 'example.com', x_real_ip: '6.6.6.6', x_forwarded_for: '6.6.6.6', x_forwarded_host: 'evil.test', x_forwarded_proto: 'https', x_request_id: 'forged', x_custom_thing: 'kept' };
    const out = upstreamRequestHeaders(incoming, CTX);
    for (const name of ['x_real_ip', 'x_forwarded_for', 'x_forwarded_host', 'x_forwarded_proto', 'x_request_id']) assert.equal(out[name], undefined, name);
    assert.equal(out.x_custom_thing, 'kept');
    assert.equal(out['x-real-ip'], CTX.clientIp);
    assert.equal(out['x-forwarded-for'], CTX.clientIp);
  });

  for (const host of [undefined, '']) {
    test(`a client's X-Forwarded-Host is not forwarded when Host is ${host === undefined ? 'missing' : 'empty'}`, () => {
      const incoming: IncomingHttpHeaders = { 'x-forwarded-host': 'spoofed.test' };
      if (host !== undefined) incoming.host = host;
      assert.equal(upstreamRequestHeaders(incoming, CTX)['x-forwarded-host'], undefined);
    });
  }

  test('X-Request-Id is set from the context, replacing the incoming one', () => {
    const out = upstreamRequestHeaders({ host: 'example.com', 'x-request-id': 'client-chosen' }, { ...CTX, requestId: 'gw-42' });
    assert.equal(out['x-request-id'], 'gw-42');
  });

  test('end-to-end headers are forwarded unchanged, including repeated ones', () => {
    const incoming: IncomingHttpHeaders = {
      host: 'example.com',
      authorization: 'Bearer abc',
      'content-type': 'application/json',
      'content-length': '12',
      'x-custom': 'v',
    };
    const out = upstreamRequestHeaders(incoming, CTX);
    for (const name of ['host', 'authorization', 'content-type', 'content-length', 'x-custom']) assert.equal(out[name], incoming[name], name);
  });

  test('the input headers object is not modified', () => {
    const incoming: IncomingHttpHeaders = { host: 'example.com', connection: 'foo', foo: '1', 'x-forwarded-for': '1.2.3.4' };
    const copy = structuredClone(incoming);
    upstreamRequestHeaders(incoming, CTX);
    assert.deepEqual(incoming, copy);
  });
});

describe('responseHeaderList', () => {
  const raw = (...pairs: string[]): Buffer[] => pairs.map((p) => Buffer.from(p, 'latin1'));
  const cases: { name: string; upstream: Buffer[]; own: string[] | null; close: boolean; expected: string[] }[] = [
    {
      name: 'hop-by-hop and Connection-named headers are removed, repeated fields kept apart, names as sent',
      upstream: raw('Connection', 'keep-alive, X-Upstream-Hop', 'Keep-Alive', 'timeout=5', 'Transfer-Encoding', 'chunked', 'X-Upstream-Hop', '1', 'Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2'),
      own: null,
      close: false,
      expected: ['Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'x-request-id', 'rid'],
    },
    {
      name: "the gateway's request id and rate-limit headers replace the upstream's",
      upstream: raw('X-Request-Id', 'theirs', 'RateLimit-Limit', '1', 'content-length', '2'),
      own: ['ratelimit-limit', '10', 'ratelimit-remaining', '9'],
      close: false,
      expected: ['content-length', '2', 'x-request-id', 'rid', 'ratelimit-limit', '10', 'ratelimit-remaining', '9'],
    },
    { name: 'draining: connection close', upstream: raw('upgrade', 'h2c', 'te', 'trailers'), own: null, close: true, expected: ['x-request-id', 'rid', 'connection', 'close'] },
  ];
  for (const c of cases) test(c.name, () => assert.deepEqual(responseHeaderList(c.upstream, 'rid', c.own, c.close), c.expected));
});

describe('acceptableRequestId', () => {
  const cases: { name: string; value: string | string[] | undefined; ok: boolean }[] = [
    { name: 'uuid', value: '3f2b8c1e-8a7d-4e2f-9b1a-0c4d5e6f7a8b', ok: true },
    { name: 'dotted and coloned token', value: 'trace:abc.DEF_123', ok: true },
    { name: 'single character', value: 'x', ok: true },
    { name: '128 characters', value: 'a'.repeat(128), ok: true },
    { name: '129 characters (overlong)', value: 'a'.repeat(129), ok: false },
    { name: 'empty', value: '', ok: false },
    { name: 'space', value: 'abc def', ok: false },
    { name: 'newline (log injection)', value: 'abc\nINFO fake line', ok: false },
    { name: 'html', value: '<script>', ok: false },
    { name: 'quote', value: 'a"b', ok: false },
    { name: 'non-ASCII', value: 'idé', ok: false },
    { name: 'slash', value: 'a/b', ok: false },
    { name: 'repeated header (array)', value: ['a', 'b'], ok: false },
    { name: 'absent', value: undefined, ok: false },
  ];
  for (const { name, value, ok } of cases) {
    test(`${name} → ${ok ? 'kept' : 'replaced'}`, () => {
      assert.equal(acceptableRequestId(value), ok ? value : undefined);
    });
  }
});

describe('upstreamRequestHeaders: identity', () => {
  const identity = { method: 'apiKey', subject: 'alice', consumer: 'alice', scopes: ['billing:read', 'orders'], plan: 'gold' };

  test('incoming x-cgw-* headers never reach the upstream, even on a public route', () => {
    const out = upstreamRequestHeaders({ 'x-cgw-consumer': 'admin', 'x-cgw-subject': 'root', 'x-cgw-anything': 'x', accept: '*/*' }, CTX);
    assert.deepEqual(Object.keys(out).filter((h) => h.toLowerCase().startsWith('x-cgw-')), []);
    assert.equal(out.accept, '*/*');
  });

  test('a forged identity is replaced by the authenticated one', () => {
    const out = upstreamRequestHeaders({ 'x-cgw-consumer': 'admin', 'x-cgw-scopes': 'everything' }, { ...CTX, identity });
    assert.equal(out['x-cgw-consumer'], 'alice');
    assert.equal(out['x-cgw-subject'], 'alice');
    assert.equal(out['x-cgw-scopes'], 'billing:read orders');
    assert.equal(out['x-cgw-plan'], 'gold');
    assert.equal(out['x-cgw-auth-method'], 'apiKey');
  });

  test('a JWT identity has no consumer header, and absent scopes or plan send nothing', () => {
    const out = upstreamRequestHeaders({}, { ...CTX, identity: { method: 'jwt', subject: 'user-7', consumer: null, scopes: [], plan: null } });
    assert.equal(out['x-cgw-subject'], 'user-7');
    assert.equal(out['x-cgw-consumer'], undefined);
    assert.equal(out['x-cgw-scopes'], undefined);
    assert.equal(out['x-cgw-plan'], undefined);
  });

  test('a subject that is not a valid header value is percent-encoded', () => {
    const out = upstreamRequestHeaders({}, { ...CTX, identity: { ...identity, consumer: null, subject: 'jörg\r\nx-evil: 1' } });
    assert.equal(out['x-cgw-subject'], encodeURIComponent('jörg\r\nx-evil: 1'));
  });

  test('credential headers named in drop are removed', () => {
    const out = upstreamRequestHeaders({ authorization: 'Bearer abc', 'x-api-key': 'cgw_a_1', accept: 'x' }, { ...CTX, drop: ['authorization', 'x-api-key'] });
    assert.equal(out.authorization, undefined);
    assert.equal(out['x-api-key'], undefined);
    assert.equal(out.accept, 'x');
  });
});

describe('upstreamRequestHeaders: what the gateway answers or owns', () => {
  test('identity headers spelled with underscores are dropped too (CGI maps - and _ alike)', () => {
    const out = upstreamRequestHeaders({ x_cgw_subject: 'admin', 'x_cgw-scopes': 'payments', x_cgwother: 'kept' }, CTX);
    assert.equal(out.x_cgw_subject, undefined);
    assert.equal(out['x_cgw-scopes'], undefined);
    assert.equal(out.x_cgwother, 'kept');
  });

  test('Expect is not forwarded: Node already answered 100 Continue', () => {
    const out = upstreamRequestHeaders({ expect: '100-continue', accept: 'x' }, CTX);
    assert.equal(out.expect, undefined);
    assert.equal(out.accept, 'x');
  });
});
