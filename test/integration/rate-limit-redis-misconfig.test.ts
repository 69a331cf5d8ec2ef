/**
 * --redis-cluster or --redis-sentinels aimed at a plain Redis (a mistake that is easy to make and
 * that no flag check can catch): the gateway still starts and serves, fail-open rules count
 * locally, fail-closed ones answer 503 at once, the log says what is wrong, `cgw status` shows
 * the local backend, and Consul changes still apply.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startRedis, type RedisServer } from '../helpers/redis.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let redis: RedisServer;
let policyDir: string;
const gateways: GatewayProcess[] = [];
const ups: Upstream[] = [];

before(async () => {
  policyDir = await mkdtemp(join(tmpdir(), 'cgw-redis-misconfig-'));
  for (const mode of ['open', 'closed'] as const) {
    await writeFile(
      join(policyDir, `mis-${mode}.json`),
      JSON.stringify({ appliesTo: { service: `mis-${mode}` }, rateLimits: [{ name: mode, by: 'header:x-client', limit: 2, window: '1m', failureMode: mode }] }),
    );
  }
  [consul, redis] = await Promise.all([startConsul(), startRedis()]);
  for (const name of ['mis-open', 'mis-closed']) {
    const u = await startUpstream(name);
    ups.push(u);
    await consul.register({ id: `${name}-1`, name, port: u.port, tags: [`urlprefix-/${name}`] });
  }
});

after(async () => {
  await Promise.all(gateways.map((g) => g.kill('SIGKILL')));
  await Promise.all(ups.map((u) => u.close()));
  await consul?.destroy();
  await redis?.stop();
  if (policyDir) await rm(policyDir, { recursive: true, force: true });
});

const cases = [
  { flag: '--redis-cluster', reason: 'cluster support disabled' },
  { flag: '--redis-sentinels', reason: 'All sentinels are unreachable' },
] as const;

for (const { flag, reason } of cases) {
  test(`${flag} naming a plain Redis: the gateway serves with the local fallback and says why`, async () => {
    const gw = await startGateway({ consul: consul.addr, args: ['--policies', policyDir, flag, `127.0.0.1:${redis.port}`] });
    gateways.push(gw);
    for (const path of ['/mis-open', '/mis-closed']) {
      await waitFor(async () => {
        const r = await request(`${gw.url}${path}`, { headers: { 'x-client': 'route-check' } });
        await r.body.text();
        return r.statusCode !== 404;
      }, { timeoutMs: 20_000, message: `${path} routed` });
    }

    const status = (await (await request(`${gw.adminUrl}/v1/status`)).body.json()) as { rateLimiter: { backend: string } };
    assert.equal(status.rateLimiter.backend, 'local');
    assert.equal((await request(`${gw.adminUrl}/-/readyz`)).statusCode, 200);
    await waitFor(() => gw.logs.some((l) => l.includes('Redis unavailable') && l.includes(reason)), {
      timeoutMs: 15_000,
      message: `the log names the reason (${reason}):\n${gw.logs.filter((l) => l.includes('Redis')).join('\n')}`,
    });

    const answers = async (path: string): Promise<Array<{ status: number; code: string | undefined }>> => {
      const out: Array<{ status: number; code: string | undefined }> = [];
      for (let i = 0; i < 4; i++) {
        const started = performance.now();
        const r = await request(`${gw.url}${path}`, { headers: { 'x-client': 'c1' } });
        const text = await r.body.text();
        assert.ok(performance.now() - started < 2000, 'answered without waiting on Redis');
        out.push({ status: r.statusCode, code: r.statusCode === 200 ? undefined : (JSON.parse(text) as { error: { code: string } }).error.code });
      }
      return out;
    };
    assert.deepEqual((await answers('/mis-open')).map((a) => a.status), [200, 200, 429, 429], 'fail open: counted by this gateway');
    assert.deepEqual(
      (await answers('/mis-closed')).map((a) => `${a.status} ${a.code}`),
      Array<string>(4).fill('503 rate_limiter_unavailable'),
      'fail closed: refused',
    );

    // Consul changes still apply: a new service is routed.
    const fresh = await startUpstream(`new${flag}`);
    ups.push(fresh);
    const name = `mis-new${flag.replace(/-/g, '')}`;
    await consul.register({ id: `${name}-1`, name, port: fresh.port, tags: [`urlprefix-/${name}`] });
    await waitFor(async () => {
      const r = await request(`${gw.url}/${name}`);
      await r.body.text();
      return r.statusCode === 200;
    }, { timeoutMs: 20_000, message: 'a service registered now is routed' });
  });
}
