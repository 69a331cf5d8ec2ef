/**
 * The admin server's dashboard parts without Consul: the page and its files load without a token
 * (they hold no data) under a strict Content-Security-Policy; the event stream needs the token
 * when reads do, sends `retry:` and a hello, announces snapshots, and holds at most its client
 * cap; controls exist only with an admin token configured (otherwise writes stay 405); and the
 * page's script is valid JavaScript with nothing a template string would have swallowed.
 */
import assert from 'node:assert/strict';
import { request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Script } from 'node:vm';
import { after, describe, test } from 'node:test';
import { Registry } from 'prom-client';
import { adminAccess } from '../../src/admin/access.ts';
import type { AdminControls } from '../../src/admin/controls.ts';
import { AdminEvents } from '../../src/admin/events.ts';
import { createAdminServer } from '../../src/admin/server.ts';
import type { AdminWriteRecord } from '../../src/admin/writes.ts';
import { PAGE_CSS } from '../../src/admin/ui/page-css.ts';
import { PAGE_HTML } from '../../src/admin/ui/page-html.ts';
import { PAGE_JS } from '../../src/admin/ui/page-js.ts';
import { stubAdminSources } from '../helpers/admin-sources.ts';

const TOKEN = 'correct-horse-battery-staple';
const sources = stubAdminSources();

const calls: string[] = [];
const controls: AdminControls = {
  putCanary: async (service, body) => {
    calls.push(`put ${service} ${body}`);
    return { status: 200, body: { ok: true } };
  },
  deleteCanary: async (service) => {
    calls.push(`delete ${service}`);
    return { status: 409, body: { error: { code: 'conflict', message: 'changed since' } } };
  },
  rolloutAction: async (service, action) => {
    calls.push(`${action} ${service}`);
    return { status: 200, body: { ok: true } };
  },
  rollouts: async () => ({ status: 200, body: [] }),
  fleet: async () => ({ status: 200, body: { gateways: [] } }),
};

const servers: Server[] = [];
const events: AdminEvents[] = [];
const writes: AdminWriteRecord[] = [];
async function serve(token: string | undefined, loopback: boolean, maxClients = 2): Promise<{ port: number; events: AdminEvents }> {
  const hub = new AdminEvents({ maxClients, tickMs: 60_000, version: () => 'v-now' });
  events.push(hub);
  const server = createAdminServer(sources, { text: () => new Registry().metrics(), contentType: 'text/plain' }, () => {}, adminAccess(token, loopback), {
    controls,
    events: hub,
    onWrite: (w) => writes.push(w),
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return { port: (server.address() as AddressInfo).port, events: hub };
}

after(async () => {
  for (const e of events) e.close();
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
});

function call(port: number, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number; body: string; headers: IncomingMessage['headers'] }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
    });
    req.once('error', reject);
    req.end(body);
  });
}

/** Opens the stream; resolves once `until` matches what arrived, and keeps collecting after. */
function stream(port: number, headers: Record<string, string>, until: RegExp): Promise<{ status: number; text: () => string; close: () => void }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/v1/events', headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      const handle = { status: res.statusCode ?? 0, text: () => text, close: () => req.destroy() };
      res.on('error', () => undefined);
      if (res.statusCode !== 200) {
        res.on('data', (d: string) => (text += d));
        res.once('end', () => resolve(handle));
        return;
      }
      res.on('data', (d: string) => {
        text += d;
        if (until.test(text)) resolve(handle);
      });
    });
    req.once('error', reject);
    req.end();
  });
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (condition()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

describe('the page', () => {
  test('/ui, /ui/app.js and /ui/app.css load without a token even where reads need one, with CSP, nosniff and no-store', async () => {
    const { port } = await serve(TOKEN, false);
    for (const [path, type] of [['/ui', /text\/html/], ['/ui/', /text\/html/], ['/ui/app.js', /text\/javascript/], ['/ui/app.css', /text\/css/]] as const) {
      const r = await call(port, 'GET', path);
      assert.equal(r.status, 200, path);
      assert.match(String(r.headers['content-type']), type);
      assert.match(String(r.headers['content-security-policy']), /^default-src 'self';/);
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
      assert.equal(r.headers['cache-control'], 'no-store');
    }
    assert.equal((await call(port, 'GET', '/v1/status')).status, 401, 'the data still needs the token');
    assert.equal((await call(port, 'GET', '/ui/other.js')).status, 401);
  });

  test('the script parses, the markup has no inline script or handler, and nothing was lost to the string module', () => {
    assert.doesNotThrow(() => new Script(PAGE_JS));
    assert.doesNotMatch(PAGE_HTML, /<script(?![^>]*\bsrc=)[^>]*>/);
    assert.doesNotMatch(PAGE_HTML, /\son[a-z]+=/i);
    assert.match(PAGE_HTML, /<meta name="viewport"/);
    assert.match(PAGE_HTML, /<label for="admin-token">Admin token<\/label>/);
    assert.doesNotMatch(PAGE_JS, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
    assert.match(PAGE_CSS, /@media \(max-width/);
  });
});

describe('the event stream', () => {
  test('needs the token when reads do; sends retry, a hello with the version, and each snapshot', async () => {
    const { port, events: hub } = await serve(TOKEN, false);
    assert.equal((await stream(port, {}, /x/)).status, 401);
    assert.equal((await stream(port, { authorization: 'Bearer wrong-token' }, /x/)).status, 401);
    const s = await stream(port, { authorization: `Bearer ${TOKEN}` }, /event: hello/);
    assert.match(s.text(), /^retry: \d+\n/);
    assert.match(s.text(), /data: \{"version":"v-now"/);
    assert.equal(hub.count, 1);
    hub.snapshot('v-next');
    await until(() => /event: snapshot\ndata: \{"version":"v-next"/.test(s.text()), 'the snapshot event');
    s.close();
  });

  test('holds at most its cap (503 beyond, with Retry-After) and frees the places of closed streams', async () => {
    const { port, events: hub } = await serve(undefined, true, 2);
    const a = await stream(port, {}, /hello/);
    const b = await stream(port, {}, /hello/);
    const refused = await call(port, 'GET', '/v1/events');
    assert.equal(refused.status, 503);
    assert.equal(JSON.parse(refused.body).error.code, 'too_many_clients');
    assert.equal(refused.headers['retry-after'], '10');
    a.close();
    b.close();
    await until(() => hub.count === 0, 'closed streams to be dropped');
    const c = await stream(port, {}, /hello/);
    hub.snapshot('v-next');
    c.close();
  });
});

describe('controls', () => {
  test('without an admin token configured, the control paths stay read-only (405) and nothing is called', async () => {
    const { port } = await serve(undefined, true);
    calls.length = 0;
    for (const [method, path] of [['PUT', '/v1/canary/web'], ['DELETE', '/v1/canary/web'], ['POST', '/v1/rollouts/web/pause']]) {
      assert.equal((await call(port as number, method as string, path as string, {}, '{}')).status, 405);
    }
    assert.deepEqual(calls, []);
  });

  test('with the token: routed to the controls, answers passed on, each write recorded with its address; other paths 405', async () => {
    const { port } = await serve(TOKEN, true);
    calls.length = 0;
    writes.length = 0;
    const auth = { authorization: `Bearer ${TOKEN}` };
    assert.equal((await call(port, 'PUT', '/v1/canary/web', auth, '{"weights":{"v1":100},"modifyIndex":0}')).status, 200);
    assert.equal((await call(port, 'DELETE', '/v1/canary/web', auth)).status, 409);
    assert.equal((await call(port, 'POST', '/v1/rollouts/web/abort', auth)).status, 200);
    assert.equal((await call(port, 'POST', '/v1/rollouts/web/explode', auth)).status, 405);
    assert.equal((await call(port, 'PUT', '/v1/rollouts/web/abort', auth)).status, 405);
    assert.equal((await call(port, 'PUT', '/v1/canary/web', {})).status, 401);
    assert.equal((await call(port, 'PUT', '/v1/canary/web', { ...auth, 'content-length': String(64 * 1024) })).status, 413);
    assert.deepEqual(calls, ['put web {"weights":{"v1":100},"modifyIndex":0}', 'delete web', 'abort web']);
    assert.deepEqual(
      writes.map((w) => `${w.action} ${w.outcome} ${w.remote}`),
      ['canary_set ok 127.0.0.1', 'canary_clear conflict 127.0.0.1', 'rollout_abort ok 127.0.0.1', 'canary_set unauthorized 127.0.0.1', 'canary_set refused 127.0.0.1'],
    );
    assert.equal((await call(port, 'GET', '/v1/rollouts')).status, 200);
    assert.equal((await call(port, 'GET', '/v1/fleet')).status, 200);
  });
});
