/**
 * What the edge pipeline costs: the same load through cgw on a public route, an API-key route,
 * a JWT route (RS256, static key) and an API-key route with a Redis rate limit that never
 * refuses, against a real Consul and a real redis-server. Prints figures; asserts nothing.
 *
 *   node --import tsx bench/policies.ts
 *   BENCH_SECONDS=10 BENCH_CONCURRENCY=64 node --import tsx bench/policies.ts
 */
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, exportSPKI, generateKeyPair } from 'jose';
import { listenOn } from '../src/core/net.ts';
import { generateApiKey } from '../src/policy/consumers.ts';
import { startConsul } from '../test/helpers/consul.ts';
import { startGateway } from '../test/helpers/gateway.ts';
import { startRedis } from '../test/helpers/redis.ts';
import { concurrency, formatRun, load, seconds } from './load.ts';

const body = JSON.stringify({ hello: 'world', padding: 'x'.repeat(200) });
const upstream = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
const upstreamPort = await listenOn(upstream, '127.0.0.1', 0);

const { publicKey, privateKey } = await generateKeyPair('RS256');
const token = await new SignJWT({ scope: 'bench' }).setProtectedHeader({ alg: 'RS256' }).setSubject('bench-user').setIssuer('bench').setAudience('bench').setExpirationTime('1h').sign(privateKey);
const { key: apiKey, keyHash } = generateApiKey('bench');

const dir = mkdtempSync(join(tmpdir(), 'cgw-bench-'));
const policy = (name: string, doc: object): void => writeFileSync(join(dir, `${name}.json`), JSON.stringify(doc));
policy('key', { appliesTo: { route: '/key' }, auth: { methods: ['apiKey'] } });
policy('jwt', {
  appliesTo: { route: '/jwt' },
  auth: { methods: ['jwt'], jwt: { publicKey: await exportSPKI(publicKey), algorithms: ['RS256'], issuer: 'bench', audience: 'bench' } },
});
policy('limited', {
  appliesTo: { route: '/limited' },
  auth: { methods: ['apiKey'] },
  rateLimits: [{ name: 'huge', by: 'consumer', limit: 1_000_000_000, window: '1s' }],
});

const consul = await startConsul();
const redis = await startRedis();
try {
  await consul.kvPut('gateway/consumers/bench', JSON.stringify({ keyHash }));
  await consul.register({ id: 'bench-1', name: 'bench', port: upstreamPort, tags: ['urlprefix-/plain', 'urlprefix-/key', 'urlprefix-/jwt', 'urlprefix-/limited'] });
  const gateway = await startGateway({ consul: consul.addr, args: ['--log-level', 'warn', '--no-access-log', '--policies', dir, '--redis', redis.url] });
  try {
    await load(gateway.url, '/plain/warmup');
    console.log(`cgw policy pipeline benchmark: ${seconds}s per run, ${concurrency} concurrent, 1 upstream, node ${process.version}`);
    console.log(`public route             : ${formatRun(await load(gateway.url, '/plain/x'))}`);
    console.log(`API key                  : ${formatRun(await load(gateway.url, '/key/x', { 'x-api-key': apiKey }))}`);
    console.log(`JWT RS256 (static key)   : ${formatRun(await load(gateway.url, '/jwt/x', { authorization: `Bearer ${token}` }))}`);
    console.log(`API key + Redis limit    : ${formatRun(await load(gateway.url, '/limited/x', { 'x-api-key': apiKey }))}`);
    console.log("(load generator, upstream, Consul, Redis and cgw share this machine's cores; access log off)");
  } finally {
    await gateway.kill('SIGTERM');
  }
} finally {
  await redis.stop();
  await consul.destroy();
  upstream.close();
  rmSync(dir, { recursive: true, force: true });
}
