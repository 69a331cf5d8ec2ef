/**
 * Requests written to slip past the edge policies, against the real gateway: a Host that disagrees
 * with an absolute URL, a protected path spelled another way, identity headers spelled with
 * underscores, `Expect: 100-continue` turned into upstream failures, and a client that trickles its
 * body to hold a half-open circuit. Each must be refused or neutralised, and the upstream must not
 * see what it should not.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send, type Reply } from '../helpers/http.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import { generateApiKey } from '../../src/policy/consumers.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
let app: Upstream;
let fragile: Upstream;
let dir: string;
const { key: aliceKey, keyHash } = generateApiKey('alice');

/** One request written by hand, for request targets node:http and undici will not send (absolute form). */
function rawRequest(head: string, body = ''): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(gw.listenPort, '127.0.0.1');
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString()));
    socket.once('error', reject);
    socket.once('close', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text }));
    // Not end(): a half-closed client socket makes Node drop a response that is still on its way.
    socket.write(`${head}\r\nconnection: close\r\n\r\n${body}`);
  });
}

const codeOf = (r: Reply): string => (JSON.parse(r.body.toString()) as { error: { code: string } }).error.code;
const seenBy = (r: Reply): { url: string; headers: Record<string, string> } => JSON.parse(r.body.toString()) as { url: string; headers: Record<string, string> };

before(async () => {
  [consul, app, fragile, dir] = await Promise.all([startConsul(), startUpstream('app'), startUpstream('fragile'), mkdtemp(join(tmpdir(), 'cgw-edge-'))]);
  const policies: Record<string, object> = {
    'admin-host': { appliesTo: { route: 'admin.example.com/' }, auth: { methods: ['apiKey'] } },
    'api-admin': { appliesTo: { route: '/api/admin' }, auth: { methods: ['apiKey'] } },
    fragile: {
      appliesTo: { service: 'fragile' },
      retries: { attempts: 1, maxBodyBytes: 1024, nonIdempotent: true },
      timeouts: { request: '1s' },
      outlierDetection: { consecutiveFailures: 2, maxEjectedPercent: 100 },
      circuitBreaker: { window: '10s', minRequests: 3, failureRatio: 0.5, openFor: '100ms', halfOpenProbes: 1 },
    },
  };
  await Promise.all(Object.entries(policies).map(([name, doc]) => writeFile(join(dir, `${name}.json`), JSON.stringify(doc))));
  await consul.kvPut('gateway/consumers/alice', JSON.stringify({ keyHash }));
  await consul.register({ id: 'app-1', name: 'app', port: app.port, tags: ['urlprefix-admin.example.com/', 'urlprefix-www.example.com/', 'urlprefix-/api', 'urlprefix-/api/admin'] });
  await consul.register({ id: 'fragile-1', name: 'fragile', port: fragile.port, tags: ['urlprefix-/fragile'] });
  gw = await startGateway({ consul: consul.addr, args: ['--policies', dir] });
});

after(async () => {
  await gw?.kill();
  await Promise.all([app?.close(), fragile?.close(), consul?.destroy()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('an absolute URL routes by its own host, and that host (not the Host header) is what the upstream sees', async () => {
  const hits = app.hits;
  const refused = await rawRequest('GET http://admin.example.com/secret HTTP/1.1\r\nhost: www.example.com');
  assert.equal(refused.status, 401, refused.text);
  const r = await rawRequest('GET http://www.example.com/page HTTP/1.1\r\nhost: admin.example.com');
  assert.equal(r.status, 200, r.text);
  assert.match(r.text, /"host":"www\.example\.com"/);
  assert.equal(app.hits, hits + 1, 'only the public request reached the upstream');
});

test('a protected path spelled another way is the same path: %61dmin and // do not skip its auth', async () => {
  const hits = app.hits;
  for (const path of ['/api/admin/x', '/api/%61dmin/x', '/api//admin/x', '/api/%61%64min']) {
    const r = await rawRequest(`GET ${path} HTTP/1.1\r\nhost: x`);
    assert.equal(r.status, 401, `${path}: ${r.text}`);
  }
  for (const path of ['/api/%2Fadmin', '/api/..%2Fadmin', '/api/%2e%2e/admin', '/api/%zz']) {
    const r = await rawRequest(`GET ${path} HTTP/1.1\r\nhost: x`);
    assert.equal(r.status, 400, `${path}: ${r.text}`);
    assert.match(r.text, /"code":"bad_request"/);
  }
  assert.equal(app.hits, hits, 'none of them reached the upstream');
  const ok = await send(gw.url, '/api/%61dmin/x', { headers: { 'x-api-key': aliceKey } });
  assert.equal(ok.status, 200);
  assert.equal(seenBy(ok).url, '/api/admin/x', 'the upstream gets the path that was matched');
});

test('identity headers spelled with underscores are dropped like the dashed ones', async () => {
  const r = await send(gw.url, '/api/public', { headers: { x_cgw_subject: 'admin', X_CGW_SCOPES: 'payments', 'x-cgw-consumer': 'root' } });
  assert.equal(r.status, 200);
  const forwarded = Object.keys(seenBy(r).headers).filter((h) => h.replace(/_/g, '-').startsWith('x-cgw-'));
  assert.deepEqual(forwarded, []);
});

test('Expect: 100-continue is answered by the gateway and neither ejects the endpoint nor opens its circuit', async () => {
  for (let i = 0; i < 8; i++) {
    const r = await send(gw.url, '/fragile/echo', { method: 'PUT', headers: { expect: '100-continue', 'content-type': 'text/plain' }, body: Buffer.from(`body ${i}`) });
    assert.equal(r.status, 200, `attempt ${i}: ${r.status} ${r.body.toString()}`);
    assert.equal(seenBy(r).headers['content-length'], String(`body ${i}`.length), 'the body went through');
  }
  const services = (await (await fetch(`${gw.adminUrl}/v1/services`)).json()) as { name: string; ejected: number; circuit: { state: string } | null }[];
  const row = services.find((s) => s.name === 'fragile');
  assert.equal(row?.ejected, 0);
  assert.equal(row?.circuit?.state, 'closed');
});

test('a client trickling its body gets 408 within the request timeout and holds no circuit probe', async () => {
  // Open the circuit, wait past openFor: the next request admitted is the half-open probe.
  const circuit = async (): Promise<string | undefined> => {
    const rows = (await (await fetch(`${gw.adminUrl}/v1/services`)).json()) as { name: string; circuit: { state: string } | null }[];
    return rows.find((row) => row.name === 'fragile')?.circuit?.state;
  };
  fragile.set({ status: 500 });
  // Failures until the ratio over the window (which holds the successes above) opens the circuit.
  await waitFor(async () => (await send(gw.url, '/fragile/x')).status === 503 && (await circuit()) !== 'closed', { timeoutMs: 15_000, message: 'circuit opened' });
  fragile.set({ status: 200 });
  await waitFor(async () => (await circuit()) === 'half_open', { timeoutMs: 15_000, message: 'circuit half-open after openFor' });
  // A PUT declaring 10 bytes and sending 5: buffered for retries, so read before the breaker is asked.
  const socket = connect(gw.listenPort, '127.0.0.1');
  const started = Date.now();
  const answer = new Promise<string>((resolve) => {
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString()));
    socket.once('close', () => resolve(text));
  });
  socket.write('PUT /fragile/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nhello');
  // Meanwhile a normal request is the probe, succeeds, and closes the circuit.
  const probe = await send(gw.url, '/fragile/x');
  assert.equal(probe.status, 200, probe.body.toString());
  const text = await answer;
  assert.match(text, /^HTTP\/1\.1 408 /, text);
  assert.match(text, /"code":"request_timeout"/);
  assert.ok(Date.now() - started < 2500, `answered after ${Date.now() - started} ms (request timeout 1s)`);
});

test('a policy with no good version at all (a gateway started after it broke) holds its route with 503', async () => {
  const hits = app.hits;
  // Meant to require a JWT on /api, but invalid: this gateway never saw a good version.
  await consul.kvPut('gateway/policies/api-lock', JSON.stringify({ appliesTo: { route: '/api' }, auth: { methods: ['jwt'] } }));
  await waitFor(async () => (await send(gw.url, '/api/public')).status === 503, { timeoutMs: 15_000, message: '/api held' });
  const held = await send(gw.url, '/api/public');
  assert.equal(codeOf(held), 'policy_unavailable');
  assert.equal(app.hits, hits, 'the held route let nothing through');
  const problems = (await (await fetch(`${gw.adminUrl}/v1/problems`)).json()) as { subject: string; message: string }[];
  assert.match(problems.find((p) => p.subject === 'policies/api-lock')?.message ?? '', /routes of route \/api answer 503/);
  // A valid version releases the route, with the protection it meant.
  await consul.kvPut('gateway/policies/api-lock', JSON.stringify({ appliesTo: { route: '/api' }, auth: { methods: ['apiKey'] } }));
  await waitFor(async () => (await send(gw.url, '/api/public')).status === 401, { timeoutMs: 15_000, message: '/api protected' });
  assert.equal((await send(gw.url, '/api/public', { headers: { 'x-api-key': aliceKey } })).status, 200);
  await consul.kvDelete('gateway/policies/api-lock');
});
