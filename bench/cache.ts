/**
 * What the response cache saves: the same load against the upstream directly (the reference),
 * through cgw on a route without a cache policy, and through cgw on a route whose service has
 * `cache: {ttl: 60s}` (every request after the first is a hit). The upstream spends
 * BENCH_UPSTREAM_MS (default 5) per answer, standing in for a backend's own work. Prints figures;
 * asserts nothing (machines differ).
 *
 *   npm run bench:cache
 *   BENCH_SECONDS=10 BENCH_UPSTREAM_MS=20 npm run bench:cache
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { load, formatRun, concurrency, seconds } from './load.ts';
import { startConsul } from '../test/helpers/consul.ts';
import { startGateway } from '../test/helpers/gateway.ts';
import { listenOn } from '../src/core/net.ts';

const upstreamMs = Number(process.env.BENCH_UPSTREAM_MS ?? 5);
const body = JSON.stringify({ hello: 'world', padding: 'x'.repeat(2000) });
let upstreamRequests = 0;
const upstream = createServer((_req, res) => {
  upstreamRequests++;
  setTimeout(() => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }, upstreamMs);
});
const upstreamPort = await listenOn(upstream, '127.0.0.1', 0);
const policies = mkdtempSync(join(tmpdir(), 'cgw-bench-cache-'));
writeFileSync(join(policies, 'cached.yaml'), 'appliesTo: {service: cached}\ncache:\n  ttl: 60s\n');
const consul = await startConsul();
try {
  await consul.register({ id: 'plain-1', name: 'plain', port: upstreamPort, tags: ['urlprefix-/plain'] });
  await consul.register({ id: 'cached-1', name: 'cached', port: upstreamPort, tags: ['urlprefix-/cached'] });
  console.log(`cgw cache benchmark: ${seconds}s per run, ${concurrency} concurrent, upstream answers in ${upstreamMs} ms, node ${process.version}, access log off`);
  const direct = `http://127.0.0.1:${upstreamPort}`;
  await load(direct, '/warmup');
  console.log(`upstream directly       : ${formatRun(await load(direct, '/x'))}`);
  const gateway = await startGateway({ consul: consul.addr, args: ['--log-level', 'warn', '--no-access-log', '--policies', policies] });
  try {
    await load(gateway.url, '/plain/warmup');
    console.log(`cgw, no cache policy    : ${formatRun(await load(gateway.url, '/plain/x'))}`);
    await load(gateway.url, '/cached/x'); // fills the entry and warms up
    const before = upstreamRequests;
    console.log(`cgw, cache hits         : ${formatRun(await load(gateway.url, '/cached/x'))}  (upstream asked ${upstreamRequests - before} times)`);
  } finally {
    await gateway.kill('SIGTERM');
  }
  console.log("(load generator, upstream, Consul and cgw share this machine's cores)");
} finally {
  await consul.destroy();
  upstream.close();
  rmSync(policies, { recursive: true, force: true });
}
