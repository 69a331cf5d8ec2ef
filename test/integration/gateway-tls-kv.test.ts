/**
 * Certificates from Consul KV (`<prefix>certs/<name>`, fabio's Consul certificate store done
 * Consul-natively): `cgw cert put` checks a pair and writes it with check-and-set, the gateways
 * (every worker too) serve it by SNI on their next handshakes without dropping open connections,
 * a bad value written around the CLI is refused with the last good certificate kept and shown,
 * `/v1/snapshot` never shows a key, and `cgw cert rm` stops serving it.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpsRequest } from 'node:https';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePorts } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import * as pem from '../helpers/tls-certs.ts';

const PREFIX = 'gateway/';
/** Serials of the fixtures (tls-certs.ts), as Node prints them. */
const SERIAL = { default: '03E9', api: '03EA', apiV2: '03EB', wildcard: '03EC' };

let consul: ConsulAgent;
let gw: GatewayProcess;
let web: Upstream;
let dir: string;
let tlsPort: number;

async function file(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

function handshake(servername: string | undefined, port = tlsPort): Promise<PeerCertificate | null> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ...(servername ? { servername } : {}), rejectUnauthorized: false }, () => {
      const cert = socket.getPeerCertificate();
      socket.end();
      resolve(cert);
    });
    // Without any certificate the server refuses the handshake: that is an answer too.
    socket.once('error', () => resolve(null));
    socket.setTimeout(10_000, () => socket.destroy(new Error('handshake timed out')));
  });
}

const serialFor = async (servername: string | undefined, port = tlsPort): Promise<string | null> => (await handshake(servername, port))?.serialNumber ?? null;

async function status(): Promise<{ problems: { kind: string; subject: string; message: string; keptLastGood?: boolean }[]; tls: { certificates: { name: string; source: string }[]; default: string | null } | null }> {
  return (await (await fetch(`${gw.adminUrl}/v1/status`)).json()) as never;
}

const agent = new Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false, servername: 'api.example.com' });

function get(path: string): Promise<{ status: number; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port: tlsPort, path, agent, headers: { host: 'api.example.com' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, reused: req.reusedSocket }));
    });
    req.once('error', reject);
    req.end();
  });
}

const kvArgs = (): string[] => ['--consul', consul.addr, '--kv-prefix', PREFIX];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cgw-tls-kv-'));
  consul = await startConsul();
  web = await startUpstream('web');
  await consul.register({ id: 'web-1', name: 'web', port: web.port, tags: ['urlprefix-/web'] });
  [tlsPort] = (await freePorts(1)) as [number];
  // No certificate file at all: every certificate comes from Consul KV.
  gw = await startGateway({ consul: consul.addr, args: ['--listen-tls', `127.0.0.1:${tlsPort}`] });
});

after(async () => {
  agent.destroy();
  await gw?.kill();
  await web?.close();
  await consul?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('before any certificate is stored, handshakes fail and the gateway serves plain HTTP', async () => {
  assert.equal(await serialFor('api.example.com'), null);
  assert.equal((await fetch(`${gw.url}/web`)).status, 200);
});

test('cgw cert put writes a checked pair; the gateway serves it by SNI, and the first one stored is the default', async () => {
  const put = await runCli(['cert', 'put', 'api', '--cert', await file('api.crt', pem.API_CERT), '--key', await file('api.key', pem.API_KEY), ...kvArgs()]);
  assert.equal(put.code, 0, put.stderr);
  assert.match(put.stdout, /wrote gateway\/certs\/api \(ModifyIndex \d+, new\): api\.example\.com, valid until 2100-01-01/);
  await waitFor(async () => ((await serialFor('api.example.com')) === SERIAL.api ? true : undefined), { timeoutMs: 20_000, message: 'the KV certificate served' });
  assert.equal((await get('/web')).status, 200);
  const stored = JSON.parse((await consul.kvGet(`${PREFIX}certs/api`))?.value ?? '{}') as { cert?: string; key?: string };
  assert.deepEqual(stored, { cert: pem.API_CERT, key: pem.API_KEY });
  const certs = await runCli(['certs', '--admin', gw.adminUrl]);
  assert.match(certs.stdout, /api \(default\)\s+api\.example\.com\s+2100-01-01T00:00:00\.000Z\s+kv:gateway\/certs\/api/);
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  assert.match(metrics, /^cgw_tls_certificate_expiry_seconds\{name="api",source="kv:gateway\/certs\/api"\} 4102444800$/m);
});

test('a certificate named "default" serves clients without a matching server name', async () => {
  const put = await runCli(['cert', 'put', 'default', '--cert', await file('d.crt', pem.DEFAULT_CERT), '--key', await file('d.key', pem.DEFAULT_KEY), ...kvArgs()]);
  assert.equal(put.code, 0, put.stderr);
  await waitFor(async () => ((await serialFor('other.test')) === SERIAL.default ? true : undefined), { timeoutMs: 20_000, message: 'the default certificate for other names' });
  assert.equal(await serialFor(undefined), SERIAL.default, 'a client without SNI gets the default');
  assert.equal(await serialFor('api.example.com'), SERIAL.api);
  assert.equal((await status()).tls?.default, 'default');
});

test('cgw cert put refuses a pair that does not match, an expired certificate and garbage; nothing is written', async () => {
  const before = await consul.kvGet(`${PREFIX}certs/api`);
  const cases: { cert: string; key: string; error: RegExp }[] = [
    { cert: pem.API_CERT, key: pem.WILDCARD_KEY, error: /private key does not match/ },
    { cert: pem.EXPIRED_CERT, key: pem.EXPIRED_KEY, error: /expired/ },
    { cert: 'not a certificate', key: pem.API_KEY, error: /no PEM certificate/ },
  ];
  for (const c of cases) {
    const r = await runCli(['cert', 'put', 'api', '--cert', await file('bad.crt', c.cert), '--key', await file('bad.key', c.key), ...kvArgs()]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, c.error);
    assert.match(r.stderr, /nothing written/);
  }
  for (const name of ['../x', '__proto__', '']) {
    const r = await runCli(['cert', 'put', name, '--cert', join(dir, 'api.crt'), '--key', join(dir, 'api.key'), ...kvArgs()]);
    assert.equal(r.code, 2, `${name}: ${r.stderr}`);
  }
  const missing = await runCli(['cert', 'put', 'api', '--cert', join(dir, 'nope.crt'), '--key', join(dir, 'api.key'), ...kvArgs()]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot be read \(ENOENT\)/);
  assert.equal((await consul.kvGet(`${PREFIX}certs/api`))?.modifyIndex, before?.modifyIndex);
});

test('check-and-set: --cas with a stale ModifyIndex writes nothing (exit 3)', async () => {
  const r = await runCli(['cert', 'put', 'api', '--cert', join(dir, 'api.crt'), '--key', join(dir, 'api.key'), '--cas', '1', ...kvArgs()]);
  assert.equal(r.code, 3, r.stderr);
  assert.match(r.stderr, /no longer at ModifyIndex 1/);
});

const bad: { name: string; value: string; error: RegExp }[] = [
  { name: 'the key of another certificate', value: JSON.stringify({ cert: pem.API_V2_CERT, key: pem.API_KEY }), error: /does not match/ },
  { name: 'an expired certificate', value: JSON.stringify({ cert: pem.EXPIRED_CERT, key: pem.EXPIRED_KEY }), error: /expired/ },
  { name: 'not JSON', value: pem.API_V2_CERT, error: /not JSON/ },
  { name: 'prototype names', value: '{"__proto__": {"cert": "x"}, "constructor": 1}', error: /cert|key|constructor/ },
];
for (const c of bad) {
  test(`${c.name} written to KV around the CLI: refused, the last good certificate keeps serving, shown in cgw status`, async () => {
    await consul.kvPut(`${PREFIX}certs/api`, c.value);
    const problem = await waitFor(async () => (await status()).problems.find((p) => p.kind === 'certificate' && p.subject === `${PREFIX}certs/api` && c.error.test(p.message)), {
      timeoutMs: 20_000,
      message: `the refusal of ${c.name} in /v1/status`,
    });
    assert.equal(problem.keptLastGood, true);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(metrics, /^cgw_tls_certificate_rejections_total\{source="kv:gateway\/certs\/api"\} [1-9]/m);
    assert.equal(await serialFor('api.example.com'), SERIAL.api);
    assert.equal((await get('/web')).status, 200);
    const st = await runCli(['status', '--admin', gw.adminUrl]);
    assert.match(st.stdout, /gateway\/certs\/api/);
  });
}

test('rotation with cgw cert put: new handshakes get the new certificate, an open connection goes on', async () => {
  assert.equal((await get('/web')).status, 200);
  const put = await runCli(['cert', 'put', 'api', '--cert', await file('v2.crt', pem.API_V2_CERT), '--key', await file('v2.key', pem.API_V2_KEY), ...kvArgs()]);
  assert.equal(put.code, 0, put.stderr);
  assert.match(put.stdout, /replaced \d+/);
  await waitFor(async () => ((await serialFor('api.example.com')) === SERIAL.apiV2 ? true : undefined), { timeoutMs: 20_000, message: 'the rotated certificate served' });
  const r = await get('/web');
  assert.equal(r.status, 200);
  assert.equal(r.reused, true, 'the keep-alive connection opened before the rotation still serves');
  await waitFor(async () => ((await status()).problems.some((p) => p.kind === 'certificate') ? undefined : true), { timeoutMs: 20_000, message: 'the refusal cleared once a good version is stored' });
});

test('/v1/snapshot shows KV certificates without their keys', async () => {
  const text = await (await fetch(`${gw.adminUrl}/v1/snapshot`)).text();
  assert.match(text, /BEGIN CERTIFICATE/);
  assert.doesNotMatch(text, /PRIVATE KEY/);
});

test('cgw cert rm stops serving it; Consul changes still apply', async () => {
  await runCli(['cert', 'put', 'wild', '--cert', await file('w.crt', pem.WILDCARD_CERT), '--key', await file('w.key', pem.WILDCARD_KEY), ...kvArgs()]);
  await waitFor(async () => ((await serialFor('shop.example.com')) === SERIAL.wildcard ? true : undefined), { timeoutMs: 20_000, message: 'the wildcard served' });
  const r = await runCli(['cert', 'rm', 'wild', ...kvArgs()]);
  assert.equal(r.code, 0, r.stderr);
  await waitFor(async () => ((await serialFor('shop.example.com')) === SERIAL.default ? true : undefined), { timeoutMs: 20_000, message: 'back to the default once removed' });
  const again = await runCli(['cert', 'rm', 'wild', ...kvArgs()]);
  assert.equal(again.code, 1);
  const api = await startUpstream('api');
  try {
    await consul.register({ id: 'api-1', name: 'api', port: api.port, tags: ['urlprefix-/api'] });
    await waitFor(async () => ((await get('/api/x')).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'a service registered afterwards is routed over TLS' });
  } finally {
    await api.close();
  }
});

test('with --workers 2 every worker serves the KV certificates', async () => {
  const [port] = (await freePorts(1)) as [number];
  const workers = await startGateway({ consul: consul.addr, args: ['--workers', '2', '--listen-tls', `127.0.0.1:${port}`] });
  try {
    // Each handshake lands on one worker or the other: enough of them reach both.
    await waitFor(async () => ((await serialFor('api.example.com', port)) === SERIAL.apiV2 ? true : undefined), { timeoutMs: 30_000, message: 'served by the workers' });
    for (let i = 0; i < 10; i++) assert.equal(await serialFor('api.example.com', port), SERIAL.apiV2);
  } finally {
    await workers.kill();
  }
});
