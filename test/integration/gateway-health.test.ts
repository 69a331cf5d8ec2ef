/**
 * Health filtering through the real gateway: every Consul health change (register, deregister,
 * TTL fail / warn, service and node maintenance) must change routing within one second of the
 * Consul write; warning instances only with --allow-warning (at Weights.Warning); 503 when nothing
 * is healthy; scale up and down under traffic without a failed request; a dead port is retried.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { startConsul, type CheckStatus, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePort } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import { propagationMs } from '../helpers/wait.ts';

/** The bound: a Consul change is reflected in routing within one second. */
const PROPAGATION_BOUND_MS = 1000;

let consul: ConsulAgent;
let gw: GatewayProcess;
/** A second gateway on the same Consul, started with --allow-warning. */
let gwWarn: GatewayProcess;
let stopping = false;
const ups = new Map<string, Upstream>();
/** Fresh connections per request would measure TCP setup; one keep-alive agent is what clients use. */
const client = new Agent({ keepAliveTimeout: 10_000, connections: 4 });

function reportCrash(g: GatewayProcess, label: string): void {
  void g.exited.then((code) => {
    if (!stopping) process.stderr.write(`\n${label} exited unexpectedly (code ${code}); last log lines:\n${g.logs.slice(-30).join('\n')}\n`);
  });
}

async function upstream(name: string): Promise<Upstream> {
  const u = await startUpstream(name);
  ups.set(name, u);
  return u;
}

interface Reply {
  status: number;
  upstream: string | undefined;
  body: string;
}

async function get(base: string, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  const r = await request(`${base}${path}`, { dispatcher: client, headers, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const body = await r.body.text();
  const up = r.headers['x-upstream'];
  return { status: r.statusCode, upstream: typeof up === 'string' ? up : undefined, body };
}

/** Who answered `n` sequential requests (status-prefixed for non-200 answers). */
async function sample(base: string, path: string, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await get(base, path);
    out.push(r.status === 200 ? String(r.upstream) : `${r.status}`);
  }
  return out;
}

function count(xs: readonly string[], x: string): number {
  return xs.filter((y) => y === x).length;
}

/** Polls the proxy until `converged(sample)` holds; returns ms from the end of `write`. */
function propagation(write: () => Promise<void>, path: string, converged: (who: string[]) => boolean, what: string, base = gw.url): Promise<number> {
  return propagationMs(write, async () => converged(await sample(base, path, 6)), what);
}

const excludes = (id: string) => (who: string[]) => who.every((w) => w !== id && /^[a-z]/.test(w));
const includes = (id: string) => (who: string[]) => who.includes(id) && who.every((w) => /^[a-z]/.test(w));

function assertFast(ms: number, what: string): void {
  if (process.env.CGW_TEST_TIMINGS) console.log(`${what}: ${ms} ms`);
  assert.ok(ms < PROPAGATION_BOUND_MS, `${what} took ${ms} ms to reach routing (bound ${PROPAGATION_BOUND_MS} ms)`);
}

async function metric(g: GatewayProcess, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

before(async () => {
  consul = await startConsul();
  await consul.register({ id: 'web-1', name: 'web', port: (await upstream('web-1')).port, tags: ['urlprefix-/web'] });
  await consul.register({ id: 'web-2', name: 'web', port: (await upstream('web-2')).port, tags: ['urlprefix-/web'] });
  await consul.register({ id: 'warm-1', name: 'warm', port: (await upstream('warm-1')).port, tags: ['urlprefix-/warm'], weights: { passing: 1, warning: 1 } });
  await consul.register({ id: 'warm-2', name: 'warm', port: (await upstream('warm-2')).port, tags: ['urlprefix-/warm'], weights: { passing: 4, warning: 2 } });
  await consul.register({ id: 'scale-1', name: 'scale', port: (await upstream('scale-1')).port, tags: ['urlprefix-/scale'] });
  await consul.register({ id: 'scale-2', name: 'scale', port: (await upstream('scale-2')).port, tags: ['urlprefix-/scale'] });
  await consul.register({ id: 'retry-good', name: 'retry', port: (await upstream('retry-good')).port, tags: ['urlprefix-/retry'] });
  // Registered as passing, but nothing listens on its port.
  await consul.register({ id: 'retry-dead', name: 'retry', port: await freePort(), tags: ['urlprefix-/retry'] });
  [gw, gwWarn] = await Promise.all([
    startGateway({ consul: consul.addr, args: ['--wait', '5s'] }),
    startGateway({ consul: consul.addr, args: ['--wait', '5s', '--allow-warning'] }),
  ]);
  reportCrash(gw, 'gateway');
  reportCrash(gwWarn, 'gateway --allow-warning');
});

after(async () => {
  stopping = true;
  await Promise.all([gw?.kill(), gwWarn?.kill()]);
  await client.close();
  await Promise.all([...ups.values()].map((u) => u.close()));
  await consul?.destroy();
});

describe('health changes reach routing within one second', () => {
  test('both web instances are in rotation to begin with', async () => {
    const who = await sample(gw.url, '/web', 10);
    assert.equal(count(who, 'web-1'), 5, who.join());
    assert.equal(count(who, 'web-2'), 5, who.join());
  });

  test('register a new instance → it receives traffic', async () => {
    const port = (await upstream('web-3')).port;
    const ms = await propagation(() => consul.register({ id: 'web-3', name: 'web', port, tags: ['urlprefix-/web'] }), '/web', includes('web-3'), 'web-3 routed');
    assertFast(ms, 'registration');
  });

  test('deregister it → it receives no more traffic', async () => {
    const ms = await propagation(() => consul.deregister('web-3'), '/web', excludes('web-3'), 'web-3 no longer routed');
    assertFast(ms, 'deregistration');
    const hits = ups.get('web-3')?.hits ?? 0;
    const who = await sample(gw.url, '/web', 10);
    assert.equal(ups.get('web-3')?.hits, hits, 'web-3 still got requests after it was deregistered');
    assert.deepEqual([...new Set(who)].sort(), ['web-1', 'web-2']);
  });

  for (const [status, label] of [['critical', 'TTL check fails'], ['warning', 'TTL check warns']] as Array<[CheckStatus, string]>) {
    test(`${label} → out of rotation; passes again → back in`, async () => {
      assertFast(await propagation(() => consul.setCheck('web-2', status), '/web', excludes('web-2'), `web-2 ${status} not routed`), `check ${status}`);
      assert.deepEqual([...new Set(await sample(gw.url, '/web', 6))], ['web-1']);
      assertFast(await propagation(() => consul.setCheck('web-2', 'passing'), '/web', includes('web-2'), 'web-2 passing routed'), 'check passing');
    });
  }

  test('service maintenance → out of rotation; maintenance off → back in', async () => {
    assertFast(await propagation(() => consul.serviceMaintenance('web-1', true), '/web', excludes('web-1'), 'web-1 in maintenance not routed'), 'service maintenance on');
    assertFast(await propagation(() => consul.serviceMaintenance('web-1', false), '/web', includes('web-1'), 'web-1 routed again'), 'service maintenance off');
  });

  test('node maintenance → no healthy instance: 503 no_healthy_upstream; off → routing resumes', async () => {
    const all503 = (who: string[]) => who.every((w) => w === '503');
    assertFast(await propagation(() => consul.nodeMaintenance(true), '/web', all503, 'every request 503'), 'node maintenance on');
    const r = await get(gw.url, '/web/x', { 'x-request-id': 'health-503' });
    assert.equal(r.status, 503);
    const body = JSON.parse(r.body) as { error: { code: string; message: string; requestId: string } };
    assert.equal(body.error.code, 'no_healthy_upstream');
    assert.equal(body.error.requestId, 'health-503');
    assert.ok(body.error.message.length > 0);
    assertFast(
      await propagation(() => consul.nodeMaintenance(false), '/web', (who) => who.includes('web-1') && who.includes('web-2'), 'both routed again'),
      'node maintenance off',
    );
  });

  test('every instance critical → 503 no_healthy_upstream', async () => {
    await consul.setCheck('web-1', 'critical');
    const all503 = (who: string[]) => who.every((w) => w === '503');
    assertFast(await propagation(() => consul.setCheck('web-2', 'critical'), '/web', all503, 'every request 503'), 'last instance critical');
    const body = JSON.parse((await get(gw.url, '/web')).body) as { error: { code: string } };
    assert.equal(body.error.code, 'no_healthy_upstream');
    await consul.setCheck('web-1', 'passing');
    await consul.setCheck('web-2', 'passing');
    await waitFor(async () => new Set(await sample(gw.url, '/web', 4)).size === 2, { timeoutMs: 15_000, message: 'web back to two instances' });
  });
});

describe('cgw endpoints', () => {
  test('--json shows each instance with its status, weight and whether it receives traffic', async () => {
    await consul.setCheck('web-2', 'critical');
    await waitFor(async () => excludes('web-2')(await sample(gw.url, '/web', 4)), { timeoutMs: 15_000, message: 'web-2 out' });
    const r = await runCli(['endpoints', 'web', '--json', '--admin', gw.adminUrl]);
    assert.equal(r.code, 0, r.stderr);
    const rows = JSON.parse(r.stdout) as Array<{ id: string; status: string; weight: number; receivesTraffic: boolean; port: number }>;
    const byId = new Map(rows.map((e) => [e.id, e]));
    assert.deepEqual([...byId.keys()].sort(), ['web-1', 'web-2']);
    assert.equal(byId.get('web-1')?.status, 'passing');
    assert.equal(byId.get('web-1')?.receivesTraffic, true);
    assert.equal(byId.get('web-1')?.port, ups.get('web-1')?.port);
    assert.equal(byId.get('web-2')?.status, 'critical');
    assert.equal(byId.get('web-2')?.receivesTraffic, false);
    assert.equal(byId.get('web-2')?.weight, 0);
    await consul.setCheck('web-2', 'passing');
    await waitFor(async () => includes('web-2')(await sample(gw.url, '/web', 4)), { timeoutMs: 15_000, message: 'web-2 back' });
  });
});

describe('--allow-warning', () => {
  test('passing instances share traffic by Weights.Passing (4:1) on both gateways', async () => {
    for (const g of [gw, gwWarn]) {
      const who = await sample(g.url, '/warm', 50);
      assert.ok(Math.abs(count(who, 'warm-2') - 40) <= 3, `warm-2 got ${count(who, 'warm-2')}/50, expected about 40`);
    }
  });

  test('a warning instance gets Weights.Warning (2:1) with --allow-warning, and nothing without', async () => {
    const ms = await propagation(() => consul.setCheck('warm-2', 'warning'), '/warm', excludes('warm-2'), 'default gateway drops warm-2');
    assertFast(ms, 'warning on the default gateway');
    // The --allow-warning gateway moves from 4:1 to 2:1.
    await waitFor(
      async () => {
        const who = await sample(gwWarn.url, '/warm', 30);
        return Math.abs(count(who, 'warm-2') - 20) <= 2 ? who : undefined;
      },
      { timeoutMs: 15_000, message: 'allow-warning gateway at Weights.Warning' },
    );
    const who = await sample(gwWarn.url, '/warm', 60);
    assert.ok(Math.abs(count(who, 'warm-2') - 40) <= 3, `warm-2 (warning) got ${count(who, 'warm-2')}/60 with --allow-warning, expected about 40`);
    assert.equal(count(await sample(gw.url, '/warm', 20), 'warm-2'), 0);

    const r = await runCli(['endpoints', 'warm', '--json', '--admin', gwWarn.adminUrl]);
    assert.equal(r.code, 0, r.stderr);
    const e = (JSON.parse(r.stdout) as Array<{ id: string; status: string; weight: number; receivesTraffic: boolean }>).find((x) => x.id === 'warm-2');
    assert.deepEqual({ status: e?.status, weight: e?.weight, receivesTraffic: e?.receivesTraffic }, { status: 'warning', weight: 2, receivesTraffic: true });
  });

  test('critical instances stay out even with --allow-warning', async () => {
    await consul.setCheck('warm-2', 'critical');
    await waitFor(async () => excludes('warm-2')(await sample(gwWarn.url, '/warm', 10)), { timeoutMs: 15_000, message: 'warm-2 critical dropped' });
    await consul.setCheck('warm-2', 'passing');
  });
});

describe('scale up and down under continuous traffic', () => {
  test('no request fails while an instance is added and another removed', async () => {
    const failures: string[] = [];
    const served = new Map<string, number>();
    let total = 0;
    let stop = false;
    const deadline = Date.now() + 150_000;
    const loop = (async () => {
      // Bounded: stops when told, or after 150 s (beyond the waits below), whichever is first.
      while (!stop && Date.now() < deadline) {
        total++;
        try {
          const r = await get(gw.url, '/scale/item');
          if (r.status !== 200) failures.push(`#${total}: ${r.status} ${r.body.slice(0, 200)}`);
          else served.set(String(r.upstream), (served.get(String(r.upstream)) ?? 0) + 1);
        } catch (err) {
          failures.push(`#${total}: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    })();
    try {
      await waitFor(() => total >= 50, { timeoutMs: 20_000, message: 'traffic flowing' });

      // Scale up.
      const port = (await upstream('scale-3')).port;
      await consul.register({ id: 'scale-3', name: 'scale', port, tags: ['urlprefix-/scale'] });
      await waitFor(() => (served.get('scale-3') ?? 0) >= 20, { timeoutMs: 15_000, message: 'scale-3 receives traffic' });

      // Scale down: deregister first, close the process only once the gateway stopped using it.
      const old = ups.get('scale-1') as Upstream;
      await consul.deregister('scale-1');
      await waitFor(
        async () => {
          const rows = (await (await fetch(`${gw.adminUrl}/v1/services/scale/endpoints`)).json()) as Array<{ id: string }>;
          return !rows.some((r) => r.id === 'scale-1');
        },
        { timeoutMs: 15_000, message: 'scale-1 gone from the gateway' },
      );
      // Let any request picked before the swap finish, then check scale-1 no longer gets any.
      const at = total;
      await waitFor(() => total >= at + 5, { timeoutMs: 15_000 });
      const hits = old.hits;
      const at2 = total;
      await waitFor(() => total >= at2 + 20, { timeoutMs: 15_000 });
      assert.equal(old.hits, hits, 'scale-1 still received requests after the gateway dropped it');
      await old.close();

      const afterClose = total;
      await waitFor(() => total >= afterClose + 100, { timeoutMs: 20_000, message: 'traffic after closing scale-1' });
    } finally {
      stop = true;
      await loop;
    }
    assert.deepEqual(failures, [], `${failures.length} of ${total} requests failed`);
    assert.ok((served.get('scale-1') ?? 0) > 0 && (served.get('scale-2') ?? 0) > 0 && (served.get('scale-3') ?? 0) > 0, JSON.stringify([...served]));
    assert.ok(total >= 200, `only ${total} requests were sent`);
  });
});

describe('an endpoint whose port is closed', () => {
  test('GETs are retried on another endpoint and succeed; cgw_upstream_retries_total counts it', async () => {
    const before = await metric(gw, 'cgw_upstream_retries_total', 'service="retry"');
    const who = await sample(gw.url, '/retry/x', 10);
    assert.deepEqual(who, Array(10).fill('retry-good'), 'every GET answered by the live instance');
    const after = await metric(gw, 'cgw_upstream_retries_total', 'service="retry"');
    // Round robin over two endpoints picks the dead one every other request.
    assert.ok(after - before >= 3, `retries went from ${before} to ${after}`);
  });
});
