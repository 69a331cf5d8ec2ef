/**
 * fabio's KV route language through the real gateway and a real Consul agent: `route add` to an
 * upstream Consul does not know, `route del` of a tag route, `route weight` by tag, the key's
 * subtree, `cgw routes` naming the source, one bad line (the others apply, the problem shows in
 * `cgw status`), a value that is not text (the last good lines stay), many writes at once, and
 * Consul changes applied afterwards.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

const KEY = 'fabio/config';

let consul: ConsulAgent;
let gw: GatewayProcess;
let stopping = false;
let legacy: Upstream;
let legacy2: Upstream;
const ups: Upstream[] = [];
const client = new Agent({ keepAliveTimeout: 10_000, connections: 4 });

interface Problem {
  kind: string;
  subject: string;
  message: string;
  keptLastGood?: boolean;
}

interface RouteRow {
  route: string;
  service: string;
  source: string;
  origin: string;
}

async function get(path: string): Promise<{ status: number; upstream: string }> {
  const r = await request(`${gw.url}${path}`, { dispatcher: client, headersTimeout: 10_000, bodyTimeout: 10_000 });
  await r.body.text();
  return { status: r.statusCode, upstream: String(r.headers['x-upstream'] ?? '') };
}

async function routes(): Promise<RouteRow[]> {
  const r = await runCli(['routes', '--json', '--admin', gw.adminUrl]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as RouteRow[];
}

async function problems(): Promise<Problem[]> {
  const r = await runCli(['status', '--json', '--admin', gw.adminUrl]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { problems: Problem[] }).problems;
}

/** Until `path` is answered by `upstream` (or, for a status, with that status). */
async function served(path: string, want: string | number): Promise<void> {
  await waitFor(
    async () => {
      const r = await get(path);
      return typeof want === 'number' ? r.status === want : r.status === 200 && r.upstream === want;
    },
    { timeoutMs: 20_000, message: `${path} answered by ${String(want)}` },
  );
}

/** Raw bytes into KV (the helper writes text). */
async function kvPutBytes(key: string, bytes: Buffer): Promise<void> {
  const r = await fetch(`${consul.addr}/v1/kv/${key}`, { method: 'PUT', body: bytes });
  assert.equal(r.status, 200, await r.text());
}

before(async () => {
  consul = await startConsul();
  for (const v of ['v1', 'v2']) {
    const u = await startUpstream(`web-${v}`);
    ups.push(u);
    await consul.register({ id: `web-${v}`, name: 'web', port: u.port, tags: ['urlprefix-/web', v] });
  }
  const api = await startUpstream('api');
  ups.push(api);
  await consul.register({ id: 'api-1', name: 'api', port: api.port, tags: ['urlprefix-/api'] });
  // Not in Consul: fabio users reach such upstreams through route add.
  legacy = await startUpstream('legacy');
  legacy2 = await startUpstream('legacy2');
  ups.push(legacy, legacy2);
  await consul.kvPut(
    KEY,
    [
      '# manual overrides, as fabio reads them',
      `route add legacy /legacy http://127.0.0.1:${legacy.port}/`,
      'route del api',
      'route weight web /web weight 0.2 tags "v2"',
      '',
    ].join('\n'),
  );
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s'] });
  void gw.exited.then((code) => {
    if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}); last log lines:\n${gw.logs.slice(-30).join('\n')}\n`);
  });
});

after(async () => {
  stopping = true;
  await gw?.kill();
  await client.close();
  await Promise.all(ups.map((u) => u.close()));
  await consul?.destroy();
});

describe('fabio/config read at start', () => {
  test('route add sends /legacy to an upstream that Consul does not know', async () => {
    const r = await get('/legacy/page');
    assert.deepEqual(r, { status: 200, upstream: 'legacy' });
  });

  test('route del api removes the route its tag declares', async () => {
    assert.equal((await get('/api')).status, 404);
  });

  test('route weight web /web weight 0.2 tags "v2": v2 gets 20% of 100 requests (± 5)', async () => {
    let v2 = 0;
    for (let i = 0; i < 100; i++) {
      const r = await get('/web');
      assert.equal(r.status, 200);
      if (r.upstream === 'web-v2') v2++;
    }
    assert.ok(Math.abs(v2 - 20) <= 5, `v2 answered ${v2} of 100`);
  });

  test('cgw routes shows the route with source fabio-kv, its key and line', async () => {
    const rows = await routes();
    const row = rows.find((r) => r.route === '/legacy');
    assert.deepEqual(row && { service: row.service, source: row.source, origin: row.origin }, { service: 'fabio:/legacy', source: 'fabio-kv', origin: 'fabio/config line 2' });
    assert.deepEqual(rows.map((r) => r.route).sort(), ['/legacy', '/web']);
    const table = await runCli(['routes', '--admin', gw.adminUrl]);
    assert.match(table.stdout, /\/legacy .*fabio-kv/);
  });
});

describe('changes to fabio/config', () => {
  test('a subkey adds its lines after the key\'s own (fabio >= 1.5.7)', async () => {
    await consul.kvPut(`${KEY}/extra`, `route add legacy2 /extra http://127.0.0.1:${legacy2.port}`);
    await served('/extra', 'legacy2');
    assert.equal((await get('/legacy')).upstream, 'legacy');
    await consul.kvDelete(`${KEY}/extra`);
    await served('/extra', 404);
  });

  test('one bad line: the good lines apply, the bad one is a problem naming key, line and text', async () => {
    await consul.kvPut(KEY, [`route add legacy /legacy http://127.0.0.1:${legacy.port}/`, 'route add broken /x', `route add legacy2 /legacy2 http://127.0.0.1:${legacy2.port}/`].join('\n'));
    await served('/legacy2', 'legacy2');
    assert.equal((await get('/legacy')).upstream, 'legacy');
    // The del and weight lines are gone from the value: /api is back.
    await served('/api', 'api');
    const problem = (await problems()).find((p) => p.subject === 'fabio/config line 2');
    assert.ok(problem, 'no problem for line 2');
    assert.match(problem.message, /^"route add broken \/x": syntax error: expected route add <svc> <src> <dst>/);
    const text = await runCli(['status', '--admin', gw.adminUrl]);
    assert.match(text.stdout, /fabio\/config line 2/);
  });

  test('a value that is not UTF-8 keeps the last good lines and says so', async () => {
    await kvPutBytes(KEY, Buffer.from([0x72, 0x6f, 0x75, 0x74, 0x65, 0x20, 0xff, 0xfe, 0x0a]));
    await waitFor(async () => (await problems()).some((p) => p.subject === KEY && /not UTF-8/.test(p.message)), { timeoutMs: 20_000, message: 'the refused value shows in cgw status' });
    const problem = (await problems()).find((p) => p.subject === KEY);
    assert.equal(problem?.keptLastGood, true);
    assert.equal((await get('/legacy')).upstream, 'legacy');
    assert.equal((await get('/legacy2')).upstream, 'legacy2');
  });

  test('a value over the size cap keeps the last good lines too', async () => {
    await consul.kvPut(KEY, `route del legacy\n${'#'.repeat(300 * 1024)}`);
    await waitFor(async () => (await problems()).some((p) => p.subject === KEY && /larger than 262144 bytes/.test(p.message)), { timeoutMs: 20_000, message: 'the oversized value shows in cgw status' });
    assert.equal((await get('/legacy')).upstream, 'legacy');
  });

  test('__proto__ and constructor as names in lines change nothing else', async () => {
    await consul.kvPut(KEY, [`route add __proto__ /__proto__ http://127.0.0.1:${legacy.port}/ tags "constructor"`, 'route del constructor', 'route weight /web weight 0.5 tags "__proto__"'].join('\n'));
    await served('/__proto__', 'legacy');
    await served('/legacy', 404);
    assert.equal((await get('/web')).status, 200);
    assert.ok((await problems()).some((p) => p.subject === 'fabio/config line 3'));
  });

  test('many writes at once: the last value is the one in force', async () => {
    await Promise.all(Array.from({ length: 30 }, (_, i) => consul.kvPut(`${KEY}/burst${String(i).padStart(2, '0')}`, `route add b${i} /burst${i} http://127.0.0.1:${legacy2.port}/\nroute bogus ${i}`)));
    await consul.kvPut(`${KEY}/burst29`, `route add last /burst-last http://127.0.0.1:${legacy.port}/`);
    await served('/burst-last', 'legacy');
    await served('/burst29', 404);
    assert.equal((await get('/burst0')).upstream, 'legacy2');
    const bogus = (await problems()).filter((p) => p.kind === 'fabio-kv' && /"route bogus \d+"/.test(p.message));
    assert.equal(bogus.length, 29);
    await Promise.all(Array.from({ length: 30 }, (_, i) => consul.kvDelete(`${KEY}/burst${String(i).padStart(2, '0')}`)));
    await served('/burst0', 404);
  });

  test('the gateway still applies Consul changes afterwards', async () => {
    const late = await startUpstream('late');
    ups.push(late);
    await consul.register({ id: 'late-1', name: 'late', port: late.port, tags: ['urlprefix-/late'] });
    await served('/late', 'late');
  });

  test('deleting the key drops its routes and overrides', async () => {
    await consul.kvDelete(KEY);
    await served('/__proto__', 404);
    await served('/api', 'api');
    assert.ok(!(await problems()).some((p) => p.subject.startsWith(KEY)));
  });
});

describe('--workers 2', () => {
  test('the workers serve the fabio routes the primary builds', async () => {
    await consul.kvPut(KEY, `route add legacy /legacy http://127.0.0.1:${legacy.port}/\nroute del api`);
    await served('/legacy', 'legacy');
    const multi = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--workers', '2'] });
    try {
      for (let i = 0; i < 6; i++) {
        const r = await request(`${multi.url}/legacy`, { dispatcher: client, headersTimeout: 10_000, bodyTimeout: 10_000 });
        await r.body.text();
        assert.equal(r.headers['x-upstream'], 'legacy');
        const a = await request(`${multi.url}/api`, { dispatcher: client, headersTimeout: 10_000, bodyTimeout: 10_000 });
        await a.body.text();
        assert.equal(a.statusCode, 404);
      }
    } finally {
      await multi.kill();
    }
  });
});

describe('--no-fabio-kv', () => {
  test('a gateway started with it ignores fabio/config', async () => {
    await consul.kvPut(KEY, 'route del web');
    await served('/web', 404);
    const off = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--no-fabio-kv'] });
    try {
      const r = await request(`${off.url}/web`, { dispatcher: client, headersTimeout: 10_000, bodyTimeout: 10_000 });
      await r.body.text();
      assert.equal(r.statusCode, 200);
      // The gateway reading fabio/config has a watch on it; this one has none.
      const watchesOf = async (admin: string) => JSON.stringify(await (await fetch(`${admin}/v1/watches`)).json());
      assert.match(await watchesOf(gw.adminUrl), /"name":"fabio-kv"/);
      assert.doesNotMatch(await watchesOf(off.adminUrl), /"name":"fabio-kv"/);
    } finally {
      await off.kill();
    }
  });
});
