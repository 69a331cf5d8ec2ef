/**
 * The admin API's controls and event stream against a real Consul and the real gateway: canary
 * weights set with the admin token move the data plane's traffic (through Consul and the watch,
 * never locally); a lost check-and-set answers 409 and leaves Consul as it was; no token or a
 * wrong one answers 401; hostile bodies answer 4xx and change nothing, and the gateway still
 * serves and still applies Consul changes afterwards; rollout actions run `cgw rollout`'s rules;
 * the event stream delivers a snapshot event after a Consul change and holds at most 64 clients.
 */
import assert from 'node:assert/strict';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

const TOKEN = 'dashboard-admin-token-0123456789';
const KEY = 'gateway/canary/web';

let consul: ConsulAgent;
let gw: GatewayProcess;
const ups: Upstream[] = [];
const client = new Agent({ keepAliveTimeout: 10_000, connections: 8 });

interface Answer {
  status: number;
  body: { error?: { code: string; message: string } } & Record<string, unknown>;
  headers: Record<string, string | string[] | undefined>;
}

async function admin(method: string, path: string, options: { token?: string | null; body?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const token = options.token === undefined ? TOKEN : options.token;
  const r = await request(`${gw.adminUrl}${path}`, {
    method: method as 'GET',
    dispatcher: client,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}), ...options.headers },
    body: options.body,
    headersTimeout: 20_000,
    bodyTimeout: 20_000,
  });
  const text = await r.body.text();
  let body: Answer['body'] = {};
  try {
    body = JSON.parse(text) as Answer['body'];
  } catch {
    body = { raw: text };
  }
  return { status: r.statusCode, body, headers: r.headers };
}

const putWeights = (weights: unknown, modifyIndex: unknown, token?: string | null) => admin('PUT', '/v1/canary/web', { token, body: JSON.stringify({ weights, modifyIndex }) });

async function canaryIndex(): Promise<number> {
  return (await consul.kvGet(KEY))?.modifyIndex ?? 0;
}

async function hitUpstream(): Promise<string> {
  const r = await request(`${gw.url}/web`, { dispatcher: client, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const body = await r.body.text();
  assert.equal(r.statusCode, 200, body);
  return String(r.headers['x-upstream']);
}

async function appliedWeights(expected: Record<string, number> | null): Promise<void> {
  await waitFor(
    async () => {
      const views = (await admin('GET', '/v1/canary')).body as unknown as { service: string; weights: Record<string, number> }[];
      const web = views.find((v) => v.service === 'web');
      return expected === null ? web === undefined : JSON.stringify(web?.weights) === JSON.stringify(expected);
    },
    { timeoutMs: 20_000, message: `gateway weights ${JSON.stringify(expected)}` },
  );
}

async function metric(name: string): Promise<string> {
  return (await admin('GET', '/metrics')).body.raw as string;
}

before(async () => {
  consul = await startConsul();
  for (const v of ['v1', 'v2']) {
    const u = await startUpstream(`web-${v}`);
    ups.push(u);
    await consul.register({ id: `web-${v}`, name: 'web', port: u.port, tags: ['urlprefix-/web', v] });
  }
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--admin-token', TOKEN] });
  await waitFor(async () => (await hitUpstream()) !== '', { timeoutMs: 20_000, message: 'web routed' });
});

after(async () => {
  await gw?.kill();
  await client.close();
  await Promise.all(ups.map((u) => u.close()));
  await consul?.destroy();
});

describe('canary weights through the admin API', () => {
  test('without the token, or with a wrong one, every write answers 401 and Consul is unchanged', async () => {
    for (const token of [null, 'not-the-admin-token-at-all']) {
      for (const [method, path] of [['PUT', '/v1/canary/web'], ['DELETE', '/v1/canary/web'], ['POST', '/v1/rollouts/web/pause']] as const) {
        const r = await admin(method, path, { token, body: JSON.stringify({ weights: { v1: 0, v2: 100 }, modifyIndex: 0 }) });
        assert.equal(r.status, 401, `${method} ${path} with ${token ?? 'no token'}`);
        assert.equal(r.body.error?.code, 'unauthorized');
      }
    }
    assert.equal(await consul.kvGet(KEY), null);
    assert.match(await metric('w'), /cgw_admin_writes_total\{action="canary_set",outcome="unauthorized"\} 2/);
  });

  test('PUT v1=0 v2=100 with the token is written to Consul and moves all traffic to v2', async () => {
    const r = await putWeights({ v1: 0, v2: 100 }, 0);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(JSON.parse((await consul.kvGet(KEY))?.value ?? 'null'), { weights: { v1: 0, v2: 100 } });
    await appliedWeights({ v1: 0, v2: 100 });
    for (let i = 0; i < 30; i++) assert.equal(await hitUpstream(), 'web-v2');
    assert.match(await metric('w'), /cgw_admin_writes_total\{action="canary_set",outcome="ok"\} 1/);
  });

  test('a write on a ModifyIndex someone else has moved answers 409, and Consul keeps their value', async () => {
    const seen = await canaryIndex();
    await consul.kvPut(KEY, JSON.stringify({ weights: { v1: 50, v2: 50 } }));
    const r = await putWeights({ v1: 100, v2: 0 }, seen);
    assert.equal(r.status, 409, JSON.stringify(r.body));
    assert.equal(r.body.error?.code, 'conflict');
    assert.match(r.body.error?.message ?? '', /someone changed it since; nothing written/);
    assert.deepEqual(JSON.parse((await consul.kvGet(KEY))?.value ?? 'null'), { weights: { v1: 50, v2: 50 } });
    // If-Match carries the index as well; a stale one is refused the same way.
    const viaHeader = await admin('PUT', '/v1/canary/web', { body: JSON.stringify({ weights: { v1: 100, v2: 0 } }), headers: { 'if-match': `"${seen}"` } });
    assert.equal(viaHeader.status, 409);
    await appliedWeights({ v1: 50, v2: 50 });
  });

  test('hostile and wrong bodies answer 4xx with a clear error and change nothing', async () => {
    const index = await canaryIndex();
    const before = (await consul.kvGet(KEY))?.value;
    const deep = `{"weights":${'{"a":'.repeat(200)}1${'}'.repeat(200)},"modifyIndex":${index}}`;
    const cases: { what: string; body?: string; status: number; code: string; message?: RegExp; headers?: Record<string, string>; path?: string }[] = [
      { what: 'malformed JSON', body: '{"weights": {"v1": 90,', status: 400, code: 'bad_request', message: /not JSON/ },
      { what: 'not an object', body: '[1,2]', status: 400, code: 'bad_request' },
      { what: 'oversized', body: JSON.stringify({ weights: { v1: 0, v2: 100 }, pad: 'x'.repeat(40_000), modifyIndex: index }), status: 413, code: 'payload_too_large' },
      { what: 'deeply nested', body: deep, status: 400, code: 'bad_request', message: /deep|nest/i },
      { what: '__proto__ tag', body: `{"weights":{"__proto__":100},"modifyIndex":${index}}`, status: 400, code: 'bad_request', message: /__proto__/ },
      { what: 'constructor field', body: `{"weights":{"v1":0,"v2":100},"constructor":{},"modifyIndex":${index}}`, status: 400, code: 'bad_request', message: /constructor/ },
      { what: 'unknown subset', body: JSON.stringify({ weights: { v1: 0, v9: 100 }, modifyIndex: index }), status: 400, code: 'unknown_subset', message: /no instance of web carries tag v9/ },
      { what: 'negative weight', body: JSON.stringify({ weights: { v1: -10, v2: 110 }, modifyIndex: index }), status: 400, code: 'bad_request', message: />= 0/ },
      { what: 'float weight', body: JSON.stringify({ weights: { v1: 12.5, v2: 87.5 }, modifyIndex: index }), status: 400, code: 'bad_request', message: /whole number/ },
      { what: 'sum not 100', body: JSON.stringify({ weights: { v1: 10, v2: 10 }, modifyIndex: index }), status: 400, code: 'bad_request', message: /sum to 100/ },
      { what: 'string weight', body: JSON.stringify({ weights: { v1: '0', v2: 100 }, modifyIndex: index }), status: 400, code: 'bad_request' },
      { what: 'unknown field', body: JSON.stringify({ weights: { v1: 0, v2: 100 }, modifyIndex: index, force: true }), status: 400, code: 'bad_request' },
      { what: 'no index', body: JSON.stringify({ weights: { v1: 0, v2: 100 } }), status: 428, code: 'index_required' },
      { what: 'bad If-Match', body: JSON.stringify({ weights: { v1: 0, v2: 100 } }), headers: { 'if-match': 'yesterday' }, status: 400, code: 'bad_request' },
      { what: 'bad service name', path: '/v1/canary/..%2Fpolicies', body: JSON.stringify({ weights: { v1: 0, v2: 100 }, modifyIndex: 0 }), status: 400, code: 'bad_request' },
      { what: 'broken escape in the name', path: '/v1/canary/%zz', body: '{}', status: 400, code: 'bad_request' },
    ];
    for (const c of cases) {
      const r = await admin('PUT', c.path ?? '/v1/canary/web', { body: c.body, ...(c.headers ? { headers: c.headers } : {}) });
      assert.equal(r.status, c.status, `${c.what}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error?.code, c.code, c.what);
      if (c.message) assert.match(r.body.error?.message ?? '', c.message, c.what);
    }
    assert.equal((await consul.kvGet(KEY))?.value, before);
    assert.equal(await canaryIndex(), index);
  });

  test('a body past the 16 KiB limit answers 413, and other paths stay read-only (405)', async () => {
    const r = await admin('PUT', '/v1/canary/web', { body: 'x'.repeat(17 * 1024) });
    assert.equal(r.status, 413);
    const other = await admin('PUT', '/v1/services', { body: '{}' });
    assert.equal(other.status, 405);
    assert.equal(other.body.error?.code, 'method_not_allowed');
  });

  test('a body that never finishes holds up no one: other writes and reads go on while it stalls', async () => {
    const stalled = httpRequest(`${gw.adminUrl}/v1/canary/web`, {
      method: 'PUT',
      agent: false,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json', 'content-length': '1000' },
    });
    stalled.on('error', () => undefined);
    stalled.write('{"weights": {"v1"');
    try {
      const index = await canaryIndex();
      const r = await putWeights({ v1: 0, v2: 100 }, index);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal((await admin('GET', '/v1/status')).status, 200);
      await appliedWeights({ v1: 0, v2: 100 });
      assert.equal(await hitUpstream(), 'web-v2');
    } finally {
      stalled.destroy();
    }
  });

  test('200 concurrent PUTs: at most one wins the check-and-set, the rest answer 409 or 429; then the gateway serves and applies Consul changes', async () => {
    // A value unlike both written ones: Consul leaves the ModifyIndex alone when a write stores
    // the value and flags already there, so such a write would "win" on the same index too.
    await consul.kvPut(KEY, JSON.stringify({ weights: { v1: 50, v2: 50 } }));
    const index = await canaryIndex();
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => putWeights(i % 2 ? { v1: 100, v2: 0 } : { v1: 0, v2: 100 }, index)));
    const statuses = answers.map((a) => a.status);
    assert.ok(statuses.every((s) => s === 200 || s === 409 || s === 429), `statuses: ${[...new Set(statuses)].join(',')}`);
    assert.ok(statuses.filter((s) => s === 200).length <= 1, 'two writes on one ModifyIndex both succeeded');
    const ok = await hitUpstream();
    assert.match(ok, /^web-v[12]$/);
    await consul.kvPut(KEY, JSON.stringify({ weights: { v1: 0, v2: 100 } }));
    await appliedWeights({ v1: 0, v2: 100 });
    assert.equal(await hitUpstream(), 'web-v2');
  });

  test('DELETE with the ModifyIndex read clears the weights; a stale one answers 409', async () => {
    const index = await canaryIndex();
    const stale = await admin('DELETE', '/v1/canary/web', { body: JSON.stringify({ modifyIndex: index - 1 }) });
    assert.equal(stale.status, 409);
    assert.ok(await consul.kvGet(KEY));
    const r = await admin('DELETE', '/v1/canary/web', { headers: { 'if-match': String(index) } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(await consul.kvGet(KEY), null);
    await appliedWeights(null);
    const again = await admin('DELETE', '/v1/canary/web', { body: JSON.stringify({ modifyIndex: index }) });
    assert.equal(again.status, 404);
  });
});

describe('rollouts and fleet', () => {
  test('rollout actions follow cgw rollout: 404 without a rollout, pause then resume, a refused repeat is 409, /v1/rollouts shows state and history', async () => {
    const none = await admin('POST', '/v1/rollouts/web/pause');
    assert.equal(none.status, 404);
    assert.equal(none.body.error?.code, 'not_found');
    const started = await runCli(['rollout', 'start', 'web', '--canary', 'v2', '--stable', 'v1', '--steps', '20,100', '--soak', '10m', '--consul', consul.addr]);
    assert.equal(started.code, 0, started.stderr);
    const paused = await admin('POST', '/v1/rollouts/web/pause');
    assert.equal(paused.status, 200, JSON.stringify(paused.body));
    const twice = await admin('POST', '/v1/rollouts/web/pause');
    assert.equal(twice.status, 409);
    assert.equal(twice.body.error?.code, 'rollout_refused');
    assert.match(twice.body.error?.message ?? '', /paused already/);
    const status = await runCli(['rollout', 'status', 'web', '--json', '--consul', consul.addr]);
    const cli = JSON.parse(status.stdout) as { rollout: { state: string; step: number; history: { event: string; by?: string }[] } };
    assert.equal(cli.rollout.state, 'paused');
    assert.match(cli.rollout.history.at(-1)?.by ?? '', /admin API from 127\.0\.0\.1/);
    await waitFor(async () => {
      const list = (await admin('GET', '/v1/rollouts')).body as unknown as { service: string; rollout: { state: string; history: unknown[] }; figures: unknown }[];
      const web = list.find?.((x) => x.service === 'web');
      return web?.rollout.state === 'paused' && web.rollout.history.length === cli.rollout.history.length && web.figures !== null;
    }, { timeoutMs: 10_000, message: '/v1/rollouts shows the paused rollout' });
    const aborted = await admin('POST', '/v1/rollouts/web/abort');
    assert.equal(aborted.status, 200);
    assert.deepEqual(JSON.parse((await consul.kvGet(KEY))?.value ?? 'null'), { weights: { v2: 0, v1: 100 } });
    await appliedWeights({ v2: 0, v1: 100 });
    assert.equal(await hitUpstream(), 'web-v1');
  });

  test('/v1/fleet shows what cgw fleet shows', async () => {
    const cli = await runCli(['fleet', '--json', '--consul', consul.addr]);
    const expected = JSON.parse(cli.stdout) as { gateways: { id: string }[] };
    await waitFor(async () => {
      const r = await admin('GET', '/v1/fleet');
      const body = r.body as unknown as { service: string; gateways: { id: string }[] };
      return r.status === 200 && body.service === 'cgw' && JSON.stringify(body.gateways.map((g) => g.id)) === JSON.stringify(expected.gateways.map((g) => g.id));
    }, { timeoutMs: 15_000, message: 'fleet view' });
  });
});

/** Opens the event stream; resolves with the response once its head arrived. */
function openStream(token: string | null = TOKEN): Promise<{ req: ClientRequest; res: IncomingMessage; events: { event: string; data: Record<string, unknown> }[] }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${gw.adminUrl}/v1/events`, { headers: token ? { authorization: `Bearer ${token}` } : {}, agent: false }, (res) => {
      const events: { event: string; data: Record<string, unknown> }[] = [];
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buffer += chunk;
        let cut;
        while ((cut = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (event && data) events.push({ event, data: JSON.parse(data) as Record<string, unknown> });
        }
      });
      res.on('error', () => undefined);
      resolve({ req, res, events });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('event stream', () => {
  test('a Consul change arrives as a snapshot event with the new version, without polling', async () => {
    const s = await openStream();
    try {
      assert.equal(s.res.statusCode, 200);
      assert.match(String(s.res.headers['content-type']), /^text\/event-stream/);
      const hello = await waitFor(() => s.events.find((e) => e.event === 'hello'), { timeoutMs: 10_000, message: 'hello event' });
      const u = await startUpstream('web-v3');
      ups.push(u);
      await consul.register({ id: 'web-v3', name: 'web', port: u.port, tags: ['urlprefix-/web', 'v3'] });
      const change = await waitFor(() => s.events.find((e) => e.event === 'snapshot' && e.data.version !== hello.data.version), { timeoutMs: 20_000, message: 'snapshot event' });
      // The version announced is one the admin API then reports in force.
      await waitFor(
        async () => {
          const status = (await admin('GET', '/v1/status')).body as unknown as { snapshot: { version: string } };
          return s.events.some((e) => e.event === 'snapshot' && e.data.version === status.snapshot.version);
        },
        { timeoutMs: 20_000, message: 'the announced version is the one in force' },
      );
      assert.notEqual(change.data.version, hello.data.version);
    } finally {
      s.req.destroy();
    }
  });

  test('at most 64 clients: the 65th answers 503 too_many_clients; closed streams are cleaned up', async () => {
    const streams = [];
    try {
      for (let i = 0; i < 64; i++) streams.push(await openStream());
      assert.ok(streams.every((s) => s.res.statusCode === 200));
      const extra = await admin('GET', '/v1/events');
      assert.equal(extra.status, 503);
      assert.equal(extra.body.error?.code, 'too_many_clients');
      assert.match(await metric('x'), /cgw_admin_event_clients 64/);
    } finally {
      for (const s of streams) s.req.destroy();
    }
    await waitFor(async () => /cgw_admin_event_clients 0/.test(await metric('x')), { timeoutMs: 10_000, message: 'streams cleaned up' });
    assert.match(await metric('x'), /cgw_admin_event_clients_refused_total 1/);
    const again = await openStream();
    assert.equal(again.res.statusCode, 200);
    again.req.destroy();
  });

  test('the dashboard page is served with a strict Content-Security-Policy and no caching', async () => {
    const r = await request(`${gw.adminUrl}/ui`, { dispatcher: client });
    const html = await r.body.text();
    assert.equal(r.statusCode, 200);
    assert.match(String(r.headers['content-security-policy']), /default-src 'self'/);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.equal(r.headers['cache-control'], 'no-store');
    assert.match(html, /<label for="admin-token">Admin token<\/label>/);
    assert.doesNotMatch(html, /<script>(?!<\/script>)/);
  });
});
