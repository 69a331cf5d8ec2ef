/**
 * Proxy throughput and latency: the same load straight to an upstream and through cgw, against a
 * real Consul agent on loopback. Prints figures; asserts nothing (machines differ).
 *
 *   npm run bench                 # defaults: 5 s per run, 32 concurrent requests
 *   BENCH_SECONDS=10 BENCH_CONCURRENCY=64 npm run bench
 */
import { createServer } from 'node:http';
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';
import { startConsul } from '../test/helpers/consul.ts';
import { startGateway } from '../test/helpers/gateway.ts';
import { listenOn } from '../src/core/net.ts';

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);

async function load(origin: string, path: string): Promise<{ rps: number; p50: number; p99: number; errors: number }> {
  const pool = new Pool(origin, { connections: concurrency, pipelining: 1 });
  const latencies: number[] = [];
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const t = performance.now();
      try {
        const res = await pool.request({ method: 'GET', path });
        await res.body.dump();
        if (res.statusCode !== 200) errors++;
      } catch {
        errors++;
      }
      latencies.push(performance.now() - t);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - started) / 1000;
  await pool.close();
  latencies.sort((a, b) => a - b);
  const pct = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0;
  return { rps: latencies.length / elapsed, p50: pct(0.5), p99: pct(0.99), errors };
}

const body = JSON.stringify({ hello: 'world', padding: 'x'.repeat(200) });
const upstream = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
const upstreamPort = await listenOn(upstream, '127.0.0.1', 0);
const consul = await startConsul();
try {
  await consul.register({ id: 'bench-1', name: 'bench', port: upstreamPort, tags: ['urlprefix-/bench'] });
  const gateway = await startGateway({ consul: consul.addr, args: ['--log-level', 'warn'] });
  try {
    await load(gateway.url, '/bench/warmup'); // JIT and connection warm-up, not reported
    const direct = await load(`http://127.0.0.1:${upstreamPort}`, '/bench/x');
    const proxied = await load(gateway.url, '/bench/x');
    const fmt = (r: typeof direct): string =>
      `${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  errors ${r.errors}`;
    console.log(`cgw proxy benchmark: ${seconds}s per run, ${concurrency} concurrent, 1 upstream, node ${process.version}`);
    console.log(`direct to upstream : ${fmt(direct)}`);
    console.log(`through cgw        : ${fmt(proxied)}`);
    console.log('(load generator, upstream, Consul and cgw share this machine\'s cores)');
  } finally {
    await gateway.kill('SIGTERM');
  }
} finally {
  await consul.destroy();
  upstream.close();
}
