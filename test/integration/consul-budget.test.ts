/**
 * The connection budget towards Consul: with `--consul-max-conns 12` there is room for 12 - 8 = 4
 * per-service health watches, so 10 routed services switch the gateway to bulk health mode. It must
 * still route every service, reflect health flips within a second, stay within 12 connections,
 * pick up new instances, and return to per-service watches when few services remain.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import { propagationMs } from '../helpers/wait.ts';

const MAX_CONNS = 12;
const SERVICES = Array.from({ length: 10 }, (_, i) => `svc${i}`);

let consul: ConsulAgent;
let gw: GatewayProcess;
let stopping = false;
const ups = new Map<string, Upstream>();
const client = new Agent({ keepAliveTimeout: 10_000, connections: 4 });
/** Every openConnections value seen in /v1/watches while the file runs. */
const connectionSamples: number[] = [];
let sampler: NodeJS.Timeout | undefined;

async function watches(): Promise<{ mode: string; healthWatchBudget: number; openConnections: number; watches: Array<{ name: string }> }> {
  const w = (await (await fetch(`${gw.adminUrl}/v1/watches`)).json()) as { mode: string; healthWatchBudget: number; openConnections: number; watches: Array<{ name: string }> };
  connectionSamples.push(w.openConnections);
  return w;
}

async function status(): Promise<{ consul: { healthMode: string; healthWatchBudget: number; routedServices: number; openConnections: number } }> {
  const r = await runCli(['status', '--json', '--admin', gw.adminUrl]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { consul: { healthMode: string; healthWatchBudget: number; routedServices: number; openConnections: number } };
}

async function get(path: string): Promise<{ status: number; upstream: string }> {
  const r = await request(`${gw.url}${path}`, { dispatcher: client, headersTimeout: 10_000, bodyTimeout: 10_000 });
  await r.body.text();
  return { status: r.statusCode, upstream: String(r.headers['x-upstream']) };
}

/** Polls until `ok` holds for a request to `path`; returns ms from the end of `write`. */
function propagation(write: () => Promise<void>, path: string, ok: (r: { status: number; upstream: string }) => boolean, what: string): Promise<number> {
  return propagationMs(write, async () => ok(await get(path)), what);
}

before(async () => {
  consul = await startConsul();
  for (const name of SERVICES) {
    const u = await startUpstream(name);
    ups.set(name, u);
    await consul.register({ id: `${name}-a`, name, port: u.port, tags: [`urlprefix-/${name}`] });
  }
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--consul-max-conns', String(MAX_CONNS)] });
  void gw.exited.then((code) => {
    if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}):\n${gw.logs.slice(-30).join('\n')}\n`);
  });
  // Sample the connection count in the background for the whole file, not only at assertions.
  sampler = setInterval(() => void watches().catch(() => undefined), 50);
});

after(async () => {
  stopping = true;
  clearInterval(sampler);
  await gw?.kill();
  await client.close();
  await Promise.all([...ups.values()].map((u) => u.close()));
  await consul?.destroy();
});

describe('more routed services than the per-service watch budget', () => {
  test('cgw status --json shows healthMode bulk with a budget of 4 watches', async () => {
    const s = await status();
    assert.equal(s.consul.healthMode, 'bulk');
    assert.equal(s.consul.healthWatchBudget, MAX_CONNS - 8);
    assert.equal(s.consul.routedServices, 10);
    const w = await watches();
    assert.equal(w.watches.filter((x) => x.name.startsWith('health:')).length, 0, 'no per-service health watches in bulk mode');
  });

  test('every service routes to its instance', async () => {
    for (const name of SERVICES) {
      const r = await get(`/${name}/x`);
      assert.deepEqual(r, { status: 200, upstream: name });
    }
  });

  test('a check flip on one service is reflected within one second, both ways', async () => {
    const down = await propagation(() => consul.setCheck('svc3-a', 'critical'), '/svc3', (r) => r.status === 503, 'svc3 → 503');
    if (process.env.CGW_TEST_TIMINGS) console.log(`critical: ${down} ms`);
    assert.ok(down < 1000, `critical took ${down} ms`);
    assert.deepEqual(await get('/svc4'), { status: 200, upstream: 'svc4' }, 'other services unaffected');
    const up = await propagation(() => consul.setCheck('svc3-a', 'passing'), '/svc3', (r) => r.status === 200, 'svc3 → 200');
    if (process.env.CGW_TEST_TIMINGS) console.log(`passing: ${up} ms`);
    assert.ok(up < 1000, `passing took ${up} ms`);
  });

  test('a new instance of one service is picked up', async () => {
    const u = await startUpstream('svc5-b');
    ups.set('svc5-b', u);
    await consul.register({ id: 'svc5-b', name: 'svc5', port: u.port, tags: ['urlprefix-/svc5'] });
    // Two instances in round robin: one of any two requests lands on the new one.
    await waitFor(async () => [(await get('/svc5')).upstream, (await get('/svc5')).upstream].includes('svc5-b'), {
      timeoutMs: 15_000,
      message: 'svc5-b receives traffic',
    });
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add((await get('/svc5')).upstream);
    assert.deepEqual([...seen].sort(), ['svc5', 'svc5-b']);
  });

  test('Consul connections stay within --consul-max-conns', async () => {
    await watches();
    assert.ok(connectionSamples.length >= 5, `only ${connectionSamples.length} samples`);
    const max = Math.max(...connectionSamples);
    if (process.env.CGW_TEST_TIMINGS) console.log(`openConnections max ${max} over ${connectionSamples.length} samples`);
    assert.ok(max <= MAX_CONNS, `openConnections reached ${max} (budget ${MAX_CONNS})`);
    assert.ok(max >= 2, `openConnections never above ${max}: is the gauge wired?`);
  });
});

describe('back under the budget', () => {
  test('deregistering services until 3 remain switches back to per-service watches', async () => {
    for (const name of SERVICES.slice(3)) {
      await consul.deregister(`${name}-a`);
      if (name === 'svc5') await consul.deregister('svc5-b');
    }
    const s = await waitFor(
      async () => {
        const st = await status();
        return st.consul.healthMode === 'per-service' && st.consul.routedServices === 3 ? st : undefined;
      },
      // Each probe runs the CLI (a process start-up), so allow for slow starts.
      { timeoutMs: 30_000, intervalMs: 200, message: 'per-service mode with 3 routed services' },
    );
    assert.equal(s.consul.healthMode, 'per-service');
    const w = await watches();
    assert.deepEqual(w.watches.filter((x) => x.name.startsWith('health:')).map((x) => x.name).sort(), ['health:svc0', 'health:svc1', 'health:svc2']);
    assert.equal(w.watches.some((x) => x.name === 'health-state'), false, 'the bulk watch should be gone');

    for (const name of SERVICES.slice(0, 3)) assert.deepEqual(await get(`/${name}`), { status: 200, upstream: name });
    for (const name of SERVICES.slice(3)) assert.equal((await get(`/${name}`)).status, 404, `/${name} after deregistration`);
  });

  test('per-service watches reflect a flip within one second', async () => {
    const down = await propagation(() => consul.setCheck('svc1-a', 'critical'), '/svc1', (r) => r.status === 503, 'svc1 → 503');
    if (process.env.CGW_TEST_TIMINGS) console.log(`critical: ${down} ms`);
    assert.ok(down < 1000, `critical took ${down} ms`);
    const up = await propagation(() => consul.setCheck('svc1-a', 'passing'), '/svc1', (r) => r.status === 200, 'svc1 → 200');
    if (process.env.CGW_TEST_TIMINGS) console.log(`passing: ${up} ms`);
    assert.ok(up < 1000, `passing took ${up} ms`);
    assert.ok(Math.max(...connectionSamples) <= MAX_CONNS, `openConnections reached ${Math.max(...connectionSamples)}`);
  });
});
