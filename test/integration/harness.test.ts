/** Checks the integration-test helpers that do not depend on src/ (Consul agent, upstream). */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { freePort } from '../helpers/ports.ts';
import { startUpstream } from '../helpers/upstream.ts';
import { waitFor } from '../helpers/wait.ts';

interface HealthEntry {
  Service: { ID: string; Service: string; Tags: string[]; Port: number; Address: string; Weights: { Passing: number; Warning: number } };
  Checks: Array<{ CheckID: string; Status: string }>;
}

let consul: ConsulAgent;

before(async () => {
  consul = await startConsul();
});

after(async () => {
  await consul?.destroy();
});

async function health(name: string): Promise<HealthEntry[]> {
  const r = await consul.api('GET', `/v1/health/service/${name}`);
  assert.equal(r.status, 200, r.text);
  return JSON.parse(r.text) as HealthEntry[];
}

function checkStatus(e: HealthEntry | undefined, checkId: string): string | undefined {
  return e?.Checks.find((c) => c.CheckID === checkId)?.Status;
}

test('freePort returns a bindable loopback port', async () => {
  const p = await freePort();
  assert.ok(Number.isInteger(p) && p > 0 && p < 65536);
});

test('waitFor resolves with the first truthy value and times out with the message', async () => {
  let n = 0;
  assert.equal(await waitFor(() => (++n >= 3 ? n : undefined), { intervalMs: 1 }), 3);
  await assert.rejects(waitFor(() => false, { timeoutMs: 50, intervalMs: 10, message: 'never' }), /never.*last value: false/);
});

test('agent is up on loopback with a leader', async () => {
  assert.match(consul.addr, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(consul.addr, `http://127.0.0.1:${consul.httpPort}`);
  assert.ok(consul.pid > 0);
  const r = await consul.api('GET', '/v1/status/leader');
  assert.notEqual(JSON.parse(r.text), '');
});

test('register keeps tags and weights; check status flips', async () => {
  await consul.register({ id: 'web-1', name: 'web', port: 18081, tags: ['urlprefix-/web', 'v1'], weights: { passing: 7, warning: 2 } });
  let [e] = await health('web');
  assert.ok(e, 'web-1 listed');
  assert.equal(e.Service.ID, 'web-1');
  assert.equal(e.Service.Address, '127.0.0.1');
  assert.equal(e.Service.Port, 18081);
  assert.deepEqual(e.Service.Tags, ['urlprefix-/web', 'v1']);
  assert.deepEqual(e.Service.Weights, { Passing: 7, Warning: 2 });
  assert.equal(checkStatus(e, 'check:web-1'), 'passing');
  assert.equal(checkStatus(e, 'serfHealth'), 'passing');

  await consul.setCheck('web-1', 'critical');
  [e] = await health('web');
  assert.equal(checkStatus(e, 'check:web-1'), 'critical');
  const passing = JSON.parse((await consul.api('GET', '/v1/health/service/web?passing')).text) as unknown[];
  assert.equal(passing.length, 0, '?passing hides the critical instance');

  await consul.setCheck('web-1', 'warning');
  [e] = await health('web');
  assert.equal(checkStatus(e, 'check:web-1'), 'warning');
  await consul.setCheck('web-1', 'passing');
  [e] = await health('web');
  assert.equal(checkStatus(e, 'check:web-1'), 'passing');
});

test('register with an initial status, without a check, and deregister', async () => {
  await consul.register({ id: 'api-1', name: 'api', port: 18082, check: 'critical' });
  await consul.register({ id: 'api-2', name: 'api', port: 18083, address: '127.0.0.2', check: false });
  const es = await health('api');
  const byId = new Map(es.map((e) => [e.Service.ID, e]));
  assert.equal(checkStatus(byId.get('api-1'), 'check:api-1'), 'critical');
  assert.equal(byId.get('api-2')?.Service.Address, '127.0.0.2');
  assert.deepEqual(byId.get('api-2')?.Checks.map((c) => c.CheckID), ['serfHealth']);
  await consul.deregister('api-1');
  await consul.deregister('api-2');
  assert.deepEqual(await health('api'), []);
});

test('service and node maintenance show up as critical checks', async () => {
  await consul.serviceMaintenance('web-1', true);
  let [e] = await health('web');
  assert.equal(checkStatus(e, '_service_maintenance:web-1'), 'critical');
  await consul.serviceMaintenance('web-1', false);
  [e] = await health('web');
  assert.equal(checkStatus(e, '_service_maintenance:web-1'), undefined);

  await consul.nodeMaintenance(true);
  [e] = await health('web');
  assert.equal(checkStatus(e, '_node_maintenance'), 'critical');
  await consul.nodeMaintenance(false);
  [e] = await health('web');
  assert.equal(checkStatus(e, '_node_maintenance'), undefined);
});

test('kvPut / kvGet / kvDelete round-trip', async () => {
  assert.equal(await consul.kvGet('cgw/test/missing'), null);
  await consul.kvPut('cgw/test/canary web', '{"v1":90,"v2":10}');
  const a = await consul.kvGet('cgw/test/canary web');
  assert.equal(a?.value, '{"v1":90,"v2":10}');
  assert.ok((a?.modifyIndex ?? 0) > 0);
  await consul.kvPut('cgw/test/canary web', '');
  const b = await consul.kvGet('cgw/test/canary web');
  assert.equal(b?.value, '');
  assert.ok((b?.modifyIndex ?? 0) > (a?.modifyIndex ?? 0));
  await consul.kvDelete('cgw/test/canary web');
  assert.equal(await consul.kvGet('cgw/test/canary web'), null);
});

test('stop() then start() on the same data dir keeps the catalog and the ports', async () => {
  await consul.kvPut('cgw/test/persist', 'yes');
  const { addr, dataDir } = consul;
  const oldPid = consul.pid;
  await consul.stop();
  await assert.rejects(request(`${addr}/v1/status/leader`));
  await consul.stop(); // idempotent
  await consul.start();
  assert.equal(consul.addr, addr);
  assert.equal(consul.dataDir, dataDir);
  assert.notEqual(consul.pid, oldPid);
  const [e] = await health('web');
  assert.equal(e?.Service.ID, 'web-1');
  assert.deepEqual(e?.Service.Weights, { Passing: 7, Warning: 2 });
  assert.equal(checkStatus(e, 'check:web-1'), 'passing');
  assert.equal((await consul.kvGet('cgw/test/persist'))?.value, 'yes');
  // The restored TTL check is still controllable.
  await consul.setCheck('web-1', 'critical');
  await consul.setCheck('web-1', 'passing');
});

test('upstream answers with its identity and echoes bodies', async () => {
  const up = await startUpstream('alpha');
  try {
    const r = await request(`${up.url}/some/path?q=1`, { headers: { 'x-test': 'yes' } });
    assert.equal(r.statusCode, 200);
    assert.equal(r.headers['x-upstream'], 'alpha');
    const j = (await r.body.json()) as { upstream: string; method: string; url: string; headers: Record<string, string> };
    assert.equal(j.upstream, 'alpha');
    assert.equal(j.method, 'GET');
    assert.equal(j.url, '/some/path?q=1');
    assert.equal(j.headers['x-test'], 'yes');

    const payload = 'x'.repeat(200_000);
    const e = await request(`${up.url}/echo/abc`, { method: 'POST', body: payload, headers: { 'content-type': 'text/plain' } });
    assert.equal(e.statusCode, 200);
    assert.equal(e.headers['x-upstream'], 'alpha');
    assert.equal(await e.body.text(), payload);

    assert.equal(up.hits, 2);
    assert.equal(up.requests[1]?.method, 'POST');
  } finally {
    await up.close();
  }
  await assert.rejects(request(`${up.url}/`));
});

test('upstream delayMs holds the response; close() ends pending requests', async () => {
  const up = await startUpstream('slow', { delayMs: 300 });
  const t0 = Date.now();
  const r = await request(`${up.url}/`);
  await r.body.json();
  assert.ok(Date.now() - t0 >= 290, 'response was delayed');
  const pending = request(`${up.url}/`);
  await waitFor(() => up.hits === 2, { message: 'second request arrived' });
  await up.close();
  await assert.rejects(pending);
});
