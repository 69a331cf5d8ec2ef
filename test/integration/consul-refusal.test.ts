/**
 * Restarts in a row against an agent with a low per-client connection limit. Consul 1.8 counts a
 * killed gateway's parked blocking queries against `limits.http_max_conns_per_client` until they
 * return (up to `wait` × 17/16), so gateways killed one after another pile up orphaned connections
 * until the next one is refused. It must say so (`consul.refusing` in /v1/status,
 * `cgw_consul_refusals_total`, the watch's error text), back off without hammering the agent, and
 * become ready by itself once the orphans are gone.
 *
 * Numbers: the agent allows 30 connections from 127.0.0.1 (this file's own Consul calls included).
 * Each gateway routes 10 services with per-service watches (`--consul-max-conns 24`: 16 watch
 * slots), so it parks 12 blocking queries (10 health, catalog, KV): two killed gateways leave 24
 * orphans, and a third gateway cannot get its 12 connections until the older ones return.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';

const LIMIT = 30;
const SERVICES = 10;
const MAX_CONNS = 24;
/**
 * Long enough that a killed gateway's parked queries outlive the start of the next two: on a busy
 * machine a gateway takes about 4 s to be ready, and with 8 s the queries of the one before had
 * mostly returned by then, so no incarnation was ever refused.
 */
const WAIT_S = 15;
/** Gateways killed before the one that must cope with the refusals. */
const MIN_KILLS = 2;
const MAX_INCARNATIONS = 6;
const READY_DEADLINE_MS = WAIT_S * 1000 * (17 / 16) + 30_000;
const REFUSED_TEXT = 'Consul refused the connection (per-client connection limit, http_max_conns_per_client?)';

interface Refusing {
  since: string;
  count: number;
  lastAt: string;
  waiting: number;
}
interface StatusBody {
  ready: boolean;
  consul: { healthMode: string; routedServices: number; refusing: Refusing | null };
}
interface WatchesBody {
  watches: { name: string; lastError: string | null; state: string }[];
  refusing: Refusing | null;
}

let consul: ConsulAgent;
const gateways: GatewayProcess[] = [];

async function json<T>(url: string): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200, url);
  return (await res.json()) as T;
}

async function refusalCounter(gw: GatewayProcess): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  const line = text.split('\n').find((l) => l.startsWith('cgw_consul_refusals_total '));
  return Number(line?.split(' ')[1] ?? NaN);
}

interface Observed {
  readyAfterMs: number;
  /** First /v1/status that showed consul.refusing, with what was read right after it. */
  refusing?: { atMs: number; status: StatusBody; watches: WatchesBody; counter: number; cli: ReturnType<typeof runCli> };
}

/** Polls a starting gateway until it is ready, recording what it reported while Consul refused it. */
async function observe(gw: GatewayProcess, startedAt: number): Promise<Observed> {
  const deadline = startedAt + READY_DEADLINE_MS;
  let refusing: Observed['refusing'];
  for (;;) {
    try {
      if (!refusing) {
        const status = await json<StatusBody>(`${gw.adminUrl}/v1/status`);
        if (status.consul.refusing) {
          const atMs = Date.now() - startedAt;
          // `cgw status` takes a second to start: it reads the status while this loop goes on.
          const cli = runCli(['status', '--admin', gw.adminUrl]);
          void cli.catch(() => undefined); // awaited (and so reported) by the test
          const [watches, counter] = await Promise.all([json<WatchesBody>(`${gw.adminUrl}/v1/watches`), refusalCounter(gw)]);
          refusing = { atMs, status, watches, counter, cli };
        }
      }
      const ready = await fetch(`${gw.adminUrl}/-/readyz`, { signal: AbortSignal.timeout(5000) });
      await ready.body?.cancel();
      if (ready.status === 200) return { readyAfterMs: Date.now() - startedAt, refusing };
    } catch {
      // admin listener not up yet
    }
    if (Date.now() > deadline) {
      throw new Error(`gateway not ready ${READY_DEADLINE_MS} ms after start\n${gw.logs.slice(-40).join('\n')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  consul = await startConsul({ config: [`limits { http_max_conns_per_client = ${LIMIT} }`] });
  for (let i = 0; i < SERVICES; i++) {
    await consul.register({ id: `svc${i}-1`, name: `svc${i}`, port: 20_000 + i, tags: [`urlprefix-/svc${i}`], check: false });
  }
});

after(async () => {
  await Promise.all(gateways.map((g) => g.kill('SIGKILL')));
  await consul?.destroy();
});

test('gateways killed in a row: the next one is refused, says so, and becomes ready by itself', async (t) => {
  const args = ['--wait', `${WAIT_S}s`, '--consul-max-conns', String(MAX_CONNS)];
  const timings: string[] = [];
  let final: { gw: GatewayProcess; observed: Observed; refusing: NonNullable<Observed['refusing']>; startedAt: number } | undefined;

  for (let i = 1; i <= MAX_INCARNATIONS && !final; i++) {
    const startedAt = Date.now();
    const gw = await startGateway({ consul: consul.addr, args, waitReady: false });
    gateways.push(gw);
    const observed = await observe(gw, startedAt);
    timings.push(
      `#${i}: ready after ${observed.readyAfterMs} ms${observed.refusing ? ` (refused from ${observed.refusing.atMs} ms, ${observed.refusing.counter} refusals by then)` : ''}`,
    );
    if (i > MIN_KILLS && observed.refusing) {
      final = { gw, observed, refusing: observed.refusing, startedAt };
      break;
    }
    // Ready: its blocking queries are parked. Killed, it leaves them to the agent until they return.
    const status = await json<StatusBody>(`${gw.adminUrl}/v1/status`);
    assert.equal(status.consul.healthMode, 'per-service');
    assert.equal(await gw.kill('SIGKILL'), null);
  }
  t.diagnostic(timings.join('; '));
  if (process.env.CGW_TEST_TIMINGS) console.log(timings.join('\n'));
  assert.ok(final, `no gateway was refused in ${MAX_INCARNATIONS} incarnations: ${timings.join('; ')}`);

  // While refused: the status, the watch list and the metric say so.
  const { gw, observed, refusing, startedAt } = final;
  const r = refusing.status.consul.refusing;
  assert.ok(r && r.count >= 1 && r.waiting >= 1, JSON.stringify(r));
  assert.ok(!Number.isNaN(Date.parse(r.since)) && Date.parse(r.lastAt) >= Date.parse(r.since), JSON.stringify(r));
  assert.ok(refusing.counter >= 1, `cgw_consul_refusals_total ${refusing.counter}`);
  const refusedWatches = refusing.watches.watches.filter((w) => w.lastError?.startsWith(REFUSED_TEXT));
  assert.ok(
    refusedWatches.length >= 1 || refusing.watches.refusing === null,
    `no watch reports the refusal: ${JSON.stringify(refusing.watches.watches.map((w) => [w.name, w.state, w.lastError]))}`,
  );

  const human = await refusing.cli;
  // Printed unless the refusals were over by the time the CLI asked (it is ready then); `cgw
  // status` exits 1 while the gateway is not ready, 0 once it is.
  const ready = /^ready: +yes/m.test(human.stdout);
  assert.equal(human.code, ready ? 0 : 1, human.stderr);
  assert.ok(/^refusing: +CONSUL REFUSES CONNECTIONS since .* refusals; per-client connection limit/m.test(human.stdout) || ready, human.stdout);

  // Ready within the deadline (asserted by observe), and no longer refusing.
  const after = await json<StatusBody>(`${gw.adminUrl}/v1/status`);
  assert.equal(after.ready, true);
  assert.equal(after.consul.routedServices, SERVICES);
  // Ready means every service has been read; a watch or two may still wait for Consul to free a
  // connection for its next blocking read, and the condition clears by itself once they get one.
  await waitFor(async () => (await json<StatusBody>(`${gw.adminUrl}/v1/status`)).consul.refusing === null, {
    timeoutMs: (WAIT_S + 20) * 1000,
    message: 'consul.refusing clears once the killed gateways\' queries have returned',
  });
  const total = await refusalCounter(gw);
  // The gate sends one probe at a time: a handful of refusals per second at most, not one per
  // watch per retry (10 watches retrying on their own backoff would be refused about 40 times a
  // second).
  const seconds = (Date.now() - startedAt) / 1000;
  assert.ok(total <= 8 + 4 * seconds, `${total} refusals in ${seconds.toFixed(1)} s`);
  t.diagnostic(`final gateway: ready after ${observed.readyAfterMs} ms, refused from ${refusing.atMs} ms, ${total} refusals`);
  if (process.env.CGW_TEST_TIMINGS) console.log(`final gateway: ready after ${observed.readyAfterMs} ms, ${total} refusals`);

  const cli = await runCli(['status', '--admin', gw.adminUrl]);
  assert.equal(cli.code, 0, cli.stderr);
  assert.doesNotMatch(cli.stdout, /^refusing:/m, 'no refusal line once Consul accepts connections');
});
