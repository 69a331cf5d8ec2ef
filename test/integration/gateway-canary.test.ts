/**
 * Canary weights from Consul KV through the real gateway and the real `cgw canary` CLI: the
 * distribution, X-Canary, an empty (all critical) subset, invalid values keeping the last good
 * weights, deleting the key, and the CLI's validation, check-and-set and exit codes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

const KEY = 'gateway/canary/web';

let consul: ConsulAgent;
let gw: GatewayProcess;
let stopping = false;
const ups: Upstream[] = [];
const client = new Agent({ keepAliveTimeout: 10_000, connections: 4 });

function reportCrash(g: GatewayProcess): void {
  void g.exited.then((code) => {
    if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}); last log lines:\n${g.logs.slice(-30).join('\n')}\n`);
  });
}

async function hit(headers: Record<string, string> = {}): Promise<string> {
  const r = await request(`${gw.url}/web`, { dispatcher: client, headers, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const body = await r.body.text();
  assert.equal(r.statusCode, 200, body);
  return String(r.headers['x-upstream']);
}

/** Share of `n` requests (in percent) answered by each upstream. */
async function shares(n: number, headers: Record<string, string> = {}): Promise<{ v1: number; v2: number }> {
  let v2 = 0;
  for (let i = 0; i < n; i++) if ((await hit(headers)) === 'web-v2') v2++;
  return { v1: ((n - v2) * 100) / n, v2: (v2 * 100) / n };
}

function near(actual: number, expected: number, tolerance: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual}% (expected ${expected}% ± ${tolerance})`);
}

interface CanaryView {
  service: string;
  modifyIndex: number;
  weights: Record<string, number>;
  subsets: Array<{ tag: string; configured: number; effective: number; endpoints: number }>;
  rejected: string[];
}

async function canaryView(): Promise<CanaryView | undefined> {
  const views = (await (await fetch(`${gw.adminUrl}/v1/canary`)).json()) as CanaryView[];
  return views.find((v) => v.service === 'web');
}

/** Waits until the gateway applies the key's current value (or, for null, until no weights are in force). */
async function applied(expected: Record<string, number> | null): Promise<void> {
  await waitFor(
    async () => {
      const v = await canaryView();
      if (expected === null) return v === undefined;
      return v !== undefined && JSON.stringify(v.weights) === JSON.stringify(expected);
    },
    { timeoutMs: 15_000, message: `gateway weights ${JSON.stringify(expected)}` },
  );
}

interface Problem {
  kind: string;
  subject: string;
  message: string;
  keptLastGood?: boolean;
}

async function status(): Promise<{ problems: Problem[] }> {
  const r = await runCli(['status', '--json', '--admin', gw.adminUrl]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { problems: Problem[] };
}

async function rejectedCount(): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('cgw_config_rejected_total{kind="canary"}'));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const cli = (...args: string[]) => runCli(['canary', ...args, '--consul', consul.addr]);

before(async () => {
  consul = await startConsul();
  for (const v of ['v1', 'v2']) {
    const u = await startUpstream(`web-${v}`);
    ups.push(u);
    await consul.register({ id: `web-${v}`, name: 'web', port: u.port, tags: ['urlprefix-/web', v] });
  }
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s'] });
  reportCrash(gw);
});

after(async () => {
  stopping = true;
  await gw?.kill();
  await client.close();
  await Promise.all(ups.map((u) => u.close()));
  await consul?.destroy();
});

describe('weights', () => {
  test('without weights, 1 + 1 instances share 50/50', async () => {
    near((await shares(100)).v2, 50, 5, 'v2 share');
  });

  test('cgw canary set web v1=80 v2=20 → v2 gets 20% ± 5 of 200 requests', async () => {
    const r = await cli('set', 'web', 'v1=80', 'v2=20');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /gateway\/canary\/web/);
    assert.deepEqual(JSON.parse((await consul.kvGet(KEY))?.value ?? 'null'), { weights: { v1: 80, v2: 20 } });
    await applied({ v1: 80, v2: 20 });
    near((await shares(200)).v2, 20, 5, 'v2 share');
  });

  test('X-Canary: v2 forces v2, X-Canary: v1 forces v1, an unknown tag is ignored', async () => {
    assert.equal((await shares(30, { 'x-canary': 'v2' })).v2, 100);
    assert.equal((await shares(30, { 'x-canary': 'v1' })).v1, 100);
    near((await shares(100, { 'x-canary': 'nosuch' })).v2, 20, 5, 'v2 share with an unknown X-Canary');
  });

  test('weights written directly with a KV PUT work too', async () => {
    await consul.kvPut(KEY, JSON.stringify({ weights: { v1: 10, v2: 90 } }));
    await applied({ v1: 10, v2: 90 });
    near((await shares(200)).v2, 90, 5, 'v2 share');
  });

  test('a subset whose instances are all critical gets no traffic, and comes back when healthy', async () => {
    await consul.kvPut(KEY, JSON.stringify({ weights: { v1: 50, v2: 50 } }));
    await applied({ v1: 50, v2: 50 });
    await consul.setCheck('web-v2', 'critical');
    await waitFor(async () => (await shares(10)).v1 === 100, { timeoutMs: 15_000, message: 'all traffic on v1' });
    assert.equal((await shares(100)).v1, 100, 'traffic went into the empty v2 subset');
    assert.equal((await shares(20, { 'x-canary': 'v2' })).v1, 100, 'X-Canary: v2 must not reach a critical instance');
    const v = await canaryView();
    assert.equal(v?.subsets.find((s) => s.tag === 'v1')?.effective, 100);
    assert.equal(v?.subsets.find((s) => s.tag === 'v2')?.effective, 0);
    // Dashboards read the same effective shares from the metrics.
    const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(text, /^cgw_canary_weight_percent\{service="web",subset="v1"\} 100$/m);
    assert.match(text, /^cgw_canary_weight_percent\{service="web",subset="v2"\} 0$/m);

    await consul.setCheck('web-v2', 'passing');
    await waitFor(async () => (await shares(10)).v2 > 0, { timeoutMs: 15_000, message: 'v2 back' });
    near((await shares(100)).v2, 50, 5, 'v2 share once healthy again');
  });
});

describe('invalid KV values', () => {
  const invalid: Array<[string, string]> = [
    ['not JSON', '{"weights": {"v1": 50,'],
    ['wrong shape', JSON.stringify({ v1: 50, v2: 50 })],
    ['out of range', JSON.stringify({ weights: { v1: 150, v2: -50 } })],
    ['not summing to 100', JSON.stringify({ weights: { v1: 60, v2: 30 } })],
  ];

  test('set good weights first: v1=70 v2=30', async () => {
    await consul.kvPut(KEY, JSON.stringify({ weights: { v1: 70, v2: 30 } }));
    await applied({ v1: 70, v2: 30 });
    assert.deepEqual((await status()).problems.filter((p) => p.kind === 'canary'), []);
  });

  for (const [label, value] of invalid) {
    test(`${label} is rejected: last good weights stay, status and metric show it`, async () => {
      const rejectedBefore = await rejectedCount();
      await consul.kvPut(KEY, value);
      const modifyIndex = (await consul.kvGet(KEY))?.modifyIndex;
      const problem = await waitFor(
        async () =>
          (await status()).problems.find((p) => p.kind === 'canary' && p.subject === KEY && p.message.includes(`ModifyIndex ${modifyIndex}`)),
        { timeoutMs: 15_000, message: `canary problem for ModifyIndex ${modifyIndex}` },
      );
      assert.equal(problem.keptLastGood, true);
      assert.ok((await rejectedCount()) > rejectedBefore, 'cgw_config_rejected_total{kind="canary"} did not increase');
      const v = await canaryView();
      assert.deepEqual(v?.weights, { v1: 70, v2: 30 });
      assert.ok((v?.rejected.length ?? 0) > 0);
      near((await shares(100)).v2, 30, 5, 'v2 share under the kept weights');
    });
  }

  test('cgw canary get shows the stored value is invalid', async () => {
    const r = await cli('get', 'web', '--json');
    assert.equal(r.code, 0, r.stderr);
    const rec = JSON.parse(r.stdout) as { key: string; weights: unknown; invalid: string | null };
    assert.equal(rec.key, KEY);
    assert.equal(rec.weights, null);
    assert.match(rec.invalid ?? '', /sum to 100/);
  });

  test('a valid value clears the problem', async () => {
    await consul.kvPut(KEY, JSON.stringify({ weights: { v1: 40, v2: 60 } }));
    await applied({ v1: 40, v2: 60 });
    assert.deepEqual((await status()).problems.filter((p) => p.kind === 'canary'), []);
    near((await shares(100)).v2, 60, 5, 'v2 share');
  });

  test('deleting the key returns to plain balancing (~50/50)', async () => {
    await consul.kvDelete(KEY);
    await applied(null);
    near((await shares(100)).v2, 50, 5, 'v2 share');
  });
});

describe('cgw canary CLI', () => {
  test('bad input exits 2 with a clear message and writes nothing', async () => {
    await consul.kvPut(KEY, JSON.stringify({ weights: { v1: 90, v2: 10 } }));
    const before = await consul.kvGet(KEY);
    const cases: Array<[string[], RegExp]> = [
      [['v1=50', 'v2=40'], /sum to 100/],
      [['v1=abc', 'v2=100'], /abc/],
      [['v1', 'v2=100'], /"v1" is not tag=weight/],
      [['v1=150', 'v2=-50'], /v1=150|-50|<= 100|>= 0|not a number/],
    ];
    for (const [args, message] of cases) {
      const r = await cli('set', 'web', ...args);
      assert.equal(r.code, 2, `cgw canary set web ${args.join(' ')}: exit ${r.code}\n${r.stdout}${r.stderr}`);
      assert.match(r.stderr, message, `stderr for ${args.join(' ')}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'a stack trace is not a clear message');
      assert.deepEqual(await consul.kvGet(KEY), before, `KV changed by ${args.join(' ')}`);
    }
  });

  test('--cas with a stale ModifyIndex exits 3 and writes nothing; the current index writes', async () => {
    const stale = (await consul.kvGet(KEY))?.modifyIndex as number;
    await consul.kvPut(KEY, JSON.stringify({ weights: { v1: 75, v2: 25 } }));
    const current = await consul.kvGet(KEY);
    const r = await cli('set', 'web', 'v1=60', 'v2=40', '--cas', String(stale));
    assert.equal(r.code, 3, `exit ${r.code}\n${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /ModifyIndex|changed/);
    assert.deepEqual(await consul.kvGet(KEY), current);

    const ok = await cli('set', 'web', 'v1=60', 'v2=40', '--cas', String(current?.modifyIndex));
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(JSON.parse((await consul.kvGet(KEY))?.value ?? 'null'), { weights: { v1: 60, v2: 40 } });
  });

  test('get --json shows the stored weights and ModifyIndex; get (table) lists them', async () => {
    const entry = await consul.kvGet(KEY);
    const r = await cli('get', 'web', '--json');
    assert.equal(r.code, 0, r.stderr);
    const rec = JSON.parse(r.stdout) as { key: string; modifyIndex: number; weights: Record<string, number>; invalid: string | null };
    assert.deepEqual({ key: rec.key, modifyIndex: rec.modifyIndex, weights: rec.weights, invalid: rec.invalid }, {
      key: KEY,
      modifyIndex: entry?.modifyIndex,
      weights: { v1: 60, v2: 40 },
      invalid: null,
    });
    const table = await cli('get', 'web');
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /v1\s+60/);
    assert.match(table.stdout, /v2\s+40/);
  });

  test('clear deletes the key and the gateway returns to plain balancing', async () => {
    await applied({ v1: 60, v2: 40 });
    const r = await cli('clear', 'web');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await consul.kvGet(KEY), null);
    await applied(null);
    near((await shares(100)).v2, 50, 5, 'v2 share');

    const again = await cli('clear', 'web');
    assert.equal(again.code, 0, again.stderr);
    const none = await cli('get', 'web', '--json');
    assert.equal(none.code, 0, none.stderr);
    assert.equal(JSON.parse(none.stdout), null);
  });
});
