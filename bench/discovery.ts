/**
 * Discovery at scale: N routed services in a real Consul agent, one gateway with the default
 * connection budget. Prints time to ready, connections held, how long one health change takes to
 * reach routing, and how many Consul requests that change cost. No asserts.
 *
 *   node --import tsx bench/discovery.ts            # N=2000
 *   BENCH_SERVICES=500 node --import tsx bench/discovery.ts
 */
import { performance } from 'node:perf_hooks';
import { request } from 'undici';
import { startConsul } from '../test/helpers/consul.ts';
import { startGateway } from '../test/helpers/gateway.ts';

const services = Number(process.env.BENCH_SERVICES ?? 2000);
const consul = await startConsul();

async function put(path: string, body: unknown): Promise<void> {
  const res = await request(`${consul.addr}${path}`, { method: 'PUT', body: JSON.stringify(body) });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${path}: ${res.statusCode} ${text}`);
}

function registration(i: number, status: 'passing' | 'critical') {
  const name = `svc-${i}`;
  return {
    Node: 'bench-node',
    Address: '127.0.0.1',
    Service: { ID: `${name}-1`, Service: name, Port: 20000 + (i % 40000), Tags: [`urlprefix-/${name}`] },
    Check: { CheckID: `${name}-check`, Name: 'bench', Status: status, ServiceID: `${name}-1` },
  };
}

async function watchRequestTotal(adminUrl: string): Promise<number> {
  const view = (await (await request(`${adminUrl}/v1/watches`)).body.json()) as {
    watches: { requests: number }[];
    bulk: { fetches: number } | null;
  };
  return view.watches.reduce((sum, w) => sum + w.requests, 0) + (view.bulk?.fetches ?? 0);
}

async function until(check: () => Promise<boolean>, limitMs: number): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < limitMs) {
    if (await check()) return performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return Number.NaN;
}

try {
  const t0 = performance.now();
  for (let i = 0; i < services; i += 32) {
    await Promise.all(Array.from({ length: Math.min(32, services - i) }, (_, k) => put('/v1/catalog/register', registration(i + k, 'passing'))));
  }
  const registeredMs = performance.now() - t0;

  const t1 = performance.now();
  const gateway = await startGateway({ consul: consul.addr, args: ['--log-level', 'warn'], readyTimeoutMs: 120_000 });
  const readyMs = performance.now() - t1;
  try {
    const status = (await (await request(`${gateway.adminUrl}/v1/status`)).body.json()) as {
      consul: { healthMode: string; openConnections: number; healthWatchBudget: number };
      snapshot: { routes: number };
    };
    const target = `svc-${Math.floor(services / 2)}`;
    const routeStatus = async (): Promise<number> => {
      const res = await request(`${gateway.url}/${target}`, { headersTimeout: 5000 });
      await res.body.dump();
      return res.statusCode;
    };
    const before = await watchRequestTotal(gateway.adminUrl);
    await put('/v1/catalog/register', registration(Math.floor(services / 2), 'critical'));
    const flipMs = await until(async () => (await routeStatus()) === 503, 30_000);
    const cost = (await watchRequestTotal(gateway.adminUrl)) - before;

    console.log(`cgw discovery benchmark: ${services} routed services, Consul 1.8.7 on loopback, node ${process.version}`);
    console.log(`registered in Consul      : ${(registeredMs / 1000).toFixed(1)} s`);
    console.log(`gateway ready after       : ${(readyMs / 1000).toFixed(2)} s (${status.snapshot.routes} routes)`);
    console.log(`health mode               : ${status.consul.healthMode} (per-service budget ${status.consul.healthWatchBudget})`);
    console.log(`connections to Consul     : ${status.consul.openConnections}`);
    console.log(`one check → critical seen : ${flipMs.toFixed(0)} ms (write to 503 on its route)`);
    console.log(`Consul requests for it    : ${cost}`);
  } finally {
    await gateway.kill();
  }
} finally {
  await consul.destroy();
}
