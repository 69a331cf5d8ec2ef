/**
 * W3C trace context through the gateway: a client's traceparent and tracestate reach the upstream
 * unchanged, a request without one gets a new trace, and the access log names the trace id.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
let web: Upstream;
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

before(async () => {
  consul = await startConsul();
  web = await startUpstream('web');
  await consul.register({ id: 'web-1', name: 'web', port: web.port, tags: ['urlprefix-/web'] });
  gw = await startGateway({ consul: consul.addr, args: ['--log-level', 'info'] });
  await waitFor(async () => ((await fetch(`${gw.url}/web`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'web routed' });
});

after(async () => {
  await gw?.kill();
  await web?.close();
  await consul?.stop();
});

test('a client\'s trace context reaches the upstream unchanged and is in the access log', async () => {
  const res = await fetch(`${gw.url}/web/traced`, { headers: { traceparent: TRACEPARENT, tracestate: 'vendor=1' } });
  assert.equal(res.status, 200);
  const seen = web.requests.findLast((r) => r.url === '/web/traced');
  assert.equal(seen?.headers.traceparent, TRACEPARENT);
  assert.equal(seen?.headers.tracestate, 'vendor=1');
  await waitFor(async () => (gw.logs.some((l) => l.includes('"path":"/web/traced"') && l.includes('"traceId":"4bf92f3577b34da6a3ce929d0e0e4736"')) ? true : undefined), { timeoutMs: 10_000, message: 'the access line names the trace' });
});

test('without one (or with garbage) a new trace starts and the forged tracestate is dropped', async () => {
  await fetch(`${gw.url}/web/fresh`, { headers: { traceparent: 'not-a-trace', tracestate: 'forged=1' } });
  const seen = web.requests.findLast((r) => r.url === '/web/fresh');
  const sent = String(seen?.headers.traceparent);
  assert.match(sent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  assert.equal(seen?.headers.tracestate, undefined);
  const traceId = sent.slice(3, 35);
  await waitFor(async () => (gw.logs.some((l) => l.includes('"path":"/web/fresh"') && l.includes(`"traceId":"${traceId}"`)) ? true : undefined), { timeoutMs: 10_000, message: 'the new trace is logged' });
});

test('--access-log-sample 0 logs no successful request but every error', async () => {
  const quiet = await startGateway({ consul: consul.addr, args: ['--log-level', 'info', '--access-log-sample', '0'] });
  try {
    await waitFor(async () => ((await fetch(`${quiet.url}/web`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'web routed' });
    for (let i = 0; i < 20; i++) assert.equal((await fetch(`${quiet.url}/web/ok`)).status, 200);
    assert.equal((await fetch(`${quiet.url}/nowhere`)).status, 404);
    await waitFor(async () => (quiet.logs.some((l) => l.includes('"path":"/nowhere"') && l.includes('"status":404')) ? true : undefined), { timeoutMs: 10_000, message: 'the error is logged' });
    assert.equal(quiet.logs.filter((l) => l.includes('"path":"/web/ok"')).length, 0);
  } finally {
    await quiet.kill();
  }
});
