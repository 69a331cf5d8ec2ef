/**
 * `cgw start --workers 2`: one primary watches Consul and serves the admin API, two workers proxy.
 * Consul changes reach every worker, a killed worker is replaced while the other serves, metrics
 * add up over the processes, and SIGTERM drains every worker.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
let a: Upstream;
let b: Upstream;

interface StatusBody {
  ready: boolean;
  snapshot: { version: string } | null;
  consul: { watches: number; openConnections: number };
  workers: { id: number; pid: number; version: string | null; current: boolean; restarts: number }[] | null;
}

const status = async (): Promise<StatusBody> => (await (await fetch(`${gw.adminUrl}/v1/status`)).json()) as StatusBody;

/** One request on a fresh connection (so successive requests spread over the workers). */
function get(path: string): Promise<{ status: number; upstream: string | undefined }> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, gw.url);
    const req = request({ host: url.hostname, port: url.port, path: url.pathname, agent: false, timeout: 20_000 }, (res) => {
      res.resume();
      res.once('end', () => resolve({ status: res.statusCode ?? 0, upstream: res.headers['x-upstream'] as string | undefined }));
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', reject);
    req.end();
  });
}

async function metric(line: RegExp): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const hit = text.split('\n').find((l) => line.test(l));
  return hit === undefined ? 0 : Number(hit.slice(hit.lastIndexOf(' ') + 1));
}

before(async () => {
  consul = await startConsul();
  a = await startUpstream('a');
  b = await startUpstream('b');
  await consul.register({ id: 'web-a', name: 'web', port: a.port, tags: ['urlprefix-/web'] });
  await consul.register({ id: 'web-b', name: 'web', port: b.port, tags: ['urlprefix-/web'] });
  gw = await startGateway({ consul: consul.addr, args: ['--workers', '2'], readyTimeoutMs: 30_000 });
});

after(async () => {
  await gw?.kill('SIGKILL');
  await a?.close();
  await b?.close();
  await consul?.destroy();
});

test('two workers run the snapshot in force; Consul is watched once, not once per worker', async () => {
  const s = await status();
  assert.equal(s.ready, true);
  assert.equal(s.workers?.length, 2);
  for (const w of s.workers ?? []) {
    assert.equal(w.version, s.snapshot?.version);
    assert.equal(w.current, true);
  }
  // catalog, KV, fabio's route key and one health watch: the same as a single process.
  assert.equal(s.consul.watches, 4);
  assert.ok(s.consul.openConnections <= 5, `${s.consul.openConnections} connections to Consul`);
  const cli = await runCli(['status', '--admin', gw.adminUrl]);
  assert.equal(cli.code, 0, cli.stderr);
  assert.match(cli.stdout, /^workers: +2 \(2 on the snapshot in force/m);
});

test('a Consul change reaches every worker: no request goes to a deregistered instance', async () => {
  await consul.deregister('web-b');
  await waitFor(async () => {
    const s = await status();
    return s.workers?.every((w) => w.current && w.version === s.snapshot?.version) && s.snapshot !== null;
  }, { timeoutMs: 15_000 });
  await waitFor(async () => (await get('/web')).upstream === 'a', { timeoutMs: 15_000 });
  const seen = await Promise.all(Array.from({ length: 20 }, () => get('/web')));
  assert.deepEqual([...new Set(seen.map((r) => `${r.status} ${r.upstream ?? ''}`))], ['200 a']);
  await consul.register({ id: 'web-b', name: 'web', port: b.port, tags: ['urlprefix-/web'] });
  await waitFor(async () => (await Promise.all(Array.from({ length: 8 }, () => get('/web')))).some((r) => r.upstream === 'b'), { timeoutMs: 15_000 });
});

test('metrics add up over the workers; gauges from the snapshot are not multiplied', async () => {
  const before = await metric(/^cgw_requests_total\{route="\/web",service="web",code="200"\}/);
  await Promise.all(Array.from({ length: 20 }, () => get('/web')));
  await waitFor(async () => (await metric(/^cgw_requests_total\{route="\/web",service="web",code="200"\}/)) === before + 20, { timeoutMs: 15_000 });
  assert.equal(await metric(/^cgw_service_endpoints_healthy\{service="web"\}/), 2);
  assert.equal(await metric(/^cgw_workers /), 2);
});

test('a killed worker is replaced at once; requests keep being served meanwhile', async () => {
  const s = await status();
  const victim = s.workers?.[0];
  assert.ok(victim);
  let failures = 0;
  let served = 0;
  let stop = false;
  const load = Promise.all(
    Array.from({ length: 4 }, async () => {
      while (!stop) {
        const r = await get('/web').catch(() => ({ status: 0, upstream: undefined }));
        if (r.status === 200) served += 1;
        else failures += 1;
      }
    }),
  );
  await waitFor(() => served > 20, { timeoutMs: 15_000 });
  process.kill(victim.pid, 'SIGKILL');
  const replaced = await waitFor(async () => {
    const now = await status();
    const w = now.workers?.find((x) => x.id === victim.id);
    return w && w.pid !== victim.pid && w.current && now.ready ? w : undefined;
  }, { timeoutMs: 20_000, message: 'worker 0 replaced and running the snapshot' });
  const servedAtReplacement = served;
  await waitFor(() => served > servedAtReplacement + 40, { timeoutMs: 15_000 });
  stop = true;
  await load;
  assert.equal(replaced.restarts, 1);
  // Only requests the killed worker had in hand can fail (4 clients: at most 4).
  assert.ok(failures <= 4, `${failures} failed requests`);
  assert.ok((await metric(/^cgw_worker_restarts_total /)) >= 1);
});

test('SIGTERM drains every worker: requests in flight complete, then the gateway exits 0', async () => {
  a.set({ delayMs: 1_500 });
  b.set({ delayMs: 1_500 });
  const base = a.hits + b.hits;
  const inflight = Promise.all(Array.from({ length: 6 }, () => get('/web')));
  await waitFor(() => a.hits + b.hits >= base + 6, { timeoutMs: 15_000 });
  const code = gw.kill('SIGTERM', 30_000);
  const results = await inflight;
  assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200, 200, 200]);
  assert.equal(await code, 0);
});
