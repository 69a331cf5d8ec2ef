/**
 * Request spans over OTLP/HTTP (--otlp-endpoint) against a real receiver in the test: a client's
 * trace is continued (its trace id, its span as parent) and the upstream's traceparent names the
 * gateway's span; a request without one starts a trace; the attributes say route, service,
 * endpoint, status and attempts; sampling is parent-based with --otlp-sample for the gateway's own
 * traces; a receiver that is down or refuses never costs a request and is counted; workers export
 * their own spans and flush them on SIGTERM; a gateway without the flag never calls the receiver.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as http2Connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from '../helpers/otlp-receiver.ts';
import { freePort } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import WebSocket, { WebSocketServer } from 'ws';
import { generateApiKey } from '../../src/policy/consumers.ts';

let consul: ConsulAgent;
let receiver: OtlpReceiver;
let gw: GatewayProcess;
let web: Upstream;
let flakyBad: Upstream;
let flakyGood: Upstream;
let policyDir: string;
let stuck: Upstream;
const alice = generateApiKey('alice');
let chat: { server: WebSocketServer; port: number; handshakes: { traceparent: string | undefined }[] };

/** A trace id per test, so spans of one test are never taken for another's. */
function traceIdOf(n: number): string {
  return `${'4bf92f3577b34da6a3ce929d'}${n.toString(16).padStart(8, '0')}`;
}
const CLIENT_SPAN = '00f067aa0ba902b7';

function spansOf(r: OtlpReceiver, traceId: string): ReceivedSpan[] {
  return r.spans.filter((s) => s.traceId === traceId);
}

async function oneSpan(r: OtlpReceiver, traceId: string): Promise<ReceivedSpan> {
  return waitFor(() => spansOf(r, traceId)[0], { timeoutMs: 20_000, message: `the span of trace ${traceId} reaches the receiver` });
}

async function metric(adminUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

function upstreamSaw(u: Upstream, url: string): string {
  const seen = u.requests.findLast((r) => r.url === url);
  assert.ok(seen, `the upstream received ${url}`);
  return String(seen.headers.traceparent);
}

before(async () => {
  consul = await startConsul();
  receiver = await startOtlpReceiver();
  web = await startUpstream('web');
  flakyBad = await startUpstream('flaky-bad', { status: 503 });
  flakyGood = await startUpstream('flaky-good');
  stuck = await startUpstream('stuck', { hang: true });
  const chatPort = await freePort();
  const chatServer = new WebSocketServer({ host: '127.0.0.1', port: chatPort });
  chat = { server: chatServer, port: chatPort, handshakes: [] };
  chatServer.on('connection', (socket, req) => {
    chat.handshakes.push({ traceparent: req.headers.traceparent as string | undefined });
    socket.on('message', (data) => socket.send(data));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => chatServer.once('listening', () => resolve()));
  await consul.register({ id: 'stuck-1', name: 'stuck', port: stuck.port, tags: ['urlprefix-/stuck'] });
  await consul.register({ id: 'chat-1', name: 'chat', port: chatPort, tags: ['urlprefix-/chat'] });
  const deadPort = await freePort();
  await consul.register({ id: 'web-1', name: 'web', port: web.port, tags: ['urlprefix-/web'] });
  await consul.register({ id: 'flaky-bad', name: 'flaky', port: flakyBad.port, tags: ['urlprefix-/flaky'] });
  await consul.register({ id: 'flaky-good', name: 'flaky', port: flakyGood.port, tags: ['urlprefix-/flaky'] });
  await consul.register({ id: 'dead-1', name: 'dead', port: deadPort, tags: ['urlprefix-/dead'] });
  policyDir = await mkdtemp(join(tmpdir(), 'cgw-otlp-'));
  // A retry on 503 to the other instance: the span must count two attempts.
  await writeFile(join(policyDir, 'flaky.json'), JSON.stringify({ appliesTo: { service: 'flaky' }, retries: { attempts: 1, statuses: [503], backoff: { base: '0ms', max: '0ms' } }, outlierDetection: { enabled: false } }));
  await writeFile(join(policyDir, 'secure.json'), JSON.stringify({ appliesTo: { route: '/secure' }, auth: { methods: ['apiKey'] } }));
  await consul.register({ id: 'secure-1', name: 'secure', port: web.port, tags: ['urlprefix-/secure'] });
  await consul.kvPut('gateway/consumers/alice', JSON.stringify({ keyHash: alice.keyHash }));
  gw = await startGateway({ consul: consul.addr, args: ['--otlp-endpoint', receiver.endpoint, '--otlp-headers', 'x-tenant=team%20a', '--policies', policyDir, '--h2c'] });
  await waitFor(async () => ((await fetch(`${gw.url}/web`)).status === 200 && (await fetch(`${gw.url}/flaky`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'web and flaky routed' });
});

after(async () => {
  await gw?.kill();
  for (const client of chat?.server.clients ?? []) client.terminate();
  await new Promise<void>((resolve) => (chat ? chat.server.close(() => resolve()) : resolve()));
  await Promise.all([web?.close(), flakyBad?.close(), flakyGood?.close(), stuck?.close(), receiver?.close()]);
  await consul?.stop();
  if (policyDir) await rm(policyDir, { recursive: true, force: true });
});

test("a client's sampled trace: one SERVER span under the client's span, and the upstream's parent is that span", async () => {
  const traceId = traceIdOf(1);
  const res = await fetch(`${gw.url}/web/traced?token=secret`, { headers: { traceparent: `00-${traceId}-${CLIENT_SPAN}-01`, tracestate: 'vendor=1' } });
  assert.equal(res.status, 200);
  const span = await oneSpan(receiver, traceId);
  assert.equal(span.parentSpanId, CLIENT_SPAN);
  assert.equal(span.kind, 2, 'SERVER');
  assert.equal(span.name, 'GET /web');
  assert.equal(span.statusCode, 0, 'a 200 leaves the status unset');
  assert.deepEqual(
    {
      method: span.attributes['http.request.method'],
      path: span.attributes['url.path'],
      status: span.attributes['http.response.status_code'],
      server: span.attributes['server.address'],
      port: span.attributes['server.port'],
      protocol: span.attributes['network.protocol.version'],
      route: span.attributes['cgw.route'],
      service: span.attributes['cgw.service'],
      endpoint: span.attributes['cgw.endpoint'],
      attempts: span.attributes['cgw.upstream.attempts'],
    },
    { method: 'GET', path: '/web/traced', status: 200, server: '127.0.0.1', port: gw.listenPort, protocol: '1.1', route: '/web', service: 'web', endpoint: `127.0.0.1:${web.port}`, attempts: 1 },
  );
  assert.ok(!JSON.stringify(span.attributes).includes('secret'), 'the query (where clients put tokens) is not recorded');
  assert.equal(span.resource['service.name'], 'cgw');
  assert.equal(upstreamSaw(web, '/web/traced?token=secret'), `00-${traceId}-${span.spanId}-01`);
  assert.equal(web.requests.findLast((r) => r.url === '/web/traced?token=secret')?.headers.tracestate, 'vendor=1');
  assert.ok(receiver.posts.every((p) => p.headers['x-tenant'] === 'team a'), '--otlp-headers reach the receiver, %-decoded');
  assert.ok(receiver.posts.every((p) => p.contentType.startsWith('application/json')));
});

test('a request without traceparent starts a trace: the span is its root and the upstream is told it is sampled', async () => {
  assert.equal((await fetch(`${gw.url}/web/fresh`)).status, 200);
  const sent = upstreamSaw(web, '/web/fresh');
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(sent);
  assert.ok(m, `a new sampled trace goes upstream (got ${sent})`);
  const span = await oneSpan(receiver, m[1] as string);
  assert.equal(span.spanId, m[2]);
  assert.equal(span.parentSpanId, '');
  assert.equal(span.attributes['url.path'], '/web/fresh');
});

test("a client's unsampled trace is not exported, and the upstream is told so", async () => {
  const unsampled = traceIdOf(2);
  const later = traceIdOf(3);
  assert.equal((await fetch(`${gw.url}/web/unsampled`, { headers: { traceparent: `00-${unsampled}-${CLIENT_SPAN}-00` } })).status, 200);
  assert.match(upstreamSaw(web, '/web/unsampled'), new RegExp(`^00-${unsampled}-[0-9a-f]{16}-00$`));
  // Spans leave in the order they ended: once the later sampled one arrived, an earlier one would have too.
  assert.equal((await fetch(`${gw.url}/web/later`, { headers: { traceparent: `00-${later}-${CLIENT_SPAN}-01` } })).status, 200);
  await oneSpan(receiver, later);
  assert.equal(spansOf(receiver, unsampled).length, 0);
});

test('a retried request: two attempts, the endpoint that answered, status 200', async () => {
  const ids = [traceIdOf(10), traceIdOf(11), traceIdOf(12), traceIdOf(13)];
  for (const id of ids) assert.equal((await fetch(`${gw.url}/flaky/x`, { headers: { traceparent: `00-${id}-${CLIENT_SPAN}-01` } })).status, 200);
  const spans = await Promise.all(ids.map((id) => oneSpan(receiver, id)));
  assert.ok(spans.every((s) => s.attributes['http.response.status_code'] === 200 && s.attributes['cgw.endpoint'] === `127.0.0.1:${flakyGood.port}`));
  const retried = spans.filter((s) => s.attributes['cgw.upstream.attempts'] === 2);
  assert.ok(retried.length >= 1, `round robin sent some first attempts to the failing instance (attempts: ${spans.map((s) => s.attributes['cgw.upstream.attempts']).join(',')})`);
});

test('gateway errors: a 5xx span has status ERROR and the error code; an unrouted 404 has no route', async () => {
  const failing = traceIdOf(20);
  const unrouted = traceIdOf(21);
  const res = await fetch(`${gw.url}/dead`, { headers: { traceparent: `00-${failing}-${CLIENT_SPAN}-01` } });
  assert.ok(res.status >= 500, `a dead upstream is a 5xx (got ${res.status})`);
  assert.equal((await fetch(`${gw.url}/nowhere`, { headers: { traceparent: `00-${unrouted}-${CLIENT_SPAN}-01` } })).status, 404);
  const span = await oneSpan(receiver, failing);
  assert.equal(span.statusCode, 2, 'ERROR');
  assert.equal(span.attributes['http.response.status_code'], res.status);
  assert.equal(typeof span.attributes['cgw.error.code'], 'string');
  assert.equal(span.attributes['error.type'], span.attributes['cgw.error.code']);
  assert.equal(span.attributes['cgw.service'], 'dead');
  const notFound = await oneSpan(receiver, unrouted);
  assert.equal(notFound.name, 'GET');
  assert.equal(notFound.statusCode, 0, 'a 4xx is the client\'s: status unset');
  assert.equal(notFound.attributes['cgw.error.code'], 'route_not_found');
  assert.equal(notFound.attributes['cgw.route'], undefined);
});

test('an authenticated request names its consumer, never its key; a refused one its error code', async () => {
  const admitted = traceIdOf(33);
  const refused = traceIdOf(34);
  await waitFor(async () => ((await fetch(`${gw.url}/secure`, { headers: { 'x-api-key': alice.key } })).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'alice is known' });
  assert.equal((await fetch(`${gw.url}/secure/a`, { headers: { 'x-api-key': alice.key, traceparent: `00-${admitted}-${CLIENT_SPAN}-01` } })).status, 200);
  assert.equal((await fetch(`${gw.url}/secure/b`, { headers: { 'x-api-key': `${alice.key}x`, traceparent: `00-${refused}-${CLIENT_SPAN}-01` } })).status, 401);
  const span = await oneSpan(receiver, admitted);
  assert.equal(span.attributes['cgw.consumer'], 'alice');
  assert.equal(span.attributes['cgw.auth.method'], 'apiKey');
  const denied = await oneSpan(receiver, refused);
  assert.equal(denied.attributes['cgw.consumer'], undefined);
  assert.equal(typeof denied.attributes['cgw.error.code'], 'string');
  for (const s of [span, denied]) assert.ok(!JSON.stringify(s).includes(alice.key), 'the key is in no span');
});

test('HTTP/2 (h2c) requests go through the same span', async () => {
  const traceId = traceIdOf(30);
  const session = http2Connect(gw.url);
  try {
    const status = await new Promise<number>((resolve, reject) => {
      const stream = session.request({ ':path': '/web/h2', traceparent: `00-${traceId}-${CLIENT_SPAN}-01` });
      stream.on('response', (headers) => resolve(Number(headers[':status'])));
      stream.on('error', reject);
      stream.resume();
    });
    assert.equal(status, 200);
  } finally {
    session.close();
  }
  const span = await oneSpan(receiver, traceId);
  assert.equal(span.attributes['network.protocol.version'], '2');
  assert.equal(upstreamSaw(web, '/web/h2'), `00-${traceId}-${span.spanId}-01`);
});

test('a WebSocket handshake gets the span, ended at the 101, and the upstream handshake names it', async () => {
  const traceId = traceIdOf(31);
  const socket = new WebSocket(`ws://127.0.0.1:${gw.listenPort}/chat`, { headers: { traceparent: `00-${traceId}-${CLIENT_SPAN}-01` } });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    const span = await oneSpan(receiver, traceId);
    assert.equal(span.attributes['http.response.status_code'], 101);
    assert.equal(span.attributes['cgw.service'], 'chat');
    assert.equal(chat.handshakes.at(-1)?.traceparent, `00-${traceId}-${span.spanId}-01`);
  } finally {
    socket.terminate();
  }
});

test('a client that leaves before the answer: the span ends with 499', async () => {
  const traceId = traceIdOf(32);
  const hitsBefore = stuck.hits;
  const leaving = new AbortController();
  const answer = fetch(`${gw.url}/stuck/wait`, { headers: { traceparent: `00-${traceId}-${CLIENT_SPAN}-01` }, signal: leaving.signal }).catch((err: unknown) => err);
  await waitFor(() => stuck.hits > hitsBefore, { timeoutMs: 10_000, message: 'the request reached the upstream' });
  leaving.abort();
  await answer;
  const span = await oneSpan(receiver, traceId);
  assert.equal(span.attributes['http.response.status_code'], 499);
  assert.equal(span.statusCode, 0);
  assert.equal(span.attributes['cgw.service'], 'stuck');
});

test('attack: malformed, oversized and prototype-named trace headers start new traces; long paths are cut in the span', async () => {
  const bad = [
    '__proto__',
    'constructor',
    `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01-extra`,
    `00-${'A'.repeat(32)}-${'b'.repeat(16)}-01`,
    `00-${'0'.repeat(32)}-${'b'.repeat(16)}-01`,
    `ff-${'a'.repeat(32)}-${'b'.repeat(16)}-01`,
    `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`.repeat(200),
  ];
  for (const [i, traceparent] of bad.entries()) {
    const res = await fetch(`${gw.url}/web/attack${i}`, { headers: { traceparent, tracestate: '__proto__=1' } });
    assert.equal(res.status, 200, traceparent.slice(0, 40));
    const sent = upstreamSaw(web, `/web/attack${i}`);
    const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(sent);
    assert.ok(m && m[1] !== 'a'.repeat(32), `a new trace for ${traceparent.slice(0, 40)} (sent ${sent})`);
    assert.equal(web.requests.findLast((r) => r.url === `/web/attack${i}`)?.headers.tracestate, undefined);
    const span = await oneSpan(receiver, m[1] as string);
    assert.equal(span.parentSpanId, '');
  }
  const longPath = `/web/${'p'.repeat(8_000)}`;
  assert.equal((await fetch(`${gw.url}${longPath}`)).status, 200);
  const m = /^00-([0-9a-f]{32})-/.exec(upstreamSaw(web, longPath));
  const span = await oneSpan(receiver, (m as RegExpExecArray)[1] as string);
  assert.equal(String(span.attributes['url.path']).length, 2048, 'attribute values are bounded');
});

test('attack: a receiver that hangs costs no request, and the gateway still applies Consul changes', async () => {
  const hanging = await startOtlpReceiver();
  hanging.setStatus(0);
  const g = await startGateway({ consul: consul.addr, args: ['--otlp-endpoint', hanging.endpoint] });
  const late = await startUpstream('late');
  try {
    await waitFor(async () => ((await fetch(`${g.url}/web`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'web routed' });
    const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => fetch(`${g.url}/web/h${i}`).then((r) => r.status)));
    assert.ok(answers.every((s) => s === 200));
    await waitFor(() => hanging.posts.length >= 1, { timeoutMs: 20_000, message: 'the exporter is waiting on the receiver' });
    await consul.register({ id: 'late-1', name: 'late', port: late.port, tags: ['urlprefix-/late'] });
    await waitFor(async () => ((await fetch(`${g.url}/late`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'a service registered now is routed' });
    await waitFor(async () => ((await metric(g.adminUrl, 'cgw_otlp_export_failures_total')) >= 1 ? true : undefined), { timeoutMs: 40_000, message: 'the timed-out export is counted' });
  } finally {
    await g.kill();
    await consul.deregister('late-1');
    await late.close();
    await hanging.close();
  }
});

test('--otlp-sample 0: the traces the gateway starts are not exported; a client\'s sampled trace still is', async () => {
  const own = await startOtlpReceiver();
  const quiet = await startGateway({ consul: consul.addr, args: ['--otlp-endpoint', own.endpoint, '--otlp-sample', '0'] });
  try {
    await waitFor(async () => ((await fetch(`${quiet.url}/web`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'web routed' });
    for (let i = 0; i < 10; i++) assert.equal((await fetch(`${quiet.url}/web/own`)).status, 200);
    assert.match(upstreamSaw(web, '/web/own'), /-00$/, 'the upstream is told the trace is not sampled');
    const sampled = traceIdOf(40);
    assert.equal((await fetch(`${quiet.url}/web/client`, { headers: { traceparent: `00-${sampled}-${CLIENT_SPAN}-01` } })).status, 200);
    await oneSpan(own, sampled);
    assert.deepEqual(own.spans.map((s) => s.traceId), [sampled], 'only the client\'s sampled trace was exported');
  } finally {
    await quiet.kill();
    await own.close();
  }
});

test('a receiver that is down or refuses never costs a request; failures are counted and logged once', async () => {
  const refusing = await startOtlpReceiver();
  refusing.setStatus(400);
  const downPort = await freePort();
  const down = await startGateway({ consul: consul.addr, args: ['--log-level', 'warn', '--otlp-endpoint', `http://127.0.0.1:${downPort}/v1/traces`] });
  const refused = await startGateway({ consul: consul.addr, args: ['--otlp-endpoint', refusing.endpoint] });
  try {
    for (const g of [down, refused]) {
      await waitFor(async () => ((await fetch(`${g.url}/web`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'web routed' });
      for (let i = 0; i < 20; i++) assert.equal((await fetch(`${g.url}/web/r${i}`)).status, 200);
      await waitFor(async () => ((await metric(g.adminUrl, 'cgw_otlp_export_failures_total')) >= 1 ? true : undefined), { timeoutMs: 30_000, message: 'the failed export is counted' });
      assert.ok((await metric(g.adminUrl, 'cgw_otlp_spans_dropped_total')) >= 1, 'the spans of the failed batch are counted as dropped');
      assert.equal(await metric(g.adminUrl, 'cgw_otlp_spans_exported_total'), 0);
      assert.equal((await fetch(`${g.url}/web/after`)).status, 200);
    }
    assert.ok(refusing.posts.length >= 1, 'the refusing receiver was asked');
    assert.equal(down.logs.filter((l) => l.includes('span export to the OTLP receiver failed')).length, 1, 'logged once per interval');
  } finally {
    await Promise.all([down.kill(), refused.kill()]);
    await refusing.close();
  }
});

test('workers export their own spans, named by OTEL_* variables, and flush them on SIGTERM', async () => {
  const own = await startOtlpReceiver();
  const base = own.endpoint.replace(/\/v1\/traces$/, '');
  const pair = await startGateway({
    consul: consul.addr,
    args: ['--workers', '2'],
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: base, OTEL_SERVICE_NAME: 'edge', OTEL_EXPORTER_OTLP_HEADERS: 'x-tenant=t1' },
  });
  let stopped = false;
  try {
    await waitFor(async () => ((await fetch(`${pair.url}/web`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'web routed' });
    const ids = Array.from({ length: 10 }, (_, i) => traceIdOf(50 + i));
    // New connections each, so both workers are likely to take some.
    for (const id of ids) assert.equal((await fetch(`${pair.url}/web/w`, { headers: { traceparent: `00-${id}-${CLIENT_SPAN}-01`, connection: 'close' } })).status, 200);
    const code = await pair.kill('SIGTERM');
    stopped = true;
    assert.equal(code, 0);
    const got = ids.filter((id) => spansOf(own, id).length === 1);
    assert.equal(got.length, ids.length, 'every span was exported by the time the gateway exited');
    const spans = ids.map((id) => spansOf(own, id)[0] as ReceivedSpan);
    assert.ok(spans.every((s) => s.resource['service.name'] === 'edge'));
    assert.ok(own.posts.every((p) => p.headers['x-tenant'] === 't1'));
    const pids = new Set(spans.map((s) => s.resource['process.pid']));
    assert.ok(pids.size >= 1 && !pids.has(pair.pid), 'spans come from the workers, not the primary');
  } finally {
    if (!stopped) await pair.kill();
    await own.close();
  }
});

test('a gateway without --otlp-endpoint never contacts a receiver', async () => {
  const own = await startOtlpReceiver();
  const plain = await startGateway({ consul: consul.addr, env: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '', OTEL_EXPORTER_OTLP_ENDPOINT: '' } });
  try {
    await waitFor(async () => ((await fetch(`${plain.url}/web`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'web routed' });
    for (let i = 0; i < 5; i++) assert.equal((await fetch(`${plain.url}/web/plain`, { headers: { traceparent: `00-${traceIdOf(70 + i)}-${CLIENT_SPAN}-01` } })).status, 200);
    // Without spans the client's traceparent passes unchanged, as before.
    assert.equal(upstreamSaw(web, '/web/plain'), `00-${traceIdOf(74)}-${CLIENT_SPAN}-01`);
    assert.equal(await plain.kill('SIGTERM'), 0);
    assert.equal(own.posts.length, 0);
    assert.equal(await metric(gw.adminUrl, 'cgw_otlp_export_failures_total'), 0, 'the exporting gateway had no failure either');
  } finally {
    await plain.kill();
    await own.close();
  }
});

test('bad OTLP flags stop the start with exit 2 and name the flag', async () => {
  const cases: [string[], RegExp][] = [
    [['--otlp-endpoint', 'ftp://127.0.0.1:4318/v1/traces'], /--otlp-endpoint: expected an http\(s\) URL/],
    [['--otlp-endpoint', 'not a url'], /--otlp-endpoint/],
    [['--otlp-endpoint', 'http://127.0.0.1:4318/v1/traces', '--otlp-sample', '1.5'], /--otlp-sample: at most 1/],
    [['--otlp-endpoint', 'http://127.0.0.1:4318/v1/traces', '--otlp-sample', 'lots'], /--otlp-sample: expected a ratio/],
    [['--otlp-endpoint', 'http://127.0.0.1:4318/v1/traces', '--otlp-headers', 'bad header=1'], /--otlp-headers/],
    [['--otlp-sample', '0.5'], /need --otlp-endpoint/],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(['start', '--consul', consul.addr, '--workers', '1', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
});
