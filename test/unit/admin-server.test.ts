/**
 * The admin listener against names and escapes from outside: a service name is decoded once, looked
 * up as an own key only, and every odd spelling gets a JSON 400 or 404, never a crash.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'node:http';
import { Registry } from 'prom-client';
import { createAdminServer } from '../../src/admin/server.ts';
import { stubAdminSources } from '../helpers/admin-sources.ts';

const failures: unknown[] = [];
let server: Server;
let port: number;

const sources = stubAdminSources({
  // Only what endpointsView reads: one service "app" without endpoints.
  published: () => ({ appliedAt: Date.now(), snapshot: { services: { app: { name: 'app', endpoints: [], canary: null } } } }),
});

function call(method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.once('error', reject);
    req.end();
  });
}

const codeOf = (body: string): unknown => (JSON.parse(body) as { error?: { code?: unknown } }).error?.code;

before(async () => {
  server = createAdminServer(sources, { text: () => new Registry().metrics(), contentType: 'text/plain' }, (err) => failures.push(err));
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('/v1/services/<name>/endpoints with names from outside', () => {
  const cases: { segment: string; status: number; code?: string }[] = [
    { segment: 'app', status: 200 },
    { segment: '%61pp', status: 200 },
    { segment: '%', status: 400, code: 'bad_request' },
    { segment: '%%', status: 400, code: 'bad_request' },
    { segment: '%2', status: 400, code: 'bad_request' },
    { segment: '%zz', status: 400, code: 'bad_request' },
    { segment: '%E0%A4%A', status: 400, code: 'bad_request' },
    { segment: '%C0%AF', status: 400, code: 'bad_request' },
    { segment: '%FF', status: 400, code: 'bad_request' },
    { segment: '%ED%A0%80', status: 400, code: 'bad_request' },
    { segment: '__proto__', status: 404, code: 'service_not_found' },
    { segment: '%5F%5Fproto%5F%5F', status: 404, code: 'service_not_found' },
    { segment: 'constructor', status: 404, code: 'service_not_found' },
    { segment: 'toString', status: 404, code: 'service_not_found' },
    { segment: 'hasOwnProperty', status: 404, code: 'service_not_found' },
    { segment: 'valueOf', status: 404, code: 'service_not_found' },
    { segment: '__defineGetter__', status: 404, code: 'service_not_found' },
    { segment: 'prototype', status: 404, code: 'service_not_found' },
    { segment: '%00', status: 404, code: 'service_not_found' },
    { segment: 'a%2Fb', status: 404, code: 'service_not_found' },
    { segment: 'x'.repeat(5000), status: 404, code: 'service_not_found' },
  ];
  for (const c of cases) {
    test(`${c.segment.slice(0, 40)} → ${c.status}${c.code ? ` ${c.code}` : ''}`, async () => {
      const r = await call('GET', `/v1/services/${c.segment}/endpoints`);
      assert.equal(r.status, c.status, r.body);
      if (c.code) assert.equal(codeOf(r.body), c.code);
      else assert.deepEqual(JSON.parse(r.body), []);
    });
  }
});

describe('every method and odd paths', () => {
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE']) {
    test(`${method} → 405 method_not_allowed`, async () => {
      const r = await call(method, '/v1/services/__proto__/endpoints');
      assert.equal(r.status, 405);
      assert.equal(codeOf(r.body), 'method_not_allowed');
    });
  }
  for (const path of ['/%', '/v1/%zz', '/v1/services//endpoints', '/v1/services/app/endpoints/x', '/-/healthz/', '/__proto__', '/constructor']) {
    test(`GET ${path} → 404 not_found`, async () => {
      const r = await call('GET', path);
      assert.equal(r.status, 404, r.body);
      assert.equal(codeOf(r.body), 'not_found');
    });
  }
  test('a query string with a broken escape does not matter', async () => {
    assert.equal((await call('GET', '/-/healthz?%')).status, 200);
  });
  test('an Expect other than 100-continue gets the usual JSON answer, not a bare 417', async () => {
    const get = await call('GET', '/-/healthz', { expect: 'foo' });
    assert.equal(get.status, 200);
    const del = await call('DELETE', '/v1/status', { expect: '' });
    assert.equal(del.status, 405);
    assert.equal(codeOf(del.body), 'method_not_allowed');
  });
  test('nothing above was a failure of the admin API', () => assert.deepEqual(failures, []));
});
