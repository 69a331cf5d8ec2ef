/**
 * Resilience of the real gateway: a Consul outage (routing continues from the last state, watches
 * report failing, readiness holds), Consul's return (watches recover by themselves and new changes
 * flow again), and SIGTERM with a request in flight (drained, new connections refused, exit 0).
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
const gateways: GatewayProcess[] = [];
let stopping = false;
const ups = new Map<string, Upstream>();
const client = new Agent({ keepAliveTimeout: 10_000, connections: 4 });

function reportCrash(g: GatewayProcess, label: string, expectExit: () => boolean = () => false): void {
  void g.exited.then((code) => {
    if (!stopping && !expectExit()) process.stderr.write(`\n${label} exited unexpectedly (code ${code}); last log lines:\n${g.logs.slice(-30).join('\n')}\n`);
  });
}

async function upstream(name: string, opts: { delayMs?: number } = {}): Promise<Upstream> {
  const u = await startUpstream(name, opts);
  ups.set(name, u);
  return u;
}

async function sample(base: string, path: string, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await request(`${base}${path}`, { dispatcher: client, headersTimeout: 10_000, bodyTimeout: 10_000 });
    await r.body.text();
    out.push(r.statusCode === 200 ? String(r.headers['x-upstream']) : String(r.statusCode));
  }
  return out;
}

interface Status {
  ready: boolean;
  consul: { watches: number; watchesFailing: Array<{ name: string; error: string | null; consecutiveErrors: number }> };
}

async function status(g: GatewayProcess): Promise<Status> {
  const r = await runCli(['status', '--json', '--admin', g.adminUrl]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

/** Status straight from the admin API: cheaper than the CLI inside polling loops. */
async function adminStatus(g: GatewayProcess): Promise<Status> {
  return (await (await fetch(`${g.adminUrl}/v1/status`)).json()) as Status;
}

before(async () => {
  consul = await startConsul();
  await consul.register({ id: 'web-1', name: 'web', port: (await upstream('web-1')).port, tags: ['urlprefix-/web'] });
  await consul.register({ id: 'web-2', name: 'web', port: (await upstream('web-2')).port, tags: ['urlprefix-/web'] });
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s'] });
  gateways.push(gw);
  reportCrash(gw, 'gateway');
});

after(async () => {
  stopping = true;
  await Promise.all(gateways.map((g) => g.kill('SIGKILL')));
  await client.close();
  await Promise.all([...ups.values()].map((u) => u.close()));
  await consul?.destroy();
});

describe('Consul outage', () => {
  test('Consul stopped → routing continues from the last state, watches report failing, readyz stays 200', async () => {
    assert.deepEqual(new Set(await sample(gw.url, '/web', 4)), new Set(['web-1', 'web-2']));
    await consul.stop();

    const s = await waitFor(
      async () => {
        const st = await adminStatus(gw);
        return st.consul.watchesFailing.length > 0 ? st : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 100, message: 'watches reported failing' },
    );
    const names = s.consul.watchesFailing.map((w) => w.name);
    assert.ok(names.includes('catalog'), `failing watches: ${names.join(', ')}`);
    assert.ok(s.consul.watchesFailing.every((w) => (w.error ?? '').length > 0 && w.consecutiveErrors > 0));

    const viaCli = await status(gw);
    assert.ok(viaCli.consul.watchesFailing.length > 0, 'cgw status --json lists failing watches');
    assert.equal(viaCli.ready, true);

    const ready = await fetch(`${gw.adminUrl}/-/readyz`);
    assert.equal(ready.status, 200);

    const who = await sample(gw.url, '/web', 20);
    assert.equal(who.filter((w) => w === 'web-1').length, 10, who.join());
    assert.equal(who.filter((w) => w === 'web-2').length, 10, who.join());

    const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(text, /^cgw_watch_errors_total\{watch="catalog"\} [1-9]/m);
  });

  test('routing still holds after several failed retries', async () => {
    const before = (await adminStatus(gw)).consul.watchesFailing.find((w) => w.name === 'catalog')?.consecutiveErrors ?? 0;
    await waitFor(
      async () => ((await adminStatus(gw)).consul.watchesFailing.find((w) => w.name === 'catalog')?.consecutiveErrors ?? 0) > before,
      { timeoutMs: 30_000, intervalMs: 200, message: 'another failed retry' },
    );
    assert.deepEqual(new Set(await sample(gw.url, '/web', 6)), new Set(['web-1', 'web-2']));
    assert.equal((await fetch(`${gw.adminUrl}/-/readyz`)).status, 200);
  });

  test('Consul started again → watches recover by themselves and new changes are reflected', async () => {
    await consul.start();
    await waitFor(async () => (await adminStatus(gw)).consul.watchesFailing.length === 0, {
      timeoutMs: 30_000,
      intervalMs: 200,
      message: 'no failing watches after Consul returned',
    });
    assert.deepEqual((await status(gw)).consul.watchesFailing, []);

    // After a restart, TTL checks whose state was never updated through the TTL endpoint come
    // back critical (Consul persists only updated TTL state), so set both to a known state first.
    await consul.setCheck('web-1', 'passing');
    await consul.setCheck('web-2', 'passing');
    await waitFor(async () => new Set(await sample(gw.url, '/web', 6)).size === 2, { timeoutMs: 15_000, message: 'web-1 and web-2 routed after the restart' });

    // Changes made after the restart: a new instance, and a check flip.
    await consul.register({ id: 'web-3', name: 'web', port: (await upstream('web-3')).port, tags: ['urlprefix-/web'] });
    await waitFor(async () => (await sample(gw.url, '/web', 6)).includes('web-3'), { timeoutMs: 15_000, message: 'web-3 routed after the restart' });
    await consul.setCheck('web-1', 'critical');
    await waitFor(async () => !(await sample(gw.url, '/web', 6)).includes('web-1'), { timeoutMs: 15_000, message: 'web-1 dropped after the restart' });
    assert.deepEqual(new Set(await sample(gw.url, '/web', 6)), new Set(['web-2', 'web-3']));
    await consul.setCheck('web-1', 'passing');
  });
});

/** One request on its own connection; resolves with status and body, rejects on a socket error. */
function slowRequest(base: string, path: string): Promise<{ status: number; body: string; connection: string | undefined }> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection }));
      res.once('error', reject);
    });
    req.once('error', reject);
    req.end();
  });
}

/** Resolves true when a new TCP connection is refused, false when it is accepted. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

describe('SIGTERM', () => {
  const DELAY_MS = 1500;
  const DRAIN_MS = 10_000;

  test('an in-flight request completes with 200, new connections are refused, exit code 0 within the drain bound', async () => {
    const slow = await upstream('slow-1', { delayMs: DELAY_MS });
    await consul.register({ id: 'slow-1', name: 'slow', port: slow.port, tags: ['urlprefix-/slow'] });
    const g = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--drain-timeout', `${DRAIN_MS}ms`] });
    gateways.push(g);
    let signalled = false;
    reportCrash(g, 'draining gateway', () => signalled);
    await waitFor(async () => (await fetch(`${g.adminUrl}/v1/routes`).then((r) => r.json() as Promise<Array<{ route: string }>>)).some((r) => r.route === '/slow'), {
      timeoutMs: 15_000,
      message: '/slow routed',
    });

    const inFlight = slowRequest(g.url, '/slow/work');
    let settled = false;
    void inFlight.then(
      () => (settled = true),
      () => (settled = true),
    );
    await waitFor(() => slow.hits === 1, { timeoutMs: 15_000, message: 'slow request reached the upstream' });

    const t0 = Date.now();
    signalled = true;
    const exitCode = g.kill('SIGTERM', DRAIN_MS + 10_000);

    // Whether this happened while the request was still in flight is the assertion right below.
    await waitFor(() => refused(g.listenPort), { timeoutMs: 10_000, intervalMs: 20, message: 'new connections refused while draining' });
    assert.equal(settled, false, 'the in-flight request ended before new connections were refused');

    const res = await inFlight;
    assert.equal(res.status, 200);
    assert.equal((JSON.parse(res.body) as { upstream: string; url: string }).url, '/slow/work');
    assert.ok(Date.now() - t0 >= DELAY_MS - 300, 'the response came before the upstream could have answered');

    assert.equal(await exitCode, 0, g.logs.slice(-20).join('\n'));
    const took = Date.now() - t0;
    assert.ok(took < DRAIN_MS, `exit took ${took} ms (drain bound ${DRAIN_MS} ms)`);
    assert.equal(await refused(g.listenPort), true);
  });

  test('the drain is bounded: a request longer than --drain-timeout is cut and the process still exits', async () => {
    const stuck = await upstream('stuck-1', { delayMs: 30_000 });
    await consul.register({ id: 'stuck-1', name: 'stuck', port: stuck.port, tags: ['urlprefix-/stuck'] });
    const g = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--drain-timeout', '500ms'] });
    gateways.push(g);
    let signalled = false;
    reportCrash(g, 'bounded-drain gateway', () => signalled);
    const inFlight = slowRequest(g.url, '/stuck').then(
      (r) => `status ${r.status}`,
      (err: NodeJS.ErrnoException) => `error ${err.code ?? err.message}`,
    );
    await waitFor(() => stuck.hits === 1, { timeoutMs: 15_000, message: 'request reached the stuck upstream' });
    const t0 = Date.now();
    signalled = true;
    // Escalation to SIGKILL (exit code null) would mean the bound was not honoured.
    const code = await g.kill('SIGTERM', 8000);
    const took = Date.now() - t0;
    assert.notEqual(code, null, 'the gateway had to be SIGKILLed');
    assert.ok(took < 5000, `exit took ${took} ms with --drain-timeout 500ms`);
    // The README documents exit 1 when requests had to be cut.
    assert.equal(code, 1);
    assert.match(await inFlight, /^error /);
  });
});

describe('clients that hang up', () => {
  test('a client disconnecting mid-request (GET, and POST with a body) does not take the gateway down', async () => {
    const slow = await upstream('hangup-1', { delayMs: 1000 });
    await consul.register({ id: 'hangup-1', name: 'hangup', port: slow.port, tags: ['urlprefix-/hangup'] });
    const g = await startGateway({ consul: consul.addr, args: ['--wait', '5s'] });
    gateways.push(g);
    reportCrash(g, 'hang-up gateway');
    const url = new URL('/hangup/x', g.url);
    for (const [method, body] of [['GET', undefined], ['POST', 'hello']] as const) {
      const hitsBefore = slow.hits;
      const req = httpRequest({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method,
        agent: false,
        headers: body === undefined ? {} : { 'content-type': 'text/plain', 'content-length': String(body.length) },
      });
      req.once('error', () => undefined);
      req.end(body);
      await waitFor(() => slow.hits > hitsBefore, { timeoutMs: 15_000, message: `${method} reached the upstream` });
      req.destroy();
      // The gateway notices the hang-up and finishes its bookkeeping for that request; then it
      // must still be serving.
      await waitFor(async () => (await fetch(`${g.adminUrl}/v1/services/hangup/endpoints`).then((r) => r.json() as Promise<Array<{ inflight: number }>>))[0]?.inflight === 0, {
        timeoutMs: 15_000,
        message: `${method} request released`,
      });
      const r = await slowRequest(g.url, '/hangup/after');
      assert.equal(r.status, 200, `${method} hang-up: next request answered ${r.status}`);
    }
    assert.equal((await fetch(`${g.adminUrl}/-/healthz`)).status, 200);
  });
});
