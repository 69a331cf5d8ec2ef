/**
 * The proxy's own guarantees: upstream timeouts and unreachable endpoints become the documented
 * JSON errors, a removed endpoint's in-flight request finishes, access and change logs say what
 * happened (and never the credentials), metrics follow services as they come and go, and the
 * least-request picker steers around a slow endpoint.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePort } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
const ups: Upstream[] = [];

async function upstream(name: string, delayMs?: number): Promise<Upstream> {
  const u = await startUpstream(name, delayMs ? { delayMs } : {});
  ups.push(u);
  return u;
}

async function get(path: string, headers: Record<string, string> = {}, base = gw.url) {
  const r = await request(`${base}${path}`, { headers, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const text = await r.body.text();
  return { status: r.statusCode, headers: r.headers, text, json: () => JSON.parse(text) as { error: { code: string; requestId: string } } };
}

async function metrics(base = gw.adminUrl): Promise<string> {
  return (await request(`${base}/metrics`)).body.text();
}

function logLines(g: GatewayProcess, msg: string): Record<string, unknown>[] {
  return g.logs
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === msg);
}

before(async () => {
  consul = await startConsul();
  const slow = await upstream('slow', 1500);
  const fine = await upstream('fine');
  await consul.register({ id: 'slow-1', name: 'slow', port: slow.port, tags: ['urlprefix-/slow'] });
  await consul.register({ id: 'fine-1', name: 'fine', port: fine.port, tags: ['urlprefix-/fine'] });
  const closed = await freePort();
  await consul.register({ id: 'dead-1', name: 'dead', port: closed, tags: ['urlprefix-/dead'] });
  gw = await startGateway({ consul: consul.addr, args: ['--response-timeout', '500ms', '--log-level', 'info'] });
});

after(async () => {
  await gw?.kill();
  await consul?.destroy();
  await Promise.all(ups.map((u) => u.close()));
});

describe('upstream failures', () => {
  test('no response headers within --response-timeout → 504 upstream_timeout', async () => {
    const r = await get('/slow');
    assert.equal(r.status, 504);
    assert.equal(r.json().error.code, 'upstream_timeout');
    assert.equal(r.headers['content-type'], 'application/json; charset=utf-8');
  });

  test('the only endpoint refuses connections → 502 upstream_unreachable', async () => {
    const r = await get('/dead/x');
    assert.equal(r.status, 502);
    assert.equal(r.json().error.code, 'upstream_unreachable');
    assert.equal(r.json().error.requestId, r.headers['x-request-id']);
  });
});

describe('logs', () => {
  test('one access line per request with route, service, endpoint, status, duration and request id; no credentials', async () => {
    const r = await get('/fine/logged', { authorization: 'Bearer s3cret-token', cookie: 'session=s3cret-cookie', 'x-request-id': 'log-test-1' });
    assert.equal(r.status, 200);
    const line = await waitFor(() => logLines(gw, 'access').find((l) => l.requestId === 'log-test-1'), { message: 'access line' });
    assert.equal(line.method, 'GET');
    assert.equal(line.path, '/fine/logged');
    assert.equal(line.route, '/fine');
    assert.equal(line.service, 'fine');
    assert.match(String(line.endpoint), /^127\.0\.0\.1:\d+$/);
    assert.equal(line.status, 200);
    assert.equal(typeof line.durationMs, 'number');
    assert.ok(!gw.logs.some((l) => l.includes('s3cret')), 'credentials never reach the log');
  });

  test('an applied change is logged as a diff naming the endpoint', async () => {
    const extra = await upstream('fine-b');
    await consul.register({ id: 'fine-2', name: 'fine', port: extra.port, tags: ['urlprefix-/fine'] });
    const line = await waitFor(
      () => logLines(gw, 'snapshot applied').find((l) => JSON.stringify(l.changes ?? {}).includes('fine/fine-2@')),
      { message: 'snapshot diff line' },
    );
    assert.deepEqual((line.changes as { endpointsAdded: string[] }).endpointsAdded, [`fine/fine-2@127.0.0.1:${extra.port}`]);
    await consul.deregister('fine-2');
  });
});

describe('--no-access-log', () => {
  test('turns off the per-request line and nothing else', async () => {
    const quiet = await startGateway({ consul: consul.addr, args: ['--no-access-log', '--log-level', 'info'] });
    try {
      assert.equal((await get('/fine/quiet', {}, quiet.url)).status, 200);
      // A change logged after the request: once its line is in, an access line would be too.
      const marker = await upstream('quiet-marker');
      await consul.register({ id: 'quiet-1', name: 'quiet', port: marker.port, tags: ['urlprefix-/quiet'] });
      await waitFor(() => logLines(quiet, 'snapshot applied').some((l) => JSON.stringify(l.changes).includes('quiet/quiet-1@')), {
        message: 'change log still on',
      });
      assert.deepEqual(logLines(quiet, 'access'), []);
      await consul.deregister('quiet-1');
    } finally {
      await quiet.kill();
    }
  });
});

describe('a removed endpoint', () => {
  test('finishes its in-flight request before its pool closes', async () => {
    const lingering = await upstream('lingering', 300);
    await consul.register({ id: 'linger-1', name: 'linger', port: lingering.port, tags: ['urlprefix-/linger'] });
    await waitFor(async () => (await get('/linger/warm')).status === 200, { message: 'route up' });
    const inFlight = get('/linger/slow');
    await waitFor(() => lingering.hits > 0 && lingering.requests.some((q) => q.url === '/linger/slow'), { message: 'request reached upstream' });
    await consul.deregister('linger-1');
    await waitFor(async () => (await get('/linger/after')).status === 404, { message: 'route removed' });
    const r = await inFlight;
    assert.equal(r.status, 200, 'the request in flight when its endpoint was removed completed');
  });
});

describe('metrics', () => {
  test('requests by route, service and code; duration histogram; endpoint gauges', async () => {
    await get('/fine/m');
    const text = await metrics();
    assert.match(text, /cgw_requests_total\{route="\/fine",service="fine",code="200"\} \d+/);
    assert.match(text, /cgw_requests_total\{route="\/slow",service="slow",code="504"\} \d+/);
    assert.match(text, /cgw_request_duration_seconds_count\{route="\/fine",service="fine"\} \d+/);
    assert.match(text, /cgw_service_endpoints_healthy\{service="fine"\} 1/);
    assert.match(text, /cgw_service_endpoints_total\{service="dead"\} 1/);
    assert.match(text, /cgw_watch_last_success_timestamp_seconds\{watch="catalog"\} \d/);
  });

  test('series of a removed service are deleted', async () => {
    await consul.deregister('dead-1');
    await waitFor(async () => !/service="dead"/.test(await metrics()), { message: 'dead service series gone' });
    const text = await metrics();
    assert.doesNotMatch(text, /cgw_requests_total\{route="\/dead"/);
    assert.doesNotMatch(text, /cgw_service_endpoints_total\{service="dead"\}/);
  });
});

describe('--picker least_request', () => {
  test('a slow endpoint gets fewer concurrent requests than a fast one', async () => {
    const fast = await upstream('p2c-fast');
    const slow = await upstream('p2c-slow', 200);
    await consul.register({ id: 'p2c-fast', name: 'p2c', port: fast.port, tags: ['urlprefix-/p2c'] });
    await consul.register({ id: 'p2c-slow', name: 'p2c', port: slow.port, tags: ['urlprefix-/p2c'] });
    const p2c = await startGateway({ consul: consul.addr, args: ['--picker', 'least_request'] });
    try {
      // 8 clients, 5 requests each: round robin would give the slow endpoint half of them.
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          for (let i = 0; i < 5; i++) assert.equal((await get('/p2c', {}, p2c.url)).status, 200);
        }),
      );
      assert.equal(fast.hits + slow.hits, 40);
      assert.ok(slow.hits < 12, `slow endpoint got ${slow.hits} of 40 requests`);
    } finally {
      await p2c.kill();
    }
  });
});
