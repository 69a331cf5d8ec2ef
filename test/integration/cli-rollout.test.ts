/**
 * `cgw rollout` and `cgw rollouts` as an operator runs them against a real Consul agent: the
 * weights and the document land in KV, a gateway routes by the first step's weights, status shows
 * the step and the history, abort goes back to stable, bad input changes nothing.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
let v1: Upstream;
let v2: Upstream;

const kv = (): string[] => ['--consul', consul.addr];

before(async () => {
  consul = await startConsul();
  [v1, v2] = await Promise.all([startUpstream('v1'), startUpstream('v2')]);
  await consul.register({ id: 'web-1', name: 'web', port: v1.port, tags: ['urlprefix-/web', 'v1'] });
  await consul.register({ id: 'web-2', name: 'web', port: v2.port, tags: ['urlprefix-/web', 'v2'] });
  gw = await startGateway({ consul: consul.addr });
});

after(async () => {
  await gw?.kill();
  await v1?.close();
  await v2?.close();
  await consul?.stop();
});

/** Which version answered `n` requests through the gateway. */
async function shares(n: number): Promise<Record<string, number>> {
  const seen: Record<string, number> = { v1: 0, v2: 0 };
  const before = { v1: v1.requests.length, v2: v2.requests.length };
  for (let i = 0; i < n; i++) await (await fetch(`${gw.url}/web`)).arrayBuffer();
  seen.v1 = v1.requests.length - before.v1;
  seen.v2 = v2.requests.length - before.v2;
  return seen;
}

test('start writes the first step: the gateway sends the canary its share', async () => {
  const r = await runCli(['rollout', 'start', 'web', '--canary', 'v2', '--stable', 'v1', '--steps', '20,100', '--soak', '30s', ...kv()]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /started the rollout of web: v2 at 20% \(steps 20, 100, soak 30s\)/);
  const doc = JSON.parse((await consul.kvGet('gateway/rollouts/web'))?.value ?? '{}') as { state?: string; steps?: number[] };
  assert.deepEqual([doc.state, doc.steps], ['progressing', [20, 100]]);
  await waitFor(async () => {
    const s = await shares(50);
    return s.v2 === 10 && s.v1 === 40 ? true : undefined;
  }, { timeoutMs: 20_000, message: 'v2 gets 20 % of requests' });
});

test('status shows the step, the soak left and the history; rollouts lists it', async () => {
  const st = await runCli(['rollout', 'status', 'web', ...kv()]);
  assert.equal(st.code, 0, st.stderr);
  assert.match(st.stdout, /^web: progressing, step 1 of 2 \(v2 20%, v1 80%\), \d+ s left in the soak$/m);
  assert.match(st.stdout, /started\s+1\s+20/);
  const list = await runCli(['rollouts', ...kv()]);
  assert.match(list.stdout, /web\s+progressing\s+1\/2\s+v2 20%\s+v1/);
  const json = JSON.parse((await runCli(['rollout', 'status', 'web', '--json', ...kv()])).stdout) as { rollout: { canary: string } };
  assert.equal(json.rollout.canary, 'v2');
  // The same step in the gateway's metrics, for dashboards.
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(text, /^cgw_rollout_step\{service="web",state="progressing"\} 0$/m);
  assert.match(text, /^cgw_rollout_canary_weight_percent\{service="web"\} 20$/m);
  assert.match(text, /^cgw_canary_weight_percent\{service="web",subset="v2"\} 20$/m);
});

test('a second start is refused while one is in progress; bad flags change nothing', async () => {
  const before = await consul.kvGet('gateway/rollouts/web');
  const again = await runCli(['rollout', 'start', 'web', '--canary', 'v2', '--stable', 'v1', ...kv()]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /is progressing.*must end/);
  for (const args of [['--steps', '5,50'], ['--soak', 'soon'], ['--canary', 'v3'], ['--max-p95-increase', 'fast']]) {
    const r = await runCli(['rollout', 'start', 'api', '--canary', 'v2', '--stable', 'v1', ...args, ...kv()]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
  }
  assert.equal((await consul.kvGet('gateway/rollouts/web'))?.modifyIndex, before?.modifyIndex);
  assert.equal(await consul.kvGet('gateway/rollouts/api'), null);
});

test('abort goes back to stable: the gateway sends nothing to the canary', async () => {
  const r = await runCli(['rollout', 'abort', 'web', ...kv()]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /web: aborted; weights v2=0 v1=100/);
  await waitFor(async () => ((await shares(20)).v2 === 0 ? true : undefined), { timeoutMs: 20_000, message: 'no request to v2 after the abort' });
  const st = await runCli(['rollout', 'status', 'web', ...kv()]);
  assert.match(st.stdout, /aborted by hand: back to stable/);
  const late = await runCli(['rollout', 'promote', 'web', ...kv()]);
  assert.equal(late.code, 1);
  assert.match(late.stderr, /has ended \(aborted\)/);
});
