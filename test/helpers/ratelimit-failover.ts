/**
 * The rate-limit failover story, told the same way for every highly available Redis (Cluster,
 * Sentinel): two gateways share one limit; the master holding the limit's keys is killed under
 * traffic; fail-open rules keep allowing, fail-closed rules answer 503 `rate_limiter_unavailable`,
 * no answer waits long; once a replica took over, the limit is shared again and the gateways
 * still serve and still follow Consul.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { Agent, request } from 'undici';
import { startConsul, type ConsulAgent } from './consul.ts';
import { startGateway, waitFor, type GatewayProcess } from './gateway.ts';
import { startUpstream, type Upstream } from './upstream.ts';

export interface HaRedis {
  /** Flags that point a gateway at it. */
  readonly gatewayArgs: string[];
  /** Every key matching a glob, over every live node. */
  keys(pattern: string): Promise<string[]>;
  /** The port of the master that holds `key` now. */
  masterOf(key: string): Promise<number>;
  /** A master that has a replica ready to take over. */
  failoverCandidate(): Promise<number>;
  /**
   * Make that master fail by PID, `kill` (SIGKILL: a crash, its sockets close) or `freeze`
   * (SIGSTOP: a hung host, its sockets stay open); calls `onFailing` just before the signal and
   * resolves, once a replica took over, with the new master's port.
   */
  failMaster(port: number, how: 'kill' | 'freeze', onFailing: () => void): Promise<number>;
  /** Output of every Redis process, for failure messages. */
  readonly logs: string[];
  stop(): Promise<void>;
}

const SHARED_LIMIT = 10;
/** Answers slower than this count as a gateway that waited on the dead master (decisions wait 100 ms). */
const SLOW_MS = 2000;
// Limits far above the traffic: during the failover only the fail mode decides.
const POLICIES: Record<string, unknown> = {
  'route-ha-shared': {
    appliesTo: { route: '/ha-shared' },
    rateLimits: [{ name: 'shared', by: 'header:x-client', limit: SHARED_LIMIT, window: '1m', failureMode: 'closed' }],
  },
  'route-ha-open': {
    appliesTo: { route: '/ha-open' },
    rateLimits: [{ name: 'open', by: 'header:x-client', limit: 100_000, window: '1m', failureMode: 'open' }],
  },
  'route-ha-closed': {
    appliesTo: { route: '/ha-closed' },
    rateLimits: [{ name: 'closed', by: 'header:x-client', limit: 100_000, window: '1m', failureMode: 'closed' }],
  },
};
const SERVICES = ['ha-shared', 'ha-open', 'ha-closed'] as const;

interface Answer {
  status: number;
  /** performance.now() when the answer came. */
  at: number;
  code: string | undefined;
  remaining: string | undefined;
  ms: number;
}

export function rateLimitFailoverSuite(label: string, startStore: () => Promise<HaRedis>): void {
  let store: HaRedis;
  let consul: ConsulAgent;
  let gwA: GatewayProcess;
  let gwB: GatewayProcess;
  let policyDir: string;
  const ups = new Map<string, Upstream>();
  const client = new Agent({ keepAliveTimeout: 2000, connections: 8 });

  async function call(gw: GatewayProcess, path: string, clientId: string): Promise<Answer> {
    const started = performance.now();
    const r = await request(`${gw.url}${path}`, { dispatcher: client, headers: { 'x-client': clientId }, headersTimeout: 15_000, bodyTimeout: 15_000 });
    const text = await r.body.text();
    const ms = performance.now() - started;
    const code = r.statusCode === 200 ? undefined : (JSON.parse(text) as { error?: { code?: string } }).error?.code;
    const remaining = r.headers['ratelimit-remaining'];
    return { status: r.statusCode, at: performance.now(), code, remaining: Array.isArray(remaining) ? remaining[0] : remaining, ms };
  }

  async function backendOf(gw: GatewayProcess): Promise<string> {
    const s = (await (await request(`${gw.adminUrl}/v1/status`, { dispatcher: client })).body.json()) as { rateLimiter: { backend: string } };
    return s.rateLimiter.backend;
  }

  /** `n` requests alternating between the gateways (A first), one after the other. */
  async function alternate(path: string, clientId: string, n: number): Promise<Answer[]> {
    const out: Answer[] = [];
    for (let i = 0; i < n; i++) out.push(await call(i % 2 === 0 ? gwA : gwB, path, clientId));
    return out;
  }

  /**
   * The Redis key of a route's rule for a client (README: `cgw:rl:{<scope>:<rule>:<subject>}`).
   * The first test checks it against Redis; the high-limit routes' keys expire within a
   * millisecond, so they cannot be looked up there.
   */
  const keyOf = (path: string, rule: string) => (clientId: string): string => `cgw:rl:{route:${path}:${rule}:h:${clientId}}`;

  /** A client id whose key on `path` lives on the master `port` (always the master for Sentinel). */
  async function clientOn(template: (clientId: string) => string, prefix: string, port: number): Promise<string> {
    for (let i = 0; i < 200; i++) {
      const id = `${prefix}-${i}`;
      if ((await store.masterOf(template(id))) === port) return id;
    }
    throw new Error(`no client id of ${prefix} hashes to the master on ${port}`);
  }

  /** What the gateways said about Redis, for failure messages. */
  const limiterLogs = (): string =>
    [
      ...[gwA, gwB].flatMap((gw, i) => gw.logs.filter((l) => l.includes('rate limiter')).map((l) => `${i === 0 ? 'A' : 'B'} ${l}`)),
      ...store.logs.filter((l) => /switch-master|[+-][so]down|failover|FAIL/.test(l)).slice(-40),
    ].join('\n');

  async function expectShared(clientId: string): Promise<void> {
    const answers = await alternate('/ha-shared', clientId, SHARED_LIMIT + 6);
    assert.deepEqual(
      answers.map((a) => a.status),
      [...Array<number>(SHARED_LIMIT).fill(200), ...Array<number>(6).fill(429)],
      `${clientId}: the first ${SHARED_LIMIT} over both gateways pass, the rest are limited\n${limiterLogs()}`,
    );
    assert.deepEqual(
      answers.slice(0, SHARED_LIMIT).map((a) => a.remaining),
      Array.from({ length: SHARED_LIMIT }, (_, i) => String(SHARED_LIMIT - 1 - i)),
      'one counter, counting down across both gateways',
    );
    assert.ok(answers.slice(SHARED_LIMIT).every((a) => a.code === 'rate_limited'));
  }

  before(async () => {
    policyDir = await mkdtemp(join(tmpdir(), 'cgw-ratelimit-ha-'));
    await Promise.all(Object.entries(POLICIES).map(([name, doc]) => writeFile(join(policyDir, `${name}.json`), JSON.stringify(doc))));
    [store, consul] = await Promise.all([startStore(), startConsul()]);
    await Promise.all(
      SERVICES.map(async (name) => {
        const u = await startUpstream(name);
        ups.set(name, u);
        await consul.register({ id: `${name}-1`, name, port: u.port, tags: [`urlprefix-/${name}`] });
      }),
    );
    const args = ['--policies', policyDir, ...store.gatewayArgs];
    [gwA, gwB] = await Promise.all([startGateway({ consul: consul.addr, args }), startGateway({ consul: consul.addr, args })]);
    for (const gw of [gwA, gwB]) {
      await waitFor(
        async () => {
          const routes = (await (await request(`${gw.adminUrl}/v1/routes`)).body.json()) as Array<{ route: string; endpointsHealthy: number }>;
          return SERVICES.every((s) => routes.find((r) => r.route === `/${s}`)?.endpointsHealthy === 1) && (await backendOf(gw)) === 'redis';
        },
        { timeoutMs: 30_000, message: 'routes in force and the rate limiter on Redis' },
      );
    }
  });

  after(async () => {
    await Promise.all([gwA?.kill('SIGKILL'), gwB?.kill('SIGKILL')]);
    await client.close();
    await Promise.all([...ups.values()].map((u) => u.close()));
    await consul?.destroy();
    await store?.stop();
    if (policyDir) await rm(policyDir, { recursive: true, force: true });
  });

  test(`${label}: two gateways share one limit`, async () => {
    await expectShared('before-1');
    assert.deepEqual(await store.keys('cgw:rl:*before-1*'), [keyOf('/ha-shared', 'shared')('before-1')], 'the key the failover test aims at');
    await expectShared('before-2');
  });

  /**
   * Traffic on both gateways, to a fail-open and a fail-closed rule whose keys live on the master
   * that fails; then the checks a user would make once a replica took over.
   */
  async function failoverUnderTraffic(t: TestContext, how: 'kill' | 'freeze'): Promise<void> {
    const closedKey = keyOf('/ha-closed', 'closed');
    const openKey = keyOf('/ha-open', 'open');
    const sharedKey = keyOf('/ha-shared', 'shared');
    const victim = await store.failoverCandidate();
    const closedClient = await clientOn(closedKey, `load-${how}`, victim);
    const openClient = await clientOn(openKey, `load-${how}`, victim);

    // A failover of an earlier test may still be settling in one gateway (a reconnect to the
    // promoted master): this one starts from both on Redis.
    // Sentinels announce +switch-master at different times (the last one at the failover's end),
    // and each makes the client reconnect: three rounds in a row of Redis decisions (200 or 429,
    // never 503) on both gateways, for a client of its own, say the last reconnect is over.
    let settled = 0;
    await waitFor(
      async () => {
        const answers = await Promise.all([gwA, gwB].map((gw) => call(gw, '/ha-closed', `settle-${how}`)));
        settled = answers.every((a) => a.status !== 503) && (await backendOf(gwA)) === 'redis' && (await backendOf(gwB)) === 'redis' ? settled + 1 : 0;
        return settled >= 3 ? true : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 250, message: `both gateways on Redis before the master fails\n${limiterLogs()}` },
    );
    const closedHitsBefore = ups.get('ha-closed')?.hits ?? 0;
    const open: Answer[] = [];
    const closed: Answer[] = [];
    let stop = false;
    /** Answers collected before the signal went out: all of them came from a healthy master. */
    let killedAt = -1;
    let failedMs = 0;
    const traffic = (async () => {
      for (let i = 0; !stop; i++) {
        const gw = i % 2 === 0 ? gwA : gwB;
        const [o, c] = await Promise.all([call(gw, '/ha-open', openClient), call(gw, '/ha-closed', closedClient)]);
        open.push(o);
        closed.push(c);
      }
    })();
    let promoted: number;
    try {
      await waitFor(() => closed.length >= 10, { timeoutMs: 15_000, message: 'traffic flowing before the kill' });
      assert.deepEqual([...new Set(closed.map((a) => a.status))], [200], `all allowed before the kill\n${limiterLogs()}`);
      promoted = await store.failMaster(victim, how, () => {
        killedAt = closed.length;
        failedMs = performance.now();
      });
      t.diagnostic(`master ${victim} (${how}) failed after ${killedAt} requests per route; ${promoted} took over`);
      // Recovered: both gateways decide on Redis again for the fail-closed rule.
      const settledFrom = closed.length;
      await waitFor(
        () => {
          const recent = closed.slice(settledFrom);
          return recent.length >= 10 && recent.slice(-6).every((a) => a.status === 200);
        },
        { timeoutMs: 60_000, intervalMs: 100, message: 'fail-closed answers 200 on both gateways again' },
      );
    } finally {
      stop = true;
      await traffic;
    }

    const slow = [...open, ...closed].filter((a) => a.ms >= SLOW_MS);
    assert.deepEqual(slow.map((a) => Math.round(a.ms)), [], 'no request waited on the dead master');
    assert.deepEqual([...new Set(open.map((a) => a.status))], [200], 'fail open: every request allowed, during the failover too');
    const refused = closed.filter((a) => a.status !== 200);
    const lastRefused = refused.at(-1);
    if (lastRefused) t.diagnostic(`fail-closed refused ${refused.length} requests; served from Redis again ${Math.round(lastRefused.at - failedMs)} ms after the master failed`);
    assert.ok(refused.length > 0, 'fail closed: the failover was noticed');
    assert.deepEqual([...new Set(refused.map((a) => `${a.status} ${a.code}`))], ['503 rate_limiter_unavailable'], 'fail closed answers 503 while no master holds the key');
    assert.ok(closed.slice(0, killedAt).every((a) => a.status === 200), 'nothing refused before the kill');
    assert.equal((ups.get('ha-closed')?.hits ?? 0) - closedHitsBefore, closed.filter((a) => a.status === 200).length, 'refused requests never reached the upstream');

    // The promoted replica now holds the key space of the dead master; the limit is one again.
    await waitFor(async () => (await backendOf(gwA)) === 'redis' && (await backendOf(gwB)) === 'redis', {
      timeoutMs: 30_000,
      message: 'both gateways report the Redis backend',
    });
    await expectShared(await clientOn(sharedKey, `after-${how}`, promoted));

    for (const gw of [gwA, gwB]) assert.equal((await request(`${gw.adminUrl}/-/readyz`, { dispatcher: client })).statusCode, 200);
    const newService = `ha-new-${how}`;
    const fresh = await startUpstream(newService);
    ups.set(newService, fresh);
    await consul.register({ id: `${newService}-1`, name: newService, port: fresh.port, tags: [`urlprefix-/${newService}`] });
    for (const gw of [gwA, gwB]) {
      await waitFor(async () => (await request(`${gw.url}/${newService}`, { dispatcher: client }).then(async (r) => (await r.body.text(), r.statusCode))) === 200, {
        timeoutMs: 20_000,
        message: 'a service registered after the failover is routed',
      });
    }
  }

  test(`${label}: the master holding the keys killed under traffic → fail open allows, fail closed answers 503, nothing hangs; after the failover the limit is shared again and the gateways follow Consul`, (t) =>
    failoverUnderTraffic(t, 'kill'));

  test(`${label}: the master holding the keys hangs with its connections open (SIGSTOP) → the same, and the gateways move to the promoted replica`, (t) =>
    failoverUnderTraffic(t, 'freeze'));
}
