/**
 * Proxy throughput and latency: the same load straight to an upstream and through cgw, against a
 * real Consul agent on loopback. Prints figures; asserts nothing (machines differ).
 *
 *   npm run bench                 # defaults: 5 s per run, 32 concurrent requests
 *   BENCH_SECONDS=10 BENCH_CONCURRENCY=64 npm run bench
 */
import { createServer } from 'node:http';
import { load, formatRun, concurrency, seconds } from './load.ts';
import { startConsul } from '../test/helpers/consul.ts';
import { startGateway } from '../test/helpers/gateway.ts';
import { listenOn } from '../src/core/net.ts';

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
    const fmt = formatRun;
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
