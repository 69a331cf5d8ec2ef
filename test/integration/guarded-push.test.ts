/**
 * `cgw policy push --guard`: a push that breaks a route is written back by the gateways
 * themselves (the previous document restored, a new one deleted), with the reason and figures in
 * the guard; a push that holds is marked passed; a hostile guard written by another tool is
 * refused and shown, and never makes a gateway write outside its own documents.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Agent, request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
let web: Upstream;
let dir: string;
const client = new Agent({ connections: 4 });

interface StoredGuard {
  guard: { id: string; state: string; decision?: { reason: string; reverted: string[]; figures?: Record<string, number | null> } } | null;
}

function policyDir(name: string, doc: unknown): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'web.json'), JSON.stringify(doc));
  return d;
}

function traffic(): { stop: () => Promise<void> } {
  let running = true;
  const loop = async (): Promise<void> => {
    for (let i = 0; running && i < 100_000; i++) {
      try {
        await (await request(`${gw.url}/web`, { dispatcher: client, headersTimeout: 10_000 })).body.dump();
      } catch {
        // counted by the gateway all the same
      }
    }
  };
  const lanes = [loop(), loop()];
  return {
    stop: async () => {
      running = false;
      await Promise.all(lanes);
    },
  };
}

async function guards(): Promise<StoredGuard[]> {
  const r = await runCli(['guards', '--json', '--consul', consul.addr]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as StoredGuard[];
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cgw-guard-'));
  consul = await startConsul();
  web = await startUpstream('web', { delayMs: 30 });
  await consul.register({ id: 'web-1', name: 'web', port: web.port, tags: ['urlprefix-/web'] });
  gw = await startGateway({ consul: consul.addr });
});

after(async () => {
  await gw?.kill();
  await client.close();
  await web?.close();
  await consul?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('a push that holds is marked passed; one that breaks the route is written back', async () => {
  const load = traffic();
  try {
    const good = policyDir('good', { appliesTo: { service: 'web' }, timeouts: { request: '5s' } });
    // Traffic before the change is the baseline the guard compares with.
    await waitFor(async () => (web.hits > 50 ? true : undefined), { timeoutMs: 20_000, message: 'traffic flows' });
    const pushed = await runCli(['policy', 'push', good, '--guard', '4s', '--min-requests', '10', '--consul', consul.addr]);
    assert.equal(pushed.code, 0, pushed.stderr);
    assert.match(pushed.stdout, /guarded by gateway\/guards\/push-\S+ for 4s/);
    const passed = await waitFor(async () => (await guards()).find((g) => g.guard?.state === 'passed'), { timeoutMs: 60_000, message: 'the good push passes' });
    assert.match(passed.guard?.decision?.reason ?? '', /held for 4s/);
    const goodValue = (await consul.kvGet('gateway/policies/web'))?.value;

    const bad = policyDir('bad', { appliesTo: { service: 'web' }, timeouts: { request: '10ms' } });
    const broke = await runCli(['policy', 'push', bad, '--guard', '1m', '--min-requests', '10', '--consul', consul.addr]);
    assert.equal(broke.code, 0, broke.stderr);
    const reverted = await waitFor(async () => (await guards()).find((g) => g.guard?.state === 'reverted'), { timeoutMs: 60_000, message: 'the breaking push is reverted' });
    assert.match(reverted.guard?.decision?.reason ?? '', /^error-rate: /);
    assert.deepEqual(reverted.guard?.decision?.reverted, ['gateway/policies/web']);
    assert.equal((await consul.kvGet('gateway/policies/web'))?.value, goodValue, 'the previous document is back');
  } finally {
    await load.stop();
  }
  // The restored policy is in force: the slow upstream answers again.
  await waitFor(async () => ((await fetch(`${gw.url}/web`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'the route serves again' });
  const list = await runCli(['guards', '--consul', consul.addr]);
  assert.match(list.stdout, /reverted/);
  assert.match(list.stdout, /passed/);
});

test('a hostile guard from another tool is refused and shown; nothing outside the documents is written', async () => {
  await consul.kvPut('elsewhere/secret', 'keep');
  const hostile = {
    id: 'evil',
    createdAt: new Date().toISOString(),
    windowMs: 1000,
    criteria: { maxErrorRateIncrease: 0, maxP95Increase: { kind: 'ms', value: 0 }, p95SlackMs: 0, minRequests: 1 },
    changes: [{ key: 'elsewhere/secret', previous: 'pwned', written: null }],
    state: 'watching',
  };
  await consul.kvPut('gateway/guards/evil', JSON.stringify(hostile));
  await consul.kvPut('gateway/guards/__proto__', '{"__proto__":{"state":"watching"}}');
  await consul.kvPut('gateway/guards/deep', '['.repeat(10_000));
  await waitFor(async () => {
    const status = JSON.stringify(await (await fetch(`${gw.adminUrl}/v1/status`)).json());
    return status.includes('gateway/guards/evil') && status.includes('not a policy, route or canary key') && status.includes('gateway/guards/deep') ? true : undefined;
  }, { timeoutMs: 30_000, message: 'the refused guards are shown' });
  assert.equal((await consul.kvGet('elsewhere/secret'))?.value, 'keep');
  assert.equal((await fetch(`${gw.url}/web`)).status, 200);
  // The gateway still applies Consul changes.
  await consul.register({ id: 'late-1', name: 'late', port: web.port, tags: ['urlprefix-/late'] });
  await waitFor(async () => ((await fetch(`${gw.url}/late`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'a new service is routed' });
});
