/**
 * Policy and route documents through the real gateway: static routes (file), a KV route document
 * for an untagged Consul service, discovery modes poll and pinned, KV overriding a file of the same
 * id, invalid KV documents kept at last good without touching other documents, policy conflicts,
 * and a route document winning over a urlprefix- tag.
 */
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send } from '../helpers/http.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';



/** The upstream that answered, asserting a 200. */
async function who(path: string): Promise<string> {
  const r = await send(gw.url, path);
  assert.equal(r.status, 200, `GET ${path}: ${r.status} ${r.body.toString()}`);
  return String(r.headers['x-upstream']);
}

/** Status of a POST with a body of `size` bytes. */
async function postStatus(path: string, size: number): Promise<number> {
  return (await send(gw.url, path, { method: 'POST', body: Buffer.alloc(size, 'x'), headers: { 'content-type': 'text/plain' } })).status;
}

async function admin<T>(path: string): Promise<T> {
  const res = await fetch(`${gw.adminUrl}${path}`);
  assert.equal(res.status, 200, `admin ${path}: ${res.status}`);
  return (await res.json()) as T;
}

interface RouteRow {
  route: string;
  service: string;
  source: string;
  origin: string;
  refresh: string;
  policies: string[];
  endpointsHealthy: number;
}
interface PolicyRow {
  id: string;
  kind: string;
  applied: boolean;
  target: string | null;
  source: string | null;
  modifyIndex: number | null;
  overriddenFile: string | null;
  rejected: { source: string; error: string } | null;
  conflict: string | null;
}
interface WatchRow {
  name: string;
  path: string;
  index: number;
  requests: number;
  lastSuccessAt: number | null;
  lastChangeAt: number | null;
  state: string;
}
interface EndpointRow {
  id: string;
  port: number;
  ejected: boolean;
  consecutiveFailures: number;
}
interface Problem {
  kind: string;
  subject: string;
  message: string;
  keptLastGood?: boolean;
}

const route = async (id: string): Promise<RouteRow | undefined> => (await admin<RouteRow[]>('/v1/routes')).find((r) => r.route === id);
const policy = async (id: string): Promise<PolicyRow | undefined> => (await admin<PolicyRow[]>('/v1/policies')).find((p) => p.id === id);
const watch = async (name: string): Promise<WatchRow | undefined> => (await admin<{ watches: WatchRow[] }>('/v1/watches')).watches.find((w) => w.name === name);
const problems = async (): Promise<Problem[]> => (await admin<{ problems: Problem[] }>('/v1/status')).problems;

async function metricValue(name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Several KV writes in one Consul transaction: the gateway sees them in one KV watch update. */
async function kvTxn(entries: Record<string, string>): Promise<void> {
  const ops = Object.entries(entries).map(([Key, value]) => ({ KV: { Verb: 'set', Key, Value: Buffer.from(value).toString('base64') } }));
  const r = await consul.api('PUT', '/v1/txn', ops);
  assert.equal(r.status, 200, `txn: ${r.status} ${r.text}`);
}

const json = (v: unknown): string => JSON.stringify(v);

let consul: ConsulAgent;
let gw: GatewayProcess;
let dir: string;
let stopping = false;
const ups: Record<string, Upstream> = {};
const up = (n: string): Upstream => ups[n] as Upstream;

before(async () => {
  consul = await startConsul();
  const names = ['static-1', 'static-2', 'inv-1', 'inv-2', 'pin-1', 'ovr-file', 'ovr-kv', 'guarded', 'fresh', 'clash-tag', 'clash-doc'];
  await Promise.all(names.map(async (n) => (ups[n] = await startUpstream(n))));

  dir = await mkdtemp(join(tmpdir(), 'cgw-policies-'));
  await mkdir(join(dir, 'routes'));
  await writeFile(join(dir, 'routes', 'legacy.yaml'), `path: /legacy\nstrip: /legacy\nupstreams:\n  - ${up('static-1').url}\n  - ${up('static-2').url}\n`);
  await writeFile(join(dir, 'routes', 'ovr.yaml'), `path: /ovr\nupstreams: [${up('ovr-file').url}]\n`);
  await writeFile(join(dir, 'ovr-guard.yaml'), `appliesTo: {route: /ovr}\nlimits: {maxBodyBytes: 64}\n`);
  await writeFile(join(dir, 'routes', 'guarded.json'), json({ path: '/guarded', upstreams: [up('guarded').url] }));

  // A long --wait: an idle blocking watch then makes no request during the test, so a watch
  // that keeps making requests is polling (or looping), never blocking.
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '60s', '--policies', dir] });
  void gw.exited.then((code) => {
    if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}); last log lines:\n${gw.logs.slice(-30).join('\n')}\n`);
  });
});

after(async () => {
  stopping = true;
  await gw?.kill();
  await Promise.all(Object.values(ups).map((u) => u.close()));
  await consul?.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('static route from a file', () => {
  test('balances over both upstream URLs without any Consul registration; shown as file / static', async () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 10; i++) {
      const r = await send(gw.url, '/legacy/invoices/7');
      assert.equal(r.status, 200, r.body.toString());
      assert.equal((JSON.parse(r.body.toString()) as { url: string }).url, '/invoices/7', 'strip applies');
      const name = String(r.headers['x-upstream']);
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(counts), { 'static-1': 5, 'static-2': 5 });

    const cli = await runCli(['routes', '--json', '--admin', gw.adminUrl]);
    assert.equal(cli.code, 0, cli.stderr);
    const row = (JSON.parse(cli.stdout) as RouteRow[]).find((r) => r.route === '/legacy');
    assert.ok(row, cli.stdout);
    assert.equal(row.source, 'file');
    assert.equal(row.refresh, 'static');
    assert.equal(row.service, 'static:legacy');
    assert.ok(row.origin.includes('routes/legacy') && row.origin.includes(join(dir, 'routes', 'legacy.yaml')), row.origin);
    assert.equal(row.endpointsHealthy, 2);
  });

  test('a closed upstream: requests keep succeeding (retried), then it is ejected and skipped', async () => {
    await up('static-2').close();
    const ejectedEndpoint = async (): Promise<EndpointRow | undefined> =>
      (await admin<EndpointRow[]>(`/v1/services/${encodeURIComponent('static:legacy')}/endpoints`)).find((e) => e.port === up('static-2').port);
    // Round robin sends every other request to the dead URL: each is retried on static-1, and
    // the default outlier policy ejects after 5 consecutive failures.
    const ejected = await waitFor(
      async () => {
        assert.equal(await who('/legacy/x'), 'static-1');
        const e = await ejectedEndpoint();
        return e?.ejected ? e : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 0, message: 'static-2 ejected' },
    );
    assert.ok(ejected.ejected);

    const retries = await metricValue('cgw_upstream_retries_total', 'service="static:legacy"');
    assert.ok(retries >= 5, `retries ${retries}`);
    for (let i = 0; i < 10; i++) assert.equal(await who('/legacy/x'), 'static-1');
    assert.equal(await metricValue('cgw_upstream_retries_total', 'service="static:legacy"'), retries, 'an ejected endpoint is not tried any more');
  });
});

describe('route document in KV for an untagged Consul service', () => {
  test('makes the service routed and watched; source kv', async () => {
    await consul.register({ id: 'inv-1', name: 'inventory', port: up('inv-1').port });
    assert.equal(await route('/inventory'), undefined, 'no tag, no document: not routed');
    await consul.kvPut('gateway/routes/inventory', json({ path: '/inventory', service: 'inventory' }));
    const row = await waitFor(async () => {
      const r = await route('/inventory');
      return r && r.endpointsHealthy === 1 ? r : undefined;
    }, { message: '/inventory routed' });
    assert.equal(row.source, 'kv');
    assert.equal(row.service, 'inventory');
    assert.equal(row.refresh, 'watched');
    assert.match(row.origin, /routes\/inventory \(gateway\/routes\/inventory\)/);
    const w = await watch('health:inventory');
    assert.ok(w, 'a health watch for inventory');
    assert.equal(w.path, '/v1/health/service/inventory');
    assert.equal(await who('/inventory/items'), 'inv-1');
  });
});

describe('discovery modes', () => {
  test('poll: refresh polled, new instance within interval + 1 s, about one request per interval', async () => {
    await consul.kvPut('gateway/policies/inventory-poll', json({ appliesTo: { service: 'inventory' }, discovery: { mode: 'poll', interval: '2s' } }));
    const row = await waitFor(async () => {
      const r = await route('/inventory');
      return r?.refresh === 'polled' ? r : undefined;
    }, { message: '/inventory polled' });
    assert.deepEqual(row.policies, ['policies/inventory-poll']);

    await consul.register({ id: 'inv-2', name: 'inventory', port: up('inv-2').port });
    const registered = Date.now();
    await waitFor(async () => (await route('/inventory'))?.endpointsHealthy === 2, { timeoutMs: 3000, intervalMs: 50, message: 'inv-2 seen within 3 s' });
    const seenAfter = Date.now() - registered;
    const names = new Set<string>();
    for (let i = 0; i < 4; i++) names.add(await who('/inventory'));
    assert.deepEqual([...names].sort(), ['inv-1', 'inv-2']);

    // Idle cadence: two more requests take at least one full interval, and no more are made.
    const first = await watch('health:inventory');
    assert.ok(first);
    const t0 = Date.now();
    const later = await waitFor(async () => {
      const w = await watch('health:inventory');
      return w && w.requests >= first.requests + 2 ? w : undefined;
    }, { timeoutMs: 6000, intervalMs: 50, message: 'two more polls' });
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 1800, `two polls ${elapsed} ms apart: faster than the 2 s interval`);
    assert.ok(later.requests <= first.requests + 2 + Math.ceil(elapsed / 2000), `requests ${first.requests} -> ${later.requests} in ${elapsed} ms`);
    assert.equal(later.state, 'ok');
    // A blocking query would hold the request for --wait (60 s); a poll answers at once.
    assert.ok(later.lastSuccessAt !== null && Date.now() - later.lastSuccessAt < 2600, `last success ${Date.now() - (later.lastSuccessAt ?? 0)} ms ago`);
    process.stderr.write(`# poll: new instance seen after ${seenAfter} ms; ${later.requests - first.requests} requests in ${elapsed} ms\n`);
  });

  test('pinned: the endpoint read first stays after deregistration and Consul is not asked again', async () => {
    await consul.register({ id: 'pin-1', name: 'pinsvc', port: up('pin-1').port });
    await kvTxn({
      'gateway/routes/pinsvc': json({ path: '/pinned', service: 'pinsvc' }),
      'gateway/policies/pinsvc': json({ appliesTo: { service: 'pinsvc' }, discovery: { mode: 'pinned' } }),
    });
    const row = await waitFor(async () => {
      const r = await route('/pinned');
      return r?.refresh === 'pinned' && r.endpointsHealthy === 1 ? r : undefined;
    }, { message: '/pinned routed and pinned' });
    assert.equal(row.source, 'kv');
    assert.equal(await who('/pinned'), 'pin-1');
    const before = await watch('health:pinsvc');
    assert.ok(before, 'pinned services are read once');
    assert.equal(before.requests, 1);

    const catalogBefore = await watch('catalog');
    await consul.deregister('pin-1');
    // The gateway has seen the catalog without pinsvc once its catalog watch moved on (the rebuild
    // that follows runs before the admin server answers the next request).
    await waitFor(async () => ((await watch('catalog'))?.index ?? 0) > (catalogBefore?.index ?? 0), { message: 'catalog change seen' });

    const after = await route('/pinned');
    assert.equal(after?.endpointsHealthy, 1, `pinned endpoint dropped: ${json(after)}`);
    for (let i = 0; i < 3; i++) assert.equal(await who('/pinned'), 'pin-1');
    const w = await watch('health:pinsvc');
    assert.ok(w === undefined || w.requests === before.requests, `pinned watch kept asking Consul: ${json(w)}`);
  });
});

describe('KV and files', () => {
  test('a KV document wins over the file with the same id; deleting it brings the file back', async () => {
    assert.equal(await who('/ovr'), 'ovr-file');
    assert.equal(await postStatus('/ovr', 200), 413, 'file policy: 64 bytes');

    await kvTxn({
      'gateway/routes/ovr': json({ path: '/ovr', upstreams: [up('ovr-kv').url] }),
      'gateway/policies/ovr-guard': json({ appliesTo: { route: '/ovr' }, limits: { maxBodyBytes: 4096 } }),
    });
    await waitFor(async () => (await who('/ovr')) === 'ovr-kv', { message: 'KV route document in force' });
    assert.equal(await postStatus('/ovr', 200), 200, 'KV policy: 4096 bytes');
    const routeDoc = await policy('routes/ovr');
    assert.equal(routeDoc?.source, 'kv:gateway/routes/ovr');
    assert.equal(routeDoc?.overriddenFile, join(dir, 'routes', 'ovr.yaml'));
    const policyDoc = await policy('policies/ovr-guard');
    assert.equal(policyDoc?.source, 'kv:gateway/policies/ovr-guard');
    assert.equal(policyDoc?.overriddenFile, join(dir, 'ovr-guard.yaml'));
    assert.equal((await route('/ovr'))?.source, 'kv');

    await consul.kvDelete('gateway/routes/ovr');
    await consul.kvDelete('gateway/policies/ovr-guard');
    await waitFor(async () => (await who('/ovr')) === 'ovr-file', { message: 'file route document back' });
    await waitFor(async () => (await postStatus('/ovr', 200)) === 413, { message: 'file policy back' });
    const back = await policy('routes/ovr');
    assert.equal(back?.source, `file:${join(dir, 'routes', 'ovr.yaml')}`);
    assert.equal(back?.overriddenFile, null);
    assert.equal((await route('/ovr'))?.source, 'file');
  });

  test('an invalid KV version is rejected precisely, the last good stays, and other documents still apply', async () => {
    const key = 'gateway/policies/guard';
    await consul.kvPut(key, json({ appliesTo: { route: '/guarded' }, limits: { maxBodyBytes: 100 } }));
    await waitFor(async () => (await postStatus('/guarded', 200)) === 413, { message: 'guard policy in force' });
    const good = await policy('policies/guard');
    assert.ok(good?.applied && good.modifyIndex !== null);
    const rejected0 = await metricValue('cgw_config_rejected_total', 'kind="policy"');

    // A bad duration, and in the same transaction a valid YAML route document.
    await kvTxn({
      [key]: json({ appliesTo: { route: '/guarded' }, limits: { maxBodyBytes: 100 }, timeouts: { request: '5 parsecs' } }),
      'gateway/routes/fresh': `# written as YAML\npath: /fresh\nupstreams:\n  - url: ${up('fresh').url}\n`,
    });
    await waitFor(async () => (await send(gw.url, '/fresh')).status === 200, { message: 'the valid YAML document applies' });
    assert.equal(await who('/fresh'), 'fresh');
    const bad = await waitFor(async () => {
      const p = await policy('policies/guard');
      return p?.rejected ? p : undefined;
    }, { message: 'rejection shown' });
    assert.match(bad.rejected?.error ?? '', /^timeouts\.request: not a duration: "5 parsecs"/);
    assert.equal(bad.rejected?.source, `kv:${key}`);
    assert.ok(bad.applied, 'the last good version is still applied');
    assert.equal(bad.modifyIndex, good.modifyIndex, 'the version in force is the earlier one');
    assert.equal(await postStatus('/guarded', 200), 413, 'the last good limits still apply');
    assert.equal(await postStatus('/guarded', 50), 200);

    const cli = await runCli(['status', '--json', '--admin', gw.adminUrl]);
    assert.equal(cli.code, 0, cli.stderr);
    const listed = (JSON.parse(cli.stdout) as { problems: Problem[] }).problems.filter((p) => p.kind === 'policy' && p.subject === 'policies/guard');
    assert.equal(listed.length, 1, cli.stdout);
    assert.equal(listed[0]?.keptLastGood, true);
    assert.match(listed[0]?.message ?? '', /KV gateway\/policies\/guard .* rejected: timeouts\.request: not a duration/);
    assert.equal(await metricValue('cgw_config_rejected_total', 'kind="policy"'), rejected0 + 1);

    // An unknown field: named in the message, counted once more, last good still in force.
    await consul.kvPut(key, json({ appliesTo: { route: '/guarded' }, limits: { maxBodyBytes: 100 }, limitz: { maxBodyBytes: 1 } }));
    const unknown = await waitFor(async () => {
      const p = await policy('policies/guard');
      return p?.rejected && /limitz/.test(p.rejected.error) ? p : undefined;
    }, { message: 'unknown field rejected' });
    assert.match(unknown.rejected?.error ?? '', /[Uu]nrecognized key.*"limitz"/);
    assert.equal(unknown.modifyIndex, good.modifyIndex);
    assert.equal(await metricValue('cgw_config_rejected_total', 'kind="policy"'), rejected0 + 2);
    assert.equal(await postStatus('/guarded', 200), 413);
    assert.equal(await who('/fresh'), 'fresh', 'the other document is untouched');

    // A valid version again clears the problem.
    await consul.kvPut(key, json({ appliesTo: { route: '/guarded' }, limits: { maxBodyBytes: 1000 } }));
    await waitFor(async () => (await postStatus('/guarded', 200)) === 200, { message: 'new valid version applies' });
    assert.equal((await policy('policies/guard'))?.rejected, null);
    assert.equal((await problems()).filter((p) => p.subject === 'policies/guard').length, 0);
  });

  test('two policies for the same target: the first by id wins, the other is a problem', async () => {
    await consul.kvPut('gateway/policies/conf-b', json({ appliesTo: { route: '/fresh' }, limits: { maxBodyBytes: 100_000 } }));
    await waitFor(async () => (await policy('policies/conf-b'))?.applied === true);
    assert.equal(await postStatus('/fresh', 50), 200);

    await consul.kvPut('gateway/policies/conf-a', json({ appliesTo: { route: '/fresh' }, limits: { maxBodyBytes: 10 } }));
    await waitFor(async () => (await postStatus('/fresh', 50)) === 413, { message: 'conf-a wins' });
    const loser = await policy('policies/conf-b');
    assert.equal(loser?.applied, false);
    assert.match(loser?.conflict ?? '', /route \/fresh already has policy policies\/conf-a \(first by name wins\)/);
    assert.equal((await policy('policies/conf-a'))?.applied, true);
    const p = (await problems()).filter((x) => x.kind === 'policy' && x.subject === 'policies/conf-b');
    assert.equal(p.length, 1, json(p));
    assert.deepEqual((await route('/fresh'))?.policies, ['policies/conf-a']);

    await consul.kvDelete('gateway/policies/conf-a');
    await waitFor(async () => (await postStatus('/fresh', 50)) === 200, { message: 'conf-b applies once conf-a is gone' });
    assert.equal((await problems()).filter((x) => x.subject === 'policies/conf-b').length, 0);
  });

  test('a route document wins over a tag for the same route; the tag is a problem', async () => {
    await consul.register({ id: 'clash-tag', name: 'clashsvc', port: up('clash-tag').port, tags: ['urlprefix-/clash'] });
    await waitFor(async () => (await route('/clash'))?.source === 'tag', { message: '/clash from the tag' });
    assert.equal(await who('/clash'), 'clash-tag');

    await consul.kvPut('gateway/routes/clash', json({ path: '/clash', upstreams: [up('clash-doc').url] }));
    await waitFor(async () => (await who('/clash')) === 'clash-doc', { message: 'the document takes the route' });
    const row = await route('/clash');
    assert.equal(row?.source, 'kv');
    assert.equal(row?.service, 'static:clash');
    const p = (await problems()).filter((x) => x.kind === 'route' && x.subject === 'clashsvc');
    assert.equal(p.length, 1, json(await problems()));
    assert.match(p[0]?.message ?? '', /route \/clash is declared by document routes\/clash; tag "urlprefix-\/clash" ignored/);

    await consul.kvDelete('gateway/routes/clash');
    await waitFor(async () => (await who('/clash')) === 'clash-tag', { message: 'the tag route is back' });
    assert.equal((await problems()).filter((x) => x.subject === 'clashsvc').length, 0);
  });
});
