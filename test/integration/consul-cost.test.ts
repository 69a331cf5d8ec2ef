/**
 * "Cheaper on Consul": a change to one service costs requests on that service's watch only, and
 * a wake-up without a content change (an idempotent KV write) rebuilds nothing.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

interface WatchesView {
  watches: { name: string; requests: number; index: number }[];
}

let consul: ConsulAgent;
let gateway: GatewayProcess;
const upstreams: Upstream[] = [];

async function json<T>(url: string): Promise<T> {
  const res = await fetch(url);
  assert.equal(res.status, 200, url);
  return (await res.json()) as T;
}

async function watchRequests(): Promise<Map<string, number>> {
  const view = await json<WatchesView>(`${gateway.adminUrl}/v1/watches`);
  return new Map(view.watches.map((w) => [w.name, w.requests]));
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${gateway.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return Number(line?.split(' ')[1] ?? NaN);
}

before(async () => {
  consul = await startConsul();
  for (const name of ['alpha', 'beta', 'gamma']) {
    const up = await startUpstream(name);
    upstreams.push(up);
    await consul.register({ id: `${name}-1`, name, port: up.port, tags: [`urlprefix-/${name}`] });
  }
  gateway = await startGateway({ consul: consul.addr, args: ['--wait', '60s'] });
  // The gateway records its first configuration version under the runtime prefix once it is
  // ready; with nothing under the gateway's own KV prefix Consul wakes that watch for any KV write
  // nearby, so the measurements start after that write.
  await waitFor(async () => ((await (await fetch(`${gateway.adminUrl}/metrics`)).text()).includes('cgw_history_writes_total{outcome="written"} 1') ? true : undefined), {
    timeoutMs: 20_000,
    message: 'the first history entry is written',
  });
});

after(async () => {
  await gateway?.kill();
  await consul?.destroy();
  await Promise.all(upstreams.map((u) => u.close()));
});

test('health changes of one service wake only that service\'s watch', async () => {
  const before = await watchRequests();
  for (let i = 0; i < 3; i++) {
    await consul.setCheck('alpha-1', 'critical');
    await waitFor(async () => (await fetch(`${gateway.url}/alpha`)).status === 503, { message: 'alpha drained' });
    await consul.setCheck('alpha-1', 'passing');
    await waitFor(async () => (await fetch(`${gateway.url}/alpha`)).status === 200, { message: 'alpha back' });
  }
  const afterFlips = await watchRequests();
  assert.ok((afterFlips.get('health:alpha') ?? 0) - (before.get('health:alpha') ?? 0) >= 2, 'alpha watch saw the changes');
  for (const other of ['health:beta', 'health:gamma', 'catalog', 'kv']) {
    assert.equal(afterFlips.get(other), before.get(other), `${other} made no request for alpha's changes`);
  }
});

test('a wake-up without a content change does not rebuild the snapshot', async () => {
  const requestsBefore = (await watchRequests()).get('health:beta') ?? 0;
  const published = await metric('cgw_snapshots_published_total');
  // New service metadata wakes the blocking query (the service changed in the catalog) but
  // changes nothing the gateway routes on.
  const beta = upstreams.find((u) => u.name === 'beta');
  assert.ok(beta);
  await consul.register({ id: 'beta-1', name: 'beta', port: beta.port, tags: ['urlprefix-/beta'], meta: { build: String(Date.now()) } });
  await waitFor(async () => ((await watchRequests()).get('health:beta') ?? 0) > requestsBefore, { message: 'beta watch woke up' });
  assert.equal(await metric('cgw_snapshots_published_total'), published);
  assert.equal((await fetch(`${gateway.url}/beta`)).status, 200);
});

test('watches report Consul\'s leader state, and cgw status sums it up', async () => {
  const view = await json<{ watches: { name: string; knownLeader: boolean | null; lastContactMs: number | null }[] }>(`${gateway.adminUrl}/v1/watches`);
  assert.ok(view.watches.length >= 5);
  for (const w of view.watches) assert.equal(w.knownLeader, true, `${w.name} saw a leader`);
  const status = await json<{ consul: { leaderKnown: boolean; maxLastContactMs: number } }>(`${gateway.adminUrl}/v1/status`);
  assert.equal(status.consul.leaderKnown, true);
  assert.equal(status.consul.maxLastContactMs, 0, 'the leader answers itself');
});

test('--consistency stale and --dc are honoured: the named datacenter routes, an unknown one fails loudly', async () => {
  const stale = await startGateway({ consul: consul.addr, args: ['--consistency', 'stale', '--dc', 'dc1'] });
  try {
    assert.equal((await fetch(`${stale.url}/gamma`)).status, 200);
  } finally {
    await stale.kill();
  }
  const lost = await startGateway({ consul: consul.addr, args: ['--dc', 'nosuch-dc'], waitReady: false });
  try {
    const status = await waitFor(
      async () => {
        const s = await json<{ ready: boolean; consul: { watchesFailing: { name: string; error: string }[] } }>(`${lost.adminUrl}/v1/status`);
        return s.consul.watchesFailing.length > 0 ? s : undefined;
      },
      // The gateway was just spawned (waitReady: false): its admin API comes up with it.
      { timeoutMs: 30_000, message: 'watches against an unknown datacenter fail' },
    );
    assert.equal(status.ready, false);
    assert.match(status.consul.watchesFailing[0]?.error ?? '', /datacenter|500/i);
  } finally {
    await lost.kill();
  }
});
