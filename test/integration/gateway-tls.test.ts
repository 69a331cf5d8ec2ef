/**
 * HTTPS listeners with certificates from files: SNI picks the certificate, the upstream learns
 * the request came over TLS, a certificate replaced on disk (by rename) serves the next
 * handshakes while an open connection goes on, and a bad replacement (expired, key of another
 * certificate, garbage) is refused with the last good certificate kept, logged, counted and shown.
 * Garbage on the TLS port ends nothing; Consul changes still apply afterwards.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpsRequest } from 'node:https';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePorts } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import * as pem from '../helpers/tls-certs.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
let web: Upstream;
let dir: string;
let tlsPort: number;

/** Serials of the fixtures (tls-certs.ts), as Node prints them. */
const SERIAL = { default: '03E9', api: '03EA', apiV2: '03EB' };

async function put(name: string, text: string): Promise<void> {
  // Written aside, then renamed over the old file: how certificate tools replace files.
  const tmp = join(dir, `.${name}.tmp`);
  await writeFile(tmp, text);
  await rename(tmp, join(dir, name));
}

function handshake(servername: string | undefined): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: tlsPort, ...(servername ? { servername } : {}), rejectUnauthorized: false }, () => {
      const cert = socket.getPeerCertificate();
      socket.end();
      resolve(cert);
    });
    socket.once('error', reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('handshake timed out')));
  });
}

async function status(): Promise<{ tls: { certificates: { name: string; notAfter: string }[]; rejected: { source: string; error: string; keptLastGood: boolean }[]; default: string | null } | null }> {
  return (await (await fetch(`${gw.adminUrl}/v1/status`)).json()) as never;
}

async function metric(pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => pattern.test(l));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

const agent = new Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false, servername: 'api.example.com' });

function get(path: string): Promise<{ status: number; body: string; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port: tlsPort, path, agent, headers: { host: 'api.example.com' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, reused: req.reusedSocket }));
    });
    req.once('error', reject);
    req.end();
  });
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cgw-tls-'));
  await Promise.all([put('default.crt', pem.DEFAULT_CERT), put('default.key', pem.DEFAULT_KEY), put('api.crt', pem.API_CERT), put('api.key', pem.API_KEY)]);
  consul = await startConsul();
  web = await startUpstream('web');
  await consul.register({ id: 'web-1', name: 'web', port: web.port, tags: ['urlprefix-/web'] });
  [tlsPort] = (await freePorts(1)) as [number];
  gw = await startGateway({
    consul: consul.addr,
    args: [
      '--listen-tls', `127.0.0.1:${tlsPort}`,
      '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key'),
      '--tls-cert', join(dir, 'api.crt'), '--tls-key', join(dir, 'api.key'),
      '--tls-poll-interval', '200ms',
      '--client-header-timeout', '2s',
    ],
  });
  await waitFor(async () => (await get('/web')).status === 200, { timeoutMs: 20_000, message: 'route /web served over TLS' });
});

after(async () => {
  agent.destroy();
  await gw?.kill();
  await web?.close();
  await consul?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('SNI picks the certificate: exact name, else the first pair (the default)', async () => {
  assert.equal((await handshake('api.example.com')).serialNumber, SERIAL.api);
  for (const name of ['other.test', 'example.com', undefined]) assert.equal((await handshake(name)).serialNumber, SERIAL.default, String(name));
  const s = await status();
  assert.equal(s.tls?.default, 'default');
  assert.deepEqual(s.tls?.certificates.map((c) => c.name), ['default', 'api']);
  assert.equal(await metric(/^cgw_tls_certificate_expiry_seconds\{name="api",source="file:.*api\.crt"\} /), Date.parse('2100-01-01T00:00:00Z') / 1000);
});

test('cgw certs and cgw status show the certificates in force, the default marked; never a key', async () => {
  const certs = await runCli(['certs', '--admin', gw.adminUrl]);
  assert.equal(certs.code, 0, certs.stderr);
  assert.match(certs.stdout, /default \(default\)\s+default\.test,localhost\s+2100-01-01T00:00:00\.000Z\s+file:.*default\.crt/);
  assert.match(certs.stdout, /\bapi\s+api\.example\.com\s+2100-01-01/);
  const st = await runCli(['status', '--admin', gw.adminUrl]);
  assert.match(st.stdout, /^tls:\s+2 certificates \(default: default\)$/m);
  const json = await (await fetch(`${gw.adminUrl}/v1/certs`)).text();
  assert.doesNotMatch(json, /PRIVATE KEY|BEGIN/);
});

test('the upstream is told the request came over TLS (X-Forwarded-Proto and Forwarded)', async () => {
  const before = web.requests.length;
  const r = await get('/web');
  assert.equal(r.status, 200);
  const seen = web.requests[before];
  assert.equal(seen?.headers['x-forwarded-proto'], 'https');
  assert.match(String(seen?.headers.forwarded), /proto=https/);
});

test('a certificate replaced on disk serves the next handshakes; an open connection goes on', async () => {
  assert.equal((await get('/web')).status, 200);
  await put('api.key', pem.API_V2_KEY);
  await put('api.crt', pem.API_V2_CERT);
  await waitFor(async () => (await handshake('api.example.com')).serialNumber === SERIAL.apiV2, { timeoutMs: 15_000, message: 'the new certificate served' });
  const r = await get('/web');
  assert.equal(r.status, 200);
  assert.equal(r.reused, true, 'the keep-alive connection opened before the change still serves');
  await waitFor(async () => ((await status()).tls?.rejected.length === 0 ? true : undefined), { timeoutMs: 10_000, message: 'no rejection left once both files are replaced' });
});

const bad: { name: string; cert: string; key: string; error: RegExp }[] = [
  { name: 'an expired certificate', cert: pem.EXPIRED_CERT, key: pem.EXPIRED_KEY, error: /expired/ },
  { name: 'the key of another certificate', cert: pem.API_CERT, key: pem.WILDCARD_KEY, error: /does not match/ },
  { name: 'garbage', cert: '__proto__ constructor \u0000\u0001 not a certificate', key: '{"__proto__":{}}', error: /no PEM certificate/ },
  { name: 'a certificate not valid yet', cert: pem.NOT_YET_CERT, key: pem.NOT_YET_KEY, error: /not valid before/ },
];
for (const c of bad) {
  test(`${c.name} on disk: refused, the last good certificate keeps serving, and it shows`, async () => {
    const refusedBefore = await metric(/^cgw_tls_certificate_rejections_total\{source="file:.*api\.crt"\} /);
    await put('api.key', c.key);
    await put('api.crt', c.cert);
    const rejection = await waitFor(async () => (await status()).tls?.rejected.find((r) => r.source.endsWith('api.crt') && c.error.test(r.error)), {
      timeoutMs: 15_000,
      message: `the rejection of ${c.name} shown in /v1/status`,
    });
    assert.equal(rejection.keptLastGood, true);
    assert.equal((await handshake('api.example.com')).serialNumber, SERIAL.apiV2);
    assert.equal((await get('/web')).status, 200);
    assert.ok((await metric(/^cgw_tls_certificate_rejections_total\{source="file:.*api\.crt"\} /)) > refusedBefore);
    // Back to the good pair for the next case.
    await put('api.key', pem.API_V2_KEY);
    await put('api.crt', pem.API_V2_CERT);
    await waitFor(async () => ((await status()).tls?.rejected.length === 0 ? true : undefined), { timeoutMs: 15_000, message: 'good again' });
  });
}

test('garbage and a plain HTTP request on the TLS port end nothing; Consul changes still apply', async () => {
  const errorsBefore = await metric(/^cgw_tls_handshake_errors_total /);
  for (const payload of ['GET / HTTP/1.1\r\nHost: x\r\n\r\n', '\u0016\u0003\u0001\u00ff\u00ff' + 'A'.repeat(4096), '\u0000'.repeat(64)]) {
    await new Promise<void>((resolve) => {
      const socket = netConnect({ host: '127.0.0.1', port: tlsPort }, () => socket.end(payload));
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
      socket.resume();
    });
  }
  await waitFor(async () => ((await metric(/^cgw_tls_handshake_errors_total /)) > errorsBefore ? true : undefined), { timeoutMs: 10_000, message: 'failed handshakes counted' });
  assert.equal((await get('/web')).status, 200);
  const api = await startUpstream('api');
  try {
    await consul.register({ id: 'api-1', name: 'api', port: api.port, tags: ['urlprefix-/api'] });
    await waitFor(async () => (await get('/api/x')).status === 200, { timeoutMs: 20_000, message: 'a service registered afterwards is routed over TLS' });
  } finally {
    await api.close();
  }
});

test('a client that connects and never finishes its handshake is cut after --client-header-timeout', async () => {
  const errorsBefore = await metric(/^cgw_tls_handshake_errors_total /);
  const started = Date.now();
  const closedAfterMs = await new Promise<number>((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port: tlsPort });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Date.now() - started));
    socket.setTimeout(30_000, () => reject(new Error('the idle connection was still open after 30 s')));
    socket.resume();
  });
  // Node's own default would be 120 s; the flag says 2 s (a loaded machine may add some).
  assert.ok(closedAfterMs >= 1_500 && closedAfterMs < 25_000, `closed after ${closedAfterMs} ms`);
  await waitFor(async () => ((await metric(/^cgw_tls_handshake_errors_total /)) > errorsBefore ? true : undefined), { timeoutMs: 10_000, message: 'the timed-out handshake counted' });
  assert.equal((await get('/web')).status, 200);
});
