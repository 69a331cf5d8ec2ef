/**
 * The admin API's token: writes always need it; reads need it when the listener is not on
 * loopback (modelled here by the access the gateway computes for such an address, the server
 * itself on 127.0.0.1); the probes stay open; a wrong token is told apart from a missing one.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'node:http';
import { Registry } from 'prom-client';
import { adminAccess } from '../../src/admin/access.ts';
import { createAdminServer } from '../../src/admin/server.ts';
import { stubAdminSources } from '../helpers/admin-sources.ts';
import { isLoopbackHost } from '../../src/core/net.ts';

const TOKEN = 'correct-horse-battery-staple';
const sources = stubAdminSources();

const servers: Server[] = [];
async function serve(loopback: boolean): Promise<number> {
  const server = createAdminServer(sources, { text: () => new Registry().metrics(), contentType: 'text/plain' }, () => {}, adminAccess(TOKEN, loopback));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return (server.address() as AddressInfo).port;
}

function call(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string; challenge: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body, challenge: res.headers['www-authenticate'] }));
    });
    req.once('error', reject);
    req.end();
  });
}

let beyondLoopback: number;
let onLoopback: number;
before(async () => {
  beyondLoopback = await serve(false);
  onLoopback = await serve(true);
});
after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

describe('an admin listener beyond loopback', () => {
  test('the probes answer without a token', async () => {
    for (const path of ['/-/healthz', '/-/readyz']) assert.equal((await call(beyondLoopback, 'GET', path)).status, 200);
  });
  test('reads need the token; a wrong one is told apart', async () => {
    for (const path of ['/v1/status', '/metrics', '/v1/policies', '/v1/consumers', '/v1/snapshot', '/nowhere']) {
      const missing = await call(beyondLoopback, 'GET', path);
      assert.equal(missing.status, 401, path);
      assert.equal(missing.challenge, 'Bearer realm="cgw-admin"');
      const wrong = await call(beyondLoopback, 'GET', path, { authorization: `Bearer ${TOKEN}x` });
      assert.equal(wrong.status, 401);
      assert.match(wrong.challenge ?? '', /invalid_token/);
    }
    assert.equal((await call(beyondLoopback, 'GET', '/v1/status', { authorization: `Bearer ${TOKEN}` })).status, 200);
    assert.equal((await call(beyondLoopback, 'GET', '/metrics', { authorization: `bearer ${TOKEN}` })).status, 200);
  });
  test('odd Authorization headers are refused, never an error', async () => {
    for (const authorization of ['Basic dXNlcjpwYXNz', 'Bearer', `Bearer ${TOKEN} extra`, `Token ${TOKEN}`, 'Bearer '.padEnd(5000, 'x'), '__proto__']) {
      assert.equal((await call(beyondLoopback, 'GET', '/v1/status', { authorization })).status, 401, authorization.slice(0, 20));
    }
  });
});

describe('an admin listener on loopback with a token', () => {
  test('reads are open (the CLI on the same host), writes need the token', async () => {
    assert.equal((await call(onLoopback, 'GET', '/v1/status')).status, 200);
    assert.equal((await call(onLoopback, 'PUT', '/v1/canary/web')).status, 401);
    // With the token the write reaches the API, which has no write endpoints yet.
    assert.equal((await call(onLoopback, 'PUT', '/v1/canary/web', { authorization: `Bearer ${TOKEN}` })).status, 405);
  });
});

describe('an admin listener on loopback: only requests for a loopback host (DNS rebinding)', () => {
  test('a page whose own name points at 127.0.0.1 is refused, the probes and the dashboard too', async () => {
    for (const host of ['evil.example', 'evil.example:9901', '127.0.0.1.evil.example', '0.0.0.0', '[fd00::1]:9901', '__proto__', 'localhost.evil.example:1']) {
      for (const path of ['/v1/status', '/v1/consumers', '/ui', '/-/readyz']) {
        const r = await call(onLoopback, 'GET', path, { host });
        assert.equal(r.status, 403, `${host} ${path}`);
        assert.match(r.body, /host_not_allowed/);
      }
    }
  });
  test('loopback names with and without a port are served', async () => {
    for (const host of ['127.0.0.1', `127.0.0.1:${onLoopback}`, `localhost:${onLoopback}`, 'LOCALHOST', `[::1]:${onLoopback}`, '127.0.0.2:80']) {
      assert.equal((await call(onLoopback, 'GET', '/v1/status', { host })).status, 200, host);
    }
  });
  test('a listener beyond loopback takes any Host (the token guards it)', async () => {
    assert.equal((await call(beyondLoopback, 'GET', '/v1/status', { host: 'cgw:9901', authorization: `Bearer ${TOKEN}` })).status, 200);
  });
});

test('loopback is 127/8, ::1 and localhost; every interface is not', () => {
  for (const host of ['127.0.0.1', '127.255.0.9', '::1', 'localhost', 'LOCALHOST']) assert.equal(isLoopbackHost(host), true, host);
  for (const host of ['', '0.0.0.0', '::', '10.0.0.1', '127.0.0.1.example.com', 'fd00::1']) assert.equal(isLoopbackHost(host), false, host);
});
