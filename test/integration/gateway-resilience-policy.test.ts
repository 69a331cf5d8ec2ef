/**
 * Resilience policies on the real gateway: retries land on another endpoint (statuses, connect
 * failures, timeouts; POST only when allowed, with its buffered body), the retry budget bounds
 * the extra load, outlier detection ejects a failing endpoint and brings it back, the circuit
 * breaker opens, refuses without touching the upstream and closes after a successful probe, and
 * response-header and whole-request timeouts answer 504 in time.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePort } from '../helpers/ports.ts';
import { startUpstream, type Upstream, type UpstreamOptions } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
let policyDir: string;
const ups = new Map<string, Upstream>();
// Below the gateway's 5 s keep-alive, so a pause (an ejection running out) never meets a socket it closed.
const client = new Agent({ keepAliveTimeout: 2000, connections: 8 });

const noOutlier = { enabled: false };
const noBackoff = { base: '0ms', max: '0ms' };

/** One document per service (and a few per route), all loaded with --policies. */
const POLICIES: Record<string, unknown> = {
  'svc-r503': {
    appliesTo: { service: 'r503' },
    retries: { attempts: 1, statuses: [503], backoff: noBackoff },
    // The failing instance must keep getting its share, or POST would never meet it.
    outlierDetection: noOutlier,
  },
  'route-r503post': {
    appliesTo: { route: '/r503post' },
    retries: { attempts: 1, statuses: [503], backoff: noBackoff, nonIdempotent: true },
  },
  'svc-rconn': {
    appliesTo: { service: 'rconn' },
    retries: { attempts: 1, on: ['connect-failure'], backoff: noBackoff },
    outlierDetection: noOutlier,
  },
  'svc-budget': {
    appliesTo: { service: 'budget' },
    retries: { attempts: 3, statuses: [503], backoff: noBackoff, budget: { ratio: 0, minPerSecond: 1 } },
    outlierDetection: noOutlier,
  },
  'svc-outl': {
    appliesTo: { service: 'outl' },
    retries: { attempts: 0 },
    outlierDetection: { consecutiveFailures: 3, baseEjection: '2s', maxEjectedPercent: 50 },
  },
  'svc-cb': {
    appliesTo: { service: 'cb' },
    retries: { attempts: 0 },
    outlierDetection: noOutlier,
    circuitBreaker: { window: '5s', minRequests: 5, failureRatio: 0.5, openFor: '1s', halfOpenProbes: 1 },
  },
  'svc-slow': { appliesTo: { service: 'slow' }, outlierDetection: noOutlier },
  'route-slow-hdr': { appliesTo: { route: '/slow-hdr' }, retries: { attempts: 0 }, timeouts: { responseHeaders: '200ms' } },
  'route-slow-req': { appliesTo: { route: '/slow-req' }, retries: { attempts: 0 }, timeouts: { request: '300ms' } },
  'svc-mixed': {
    appliesTo: { service: 'mixed' },
    retries: { attempts: 1, on: ['timeout'], backoff: noBackoff },
    timeouts: { responseHeaders: '200ms' },
    outlierDetection: noOutlier,
  },
};

async function upstream(name: string, opts: UpstreamOptions = {}): Promise<Upstream> {
  const u = await startUpstream(name, opts);
  ups.set(name, u);
  return u;
}

function up(name: string): Upstream {
  const u = ups.get(name);
  assert.ok(u, `upstream ${name}`);
  return u;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  ms: number;
  /** x-upstream, or the status when the gateway answered itself. */
  who: string;
  code: string | undefined;
}

async function call(path: string, opts: { method?: 'GET' | 'POST'; body?: string } = {}): Promise<Answer> {
  const started = performance.now();
  const r = await request(`${gw.url}${path}`, {
    dispatcher: client,
    method: opts.method ?? 'GET',
    body: opts.body,
    headers: opts.body !== undefined ? { 'content-type': 'text/plain' } : {},
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const text = await r.body.text();
  const ms = performance.now() - started;
  let code: string | undefined;
  if (r.headers['content-type']?.toString().startsWith('application/json') && r.headers['x-upstream'] === undefined) {
    code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
  }
  return { status: r.statusCode, headers: r.headers, text, ms, who: r.statusCode === 200 ? String(r.headers['x-upstream']) : String(r.statusCode), code };
}

async function many(path: string, n: number): Promise<Answer[]> {
  const out: Answer[] = [];
  for (let i = 0; i < n; i++) out.push(await call(path));
  return out;
}

async function metricValue(name: string, labels: string): Promise<number> {
  const text = await (await request(`${gw.adminUrl}/metrics`)).body.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function admin<T>(path: string): Promise<T> {
  const r = await request(`${gw.adminUrl}${path}`);
  assert.equal(r.statusCode, 200, path);
  return (await r.body.json()) as T;
}

interface EndpointRow {
  id: string;
  ejected: boolean;
  consecutiveFailures: number;
}
interface ServiceRow {
  name: string;
  endpointsHealthy: number;
  circuit: { state: string } | null;
  ejected: number;
}

const hitsOf = (names: string[]): number => names.reduce((sum, n) => sum + up(n).hits, 0);

before(async () => {
  policyDir = await mkdtemp(join(tmpdir(), 'cgw-resilience-policy-'));
  await Promise.all(Object.entries(POLICIES).map(([name, doc]) => writeFile(join(policyDir, `${name}.json`), JSON.stringify(doc))));

  consul = await startConsul();
  const closedPort = await freePort();
  const instances: Array<{ id: string; service: string; tags: string[]; opts?: UpstreamOptions; port?: number }> = [
    { id: 'r503-bad', service: 'r503', tags: ['urlprefix-/r503 strip=/r503', 'urlprefix-/r503post strip=/r503post'], opts: { status: 503 } },
    { id: 'r503-good', service: 'r503', tags: ['urlprefix-/r503 strip=/r503', 'urlprefix-/r503post strip=/r503post'] },
    { id: 'rconn-dead', service: 'rconn', tags: ['urlprefix-/rconn'], port: closedPort },
    { id: 'rconn-good', service: 'rconn', tags: ['urlprefix-/rconn'] },
    { id: 'budget-1', service: 'budget', tags: ['urlprefix-/budget'], opts: { status: 503 } },
    { id: 'budget-2', service: 'budget', tags: ['urlprefix-/budget'], opts: { status: 503 } },
    { id: 'outl-bad', service: 'outl', tags: ['urlprefix-/outl'], opts: { status: 503 } },
    { id: 'outl-1', service: 'outl', tags: ['urlprefix-/outl'] },
    { id: 'outl-2', service: 'outl', tags: ['urlprefix-/outl'] },
    { id: 'cb-1', service: 'cb', tags: ['urlprefix-/cb'], opts: { status: 500 } },
    { id: 'cb-2', service: 'cb', tags: ['urlprefix-/cb'], opts: { status: 500 } },
    { id: 'slow-1', service: 'slow', tags: ['urlprefix-/slow-hdr', 'urlprefix-/slow-req'], opts: { delayMs: 1000 } },
    { id: 'mixed-slow', service: 'mixed', tags: ['urlprefix-/mixed'], opts: { delayMs: 1000 } },
    { id: 'mixed-fast', service: 'mixed', tags: ['urlprefix-/mixed'] },
  ];
  await Promise.all(
    instances.map(async (i) => {
      const port = i.port ?? (await upstream(i.id, i.opts)).port;
      await consul.register({ id: i.id, name: i.service, port, tags: i.tags });
    }),
  );
  gw = await startGateway({ consul: consul.addr, args: ['--policies', policyDir] });
  const expected = new Map<string, number>();
  for (const i of instances) expected.set(i.service, (expected.get(i.service) ?? 0) + 1);
  await waitFor(
    async () => {
      const rows = await admin<ServiceRow[]>('/v1/services');
      return [...expected].every(([name, n]) => rows.find((r) => r.name === name)?.endpointsHealthy === n);
    },
    { timeoutMs: 20_000, message: 'every service routed with all its endpoints' },
  );
  const policies = await admin<Array<{ id: string; applied: boolean; rejected: unknown }>>('/v1/policies');
  for (const name of Object.keys(POLICIES)) {
    const p = policies.find((d) => d.id === `policies/${name}`);
    assert.ok(p?.applied, `policy ${name} in force: ${JSON.stringify(p)}`);
  }
});

after(async () => {
  await gw?.kill('SIGKILL');
  await client.close();
  await Promise.all([...ups.values()].map((u) => u.close()));
  await consul?.destroy();
  if (policyDir) await rm(policyDir, { recursive: true, force: true });
});

describe('retries land on another endpoint', () => {
  test('an instance answering 503 (statuses [503], attempts 1): every request gets 200 from the healthy one', async () => {
    const bad = up('r503-bad').hits;
    const retries = await metricValue('cgw_upstream_retries_total', 'service="r503"');
    const answers = await many('/r503', 10);
    assert.deepEqual(answers.map((a) => a.who), Array(10).fill('r503-good'));
    const badHits = up('r503-bad').hits - bad;
    assert.ok(badHits >= 4 && badHits <= 6, `round robin sends the failing instance about half the first attempts (got ${badHits})`);
    assert.equal((await metricValue('cgw_upstream_retries_total', 'service="r503"')) - retries, badHits);
  });

  test('an instance on a closed port (connect failure): every request gets 200 from the healthy one', async () => {
    const good = up('rconn-good').hits;
    const retries = await metricValue('cgw_upstream_retries_total', 'service="rconn"');
    const answers = await many('/rconn', 10);
    assert.deepEqual(answers.map((a) => a.who), Array(10).fill('rconn-good'));
    assert.equal(up('rconn-good').hits - good, 10);
    assert.ok((await metricValue('cgw_upstream_retries_total', 'service="rconn"')) - retries >= 4, 'connect failures were retried');
  });

  test('POST with a body is not retried on 503 by default, but is with nonIdempotent: true (body buffered and sent in full)', async () => {
    const bad = up('r503-bad');
    const good = up('r503-good');
    const body = 'x'.repeat(2000) + '-end';

    let before = bad.hits;
    const plain: Answer[] = [];
    for (let i = 0; i < 4; i++) plain.push(await call('/r503/echo', { method: 'POST', body }));
    assert.equal(bad.hits - before, 2, 'round robin: two POSTs met the failing instance');
    assert.deepEqual(plain.map((a) => a.status).sort(), [200, 200, 503, 503], 'the 503s were passed on, not retried');
    for (const a of plain.filter((x) => x.status === 200)) assert.equal(a.text, body);

    before = bad.hits;
    const goodBefore = good.hits;
    const retried: Answer[] = [];
    for (let i = 0; i < 4; i++) retried.push(await call('/r503post/echo', { method: 'POST', body }));
    assert.deepEqual(retried.map((a) => a.who), Array(4).fill('r503-good'));
    for (const a of retried) assert.equal(a.text, body, 'the healthy upstream received the whole body');
    assert.equal(bad.hits - before, 2, 'two POSTs met the failing instance first');
    assert.equal(good.hits - goodBefore, 4);
    const last = good.requests.slice(-4).map((r) => `${r.method} ${r.url}`);
    assert.deepEqual(last, Array(4).fill('POST /echo'), 'the route prefix is stripped, the method kept');
  });
});

describe('retry budget', () => {
  test('ratio 0, minPerSecond 1, every instance failing: attempts ≈ requests + 10, and exhaustion is counted', async () => {
    const names = ['budget-1', 'budget-2'];
    const before = hitsOf(names);
    const exhausted = await metricValue('cgw_retry_budget_exhausted_total', 'service="budget"');
    const n = 30;
    const answers = await many('/budget', n);
    assert.ok(answers.every((a) => a.status === 503), 'the upstream 503 is passed on once retries are refused');
    const attempts = hitsOf(names) - before;
    // Unbounded it would be n × 4 = 120. The budget allows max(0 × requests, 1/s × 10 s) = 10 retries.
    assert.ok(attempts >= n + 10 && attempts <= n + 12, `upstream attempts ${attempts} for ${n} requests`);
    const refused = (await metricValue('cgw_retry_budget_exhausted_total', 'service="budget"')) - exhausted;
    assert.ok(refused >= n - 4, `cgw_retry_budget_exhausted_total grew by ${refused}`);
  });
});

describe('outlier detection', () => {
  test('3 failures in a row eject the failing instance, no traffic reaches it while ejected, it returns after ~2 s', async () => {
    const bad = up('outl-bad');
    const ejections = await metricValue('cgw_outlier_ejections_total', 'service="outl"');
    const first = await many('/outl', 9);
    assert.equal(first.filter((a) => a.status === 503).length, 3, 'round robin: the failing instance answered 3 of 9');

    const rows = await admin<EndpointRow[]>('/v1/services/outl/endpoints');
    assert.deepEqual(rows.filter((r) => r.ejected).map((r) => r.id), ['outl-bad']);
    assert.equal((await metricValue('cgw_outlier_ejections_total', 'service="outl"')) - ejections, 1);
    assert.equal((await admin<ServiceRow[]>('/v1/services')).find((s) => s.name === 'outl')?.ejected, 1);
    const ejectedAt = Date.now();

    const hitsWhileEjected = bad.hits;
    const during = await many('/outl', 10);
    assert.deepEqual(new Set(during.map((a) => a.who)), new Set(['outl-1', 'outl-2']));
    assert.equal(bad.hits, hitsWhileEjected, 'no request reached the ejected instance');

    await waitFor(async () => !(await admin<EndpointRow[]>('/v1/services/outl/endpoints')).some((r) => r.ejected), {
      timeoutMs: 15_000,
      intervalMs: 100,
      message: 'outl-bad back in rotation',
    });
    const back = Date.now() - ejectedAt;
    assert.ok(back >= 1500, `returned after ${back} ms, baseEjection is 2 s`);
    const after = await many('/outl', 3);
    assert.equal(bad.hits - hitsWhileEjected, 1, 'it gets its share again');
    assert.equal(after.filter((a) => a.status === 503).length, 1);
  });
});

describe('circuit breaker', () => {
  test('opens after 5 failures, refuses without reaching the upstream, closes after a successful probe', async () => {
    const names = ['cb-1', 'cb-2'];
    const failing = await many('/cb', 5);
    assert.deepEqual(failing.map((a) => a.status), [500, 500, 500, 500, 500]);
    let hits = hitsOf(names);

    const refused = await many('/cb', 5);
    for (const a of refused) {
      assert.equal(a.status, 503);
      assert.equal(a.code, 'circuit_open');
      assert.ok(Number(a.headers['retry-after']) >= 1, `Retry-After ${String(a.headers['retry-after'])}`);
    }
    assert.equal(hitsOf(names), hits, 'no refused request reached the upstream');
    const row = (await admin<ServiceRow[]>('/v1/services')).find((s) => s.name === 'cb');
    assert.equal(row?.circuit?.state, 'open');
    assert.deepEqual((await admin<{ circuitsNotClosed: string[] }>('/v1/status')).circuitsNotClosed, ['cb']);
    assert.equal(await metricValue('cgw_circuit_state', 'service="cb"'), 1);

    // Still failing after openFor: the one probe fails and the circuit opens again at once.
    const failedProbe = await waitFor(
      async () => {
        const a = await call('/cb');
        return a.status === 500 ? a : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100, message: 'a probe went through after openFor' },
    );
    assert.match(failedProbe.who, /^500$/);
    assert.equal(hitsOf(names), hits + 1, 'one probe reached the upstream');
    const reopened = await call('/cb');
    assert.equal(reopened.code, 'circuit_open', 'a failed probe reopens the circuit');
    assert.equal((await admin<ServiceRow[]>('/v1/services')).find((s) => s.name === 'cb')?.circuit?.state, 'open');
    hits = hitsOf(names);

    for (const n of names) up(n).set({ status: 200 });
    const probe = await waitFor(
      async () => {
        const a = await call('/cb');
        return a.status === 200 ? a : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100, message: 'a successful probe after openFor' },
    );
    assert.match(probe.who, /^cb-[12]$/);
    assert.equal(hitsOf(names), hits + 1, 'exactly one request (the probe) reached the upstream');
    assert.equal((await admin<ServiceRow[]>('/v1/services')).find((s) => s.name === 'cb')?.circuit?.state, 'closed');
    assert.equal(await metricValue('cgw_circuit_state', 'service="cb"'), 0);
    assert.deepEqual((await admin<{ circuitsNotClosed: string[] }>('/v1/status')).circuitsNotClosed, []);
    assert.deepEqual((await many('/cb', 4)).map((a) => a.status), [200, 200, 200, 200]);
  });
});

describe('timeouts', () => {
  test('timeouts.responseHeaders 200ms with a 1 s upstream → 504 upstream_timeout in < 800 ms', async () => {
    // Three in a row: undici's own headersTimeout runs on ~500 ms ticks and would land anywhere in 500-1000 ms.
    for (let i = 0; i < 3; i++) {
      const a = await call('/slow-hdr');
      assert.equal(a.status, 504);
      assert.equal(a.code, 'upstream_timeout');
      assert.ok(a.ms < 800, `answered after ${Math.round(a.ms)} ms`);
      assert.ok(a.ms >= 150, `answered after ${Math.round(a.ms)} ms, before the timeout`);
    }
  });

  test('timeouts.request 300ms with a 1 s upstream → 504 upstream_timeout in < 800 ms', async () => {
    const a = await call('/slow-req');
    assert.equal(a.status, 504);
    assert.equal(a.code, 'upstream_timeout');
    assert.ok(a.ms < 800, `answered after ${Math.round(a.ms)} ms`);
    assert.ok(a.ms >= 250, `answered after ${Math.round(a.ms)} ms, before the timeout`);
  });

  test('retries on [timeout] land on the fast instance', async () => {
    const slow = up('mixed-slow').hits;
    const answers = await many('/mixed', 6);
    assert.deepEqual(answers.map((a) => a.who), Array(6).fill('mixed-fast'));
    assert.equal(up('mixed-slow').hits - slow, 3, 'round robin tried the slow instance first every other time');
    for (const a of answers) assert.ok(a.ms < 800, `answered after ${Math.round(a.ms)} ms`);
  });
});
