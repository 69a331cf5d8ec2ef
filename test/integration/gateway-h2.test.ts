/**
 * HTTP/2 at the edge: the TLS listener speaks h2 by ALPN and HTTP/1.1 on the same port, the plain
 * listener speaks prior-knowledge h2c beside HTTP/1.1 with --h2c; connection-specific fields are
 * never sent to or forwarded from an HTTP/2 client; stream and header limits hold; a rapid-reset
 * flood (CVE-2023-44487) ends the attacker's session while other clients are served and the
 * upstream sees a bounded number of requests; Consul changes still apply afterwards.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as http2Connect, constants, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { Agent, request as httpsRequest, type RequestOptions } from 'node:https';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePorts } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import * as pem from '../helpers/tls-certs.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
let web: Upstream;
let dir: string;
let tlsPort: number;

const MAX_STREAMS = 20;

function h2Session(url: string): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2Connect(url, { rejectUnauthorized: false, servername: 'default.test' });
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

interface H2Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function h2Request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: string): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    let text = '';
    let head: IncomingHttpHeaders = {};
    stream.setEncoding('utf8');
    stream.on('response', (h) => (head = h));
    stream.on('data', (c: string) => (text += c));
    stream.on('end', () => resolve({ status: Number(head[':status']), headers: head, body: text }));
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });
}

/** One h2 request on a fresh session, closed afterwards. */
async function h2Get(url: string, path: string, extra: OutgoingHttpHeaders = {}): Promise<H2Answer> {
  const session = await h2Session(url);
  try {
    return await h2Request(session, { ':path': path, ...extra });
  } finally {
    session.close();
  }
}

const tlsAgent = new Agent({ keepAlive: false, rejectUnauthorized: false });

function http1Tls(path: string): Promise<{ status: number; version: string; body: string; alpn: string | false | null }> {
  return new Promise((resolve, reject) => {
    const options: RequestOptions & { ALPNProtocols: string[] } = { host: '127.0.0.1', port: tlsPort, path, agent: tlsAgent, ALPNProtocols: ['http/1.1'] };
    const req = httpsRequest(options, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, version: res.httpVersion, body, alpn: (res.socket as { alpnProtocol?: string | false }).alpnProtocol ?? null }));
    });
    req.once('error', reject);
    req.end();
  });
}

function http1Plain(path: string): Promise<{ status: number; version: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${gw.url}${path}`, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, version: res.httpVersion, body }));
    });
    req.once('error', reject);
    req.end();
  });
}

async function metric(pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (pattern.test(line)) sum += Number(line.split(' ').at(-1));
  return sum;
}

const tlsUrl = (): string => `https://127.0.0.1:${tlsPort}`;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cgw-h2-'));
  await writeFile(join(dir, 'default.crt'), pem.DEFAULT_CERT);
  await writeFile(join(dir, 'default.key'), pem.DEFAULT_KEY);
  consul = await startConsul();
  web = await startUpstream('web');
  await consul.register({ id: 'web-1', name: 'web', port: web.port, tags: ['urlprefix-/web', 'urlprefix-/echo'] });
  [tlsPort] = (await freePorts(1)) as [number];
  gw = await startGateway({
    consul: consul.addr,
    args: [
      '--listen-tls', `127.0.0.1:${tlsPort}`,
      '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key'),
      '--h2c',
      '--http2-max-concurrent-streams', String(MAX_STREAMS),
      '--max-header-size', '8192',
      '--max-header-count', '50',
      '--client-header-timeout', '2s',
    ],
  });
  await waitFor(async () => (await h2Get(tlsUrl(), '/web')).status === 200, { timeoutMs: 20_000, message: 'route /web served over h2' });
});

after(async () => {
  tlsAgent.destroy();
  await gw?.kill();
  await web?.close();
  await consul?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('the TLS port speaks h2 (ALPN) and HTTP/1.1 alike; :authority is the Host the upstream sees', async () => {
  const session = await h2Session(tlsUrl());
  try {
    assert.equal(session.alpnProtocol, 'h2');
    const h2 = await h2Request(session, { ':path': '/web/a?x=1', ':authority': 'shop.example:443', 'x-client': 'h2' });
    assert.equal(h2.status, 200);
    const seen = JSON.parse(h2.body) as { url: string; headers: Record<string, string> };
    assert.equal(seen.url, '/web/a?x=1');
    assert.equal(seen.headers.host, 'shop.example:443');
    assert.equal(seen.headers['x-client'], 'h2');
    assert.equal(seen.headers['x-forwarded-proto'], 'https');
    assert.ok(!Object.keys(seen.headers).some((name) => name.startsWith(':')), 'no pseudo-header reaches an HTTP/1.1 upstream');
    // HTTP/1.1's connection fields from the upstream (keep-alive, connection) never reach an h2 client.
    assert.equal(h2.headers.connection, undefined);
    assert.equal(h2.headers['keep-alive'], undefined);
    assert.ok(h2.headers['x-request-id']);
  } finally {
    session.close();
  }
  const h1 = await http1Tls('/web/b');
  assert.equal(h1.status, 200);
  assert.equal(h1.version, '1.1');
  assert.equal(h1.alpn, 'http/1.1');
});

test('a request body travels over h2 to an HTTP/1.1 upstream and back', async () => {
  const session = await h2Session(tlsUrl());
  try {
    const payload = 'x'.repeat(200_000);
    const answer = await h2Request(session, { ':path': '/echo', ':method': 'POST', 'content-type': 'text/plain' }, payload);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.length, payload.length);
    // Many streams on one session at once.
    const many = await Promise.all(Array.from({ length: 50 }, (_, i) => h2Request(session, { ':path': `/web/n${i}` })));
    assert.deepEqual(new Set(many.map((a) => a.status)), new Set([200]));
  } finally {
    session.close();
  }
});

test('gateway answers over h2 carry no connection fields; a Host that contradicts :authority is refused', async () => {
  const missing = await h2Get(tlsUrl(), '/nothing-here');
  assert.equal(missing.status, 404);
  assert.equal(missing.headers.connection, undefined);
  assert.equal((JSON.parse(missing.body) as { error: { code: string } }).error.code, 'route_not_found');
  const contradicting = await h2Get(tlsUrl(), '/web', { ':authority': 'a.example', host: 'b.example' });
  assert.equal(contradicting.status, 400);
  // Connection-specific fields from an h2 client are malformed (RFC 9113 §8.2.2): Node's client
  // refuses to send them, so what we can check is that nothing of the sort reaches the upstream.
  const before = web.requests.length;
  assert.equal((await h2Get(tlsUrl(), '/web/te', { te: 'trailers' })).status, 200);
  const seen = web.requests[before];
  assert.equal(seen?.headers.te, undefined, 'te is hop-by-hop towards an HTTP/1.1 upstream');
});

test('--h2c: prior-knowledge HTTP/2 and HTTP/1.1 share the plain port', async () => {
  const h2 = await h2Get(gw.url, '/web/plain');
  assert.equal(h2.status, 200);
  assert.equal((JSON.parse(h2.body) as { headers: Record<string, string> }).headers['x-forwarded-proto'], 'http');
  const h1 = await http1Plain('/web/plain');
  assert.equal(h1.status, 200);
  assert.equal(h1.version, '1.1');
  const post = await http1Plain('/web/echo');
  assert.equal(post.status, 200);
});

test('header limits: a header list over --max-header-size or fields over --max-header-count are refused, the session serves on', async () => {
  const session = await h2Session(tlsUrl());
  try {
    const many: OutgoingHttpHeaders = { ':path': '/web' };
    for (let i = 0; i < 60; i++) many[`x-field-${i}`] = 'v';
    const tooMany = await h2Request(session, many).catch((err: Error) => err);
    // 431 from the pipeline (or the stream refused by the HTTP/2 layer): never forwarded.
    if (!(tooMany instanceof Error)) assert.equal(tooMany.status, 431);
    const big = await h2Request(session, { ':path': '/web', 'x-big': 'b'.repeat(20_000) }).catch((err: Error) => err);
    if (!(big instanceof Error)) assert.ok(big.status === 431, `status ${big.status}`);
    assert.ok(!web.requests.some((r) => r.headers['x-big'] !== undefined || r.headers['x-field-59'] !== undefined), 'nothing over the limits was forwarded');
  } finally {
    session.destroy();
  }
  assert.equal((await h2Get(tlsUrl(), '/web')).status, 200);
});

test('concurrent streams beyond --http2-max-concurrent-streams wait on the client, never overrun the server', async () => {
  const session = await h2Session(tlsUrl());
  try {
    await waitFor(() => (session.remoteSettings.maxConcurrentStreams === MAX_STREAMS ? true : undefined), { timeoutMs: 5_000, message: 'SETTINGS received' });
    web.set({ delayMs: 300 });
    const answers = await Promise.all(Array.from({ length: MAX_STREAMS * 3 }, (_, i) => h2Request(session, { ':path': `/web/slow${i}` })));
    assert.deepEqual(new Set(answers.map((a) => a.status)), new Set([200]));
  } finally {
    web.set({ delayMs: 0 });
    session.close();
  }
});

/**
 * Opens streams and resets each at once (HEADERS then RST_STREAM(CANCEL)), keeping as many in
 * the air as the server's stream limit allows (a reset stream frees its slot, so the limit never
 * binds), as fast as the client can, until `count` were sent or the gateway ended the session.
 */
function rapidReset(url: string, count: number): Promise<{ sent: number; goawayCode: number | null }> {
  return new Promise((resolve) => {
    const session = http2Connect(url, { rejectUnauthorized: false, servername: 'default.test' });
    let sent = 0;
    let goawayCode: number | null = null;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      resolve({ sent, goawayCode });
    };
    session.on('error', () => undefined);
    session.on('goaway', (code: number) => (goawayCode = code));
    session.once('close', finish);
    const open = (): void => {
      if (session.destroyed || session.closed || sent >= count) return;
      let stream;
      try {
        stream = session.request({ ':path': `/web/flood${sent}` });
      } catch {
        return;
      }
      sent += 1;
      stream.on('error', () => undefined);
      // Closed at once: Node's client sends the HEADERS, then RST_STREAM, as soon as it may.
      stream.close(constants.NGHTTP2_CANCEL);
      stream.once('close', () => {
        if (sent < count) open();
        // All sent and the session still open: give the gateway time to act on the last ones.
        else setTimeout(finish, 5_000);
      });
    };
    session.once('connect', () => {
      for (let i = 0; i < MAX_STREAMS; i++) open();
    });
    // A client whose connection was cut may never hear of it while its own writes are stuck:
    // no stream finished for 3 s counts as the end of the flood.
    let lastSent = -1;
    const watch = setInterval(() => {
      if (sent === lastSent) {
        clearInterval(watch);
        session.destroy();
        finish();
      }
      lastSent = sent;
    }, 3_000);
    session.once('close', () => clearInterval(watch));
    // The gateway's GOAWAY (ENHANCE_YOUR_CALM) or nghttp2's own reset limit (INTERNAL_ERROR).
    session.once('error', finish);
  });
}

test('rapid reset (CVE-2023-44487): the flooding session is ended with ENHANCE_YOUR_CALM, others are served, the upstream sees a bounded number', async () => {
  const hitsBefore = web.hits;
  const refusedBefore = await metric(/^cgw_http2_sessions_refused_total\{reason="rapid_reset"\}/);
  // A well-behaved client keeps asking during the attack.
  let served = 0;
  let failedBystander = 0;
  let firstError: string | undefined;
  let attacking = true;
  const bystander = (async () => {
    const session = await h2Session(tlsUrl());
    try {
      while (attacking) {
        const answer = await h2Request(session, { ':path': '/web/bystander' }).catch((err: Error) => {
          firstError ??= err.message;
          return null;
        });
        if (answer?.status === 200) served += 1;
        else {
          failedBystander += 1;
          firstError ??= `${answer?.status} ${answer?.body}`;
        }
      }
    } finally {
      session.close();
    }
  })();
  const FLOOD = 5_000;
  const outcome = await rapidReset(tlsUrl(), FLOOD);
  attacking = false;
  await bystander;
  assert.ok(outcome.sent < FLOOD, `the session was cut before all ${FLOOD} streams were sent (sent ${outcome.sent})`);
  // GOAWAY(ENHANCE_YOUR_CALM) when the client still reads it; the cut connection in any case.
  assert.ok(outcome.goawayCode === null || outcome.goawayCode === constants.NGHTTP2_ENHANCE_YOUR_CALM, `GOAWAY code ${outcome.goawayCode}`);
  await waitFor(async () => ((await metric(/^cgw_http2_sessions_refused_total\{reason="rapid_reset"\}/)) > refusedBefore ? true : undefined), { timeoutMs: 10_000, message: 'rapid reset counted' });
  // Only the bystander's session is left open on the gateway.
  await waitFor(async () => ((await metric(/^cgw_http2_sessions_open /)) === 0 ? true : undefined), { timeoutMs: 15_000, message: 'the flooding session is gone on the gateway' });
  assert.ok((await metric(/^cgw_http2_stream_resets_total /)) > 0);
  assert.ok(served > 0, 'the bystander was served during the attack');
  // The flood's aborted requests can hold the endpoint's request cap for a moment before the
  // session is cut (seen: one 503 upstream_busy in ~1,000): the bystander is served, not starved.
  assert.ok(failedBystander * 20 <= served, `${failedBystander} of ${served + failedBystander} bystander requests failed (${firstError})`);
  const upstreamSaw = web.hits - hitsBefore - served;
  assert.ok(upstreamSaw < 1_000, `the upstream saw ${upstreamSaw} of ${outcome.sent} reset streams`);
  // The same over h2c on the plain port.
  const refusedAfterTls = await metric(/^cgw_http2_sessions_refused_total\{reason="rapid_reset"\}/);
  // Nothing of the flood is left holding the endpoint.
  await waitFor(async () => ((await h2Get(tlsUrl(), '/web/after')).status === 200 ? true : undefined), { timeoutMs: 10_000, message: 'served after the flood' });
  const hitsBeforePlain = web.hits;
  const plain = await rapidReset(gw.url, FLOOD);
  // Node's client may go on counting streams it never sent once the session is cut: the
  // upstream's count is what the attack achieved.
  assert.ok(web.hits - hitsBeforePlain < 1_000, `h2c flood: the upstream saw ${web.hits - hitsBeforePlain} requests`);
  // Ours (ENHANCE_YOUR_CALM, counted) or, when nghttp2's own reset-rate limit came first, its INTERNAL_ERROR.
  if (plain.goawayCode !== constants.NGHTTP2_INTERNAL_ERROR) {
    await waitFor(async () => ((await metric(/^cgw_http2_sessions_refused_total\{reason="rapid_reset"\}/)) > refusedAfterTls ? true : undefined), { timeoutMs: 10_000, message: 'h2c rapid reset counted' });
  }
});

test('HTTP/2 sessions and streams are counted; after the attacks a Consul change still applies over h2', async () => {
  assert.ok((await metric(/^cgw_http2_sessions_total /)) > 5);
  assert.ok((await metric(/^cgw_http2_streams_total /)) > 50);
  const api = await startUpstream('api');
  try {
    await consul.register({ id: 'api-1', name: 'api', port: api.port, tags: ['urlprefix-/api'] });
    await waitFor(async () => ((await h2Get(tlsUrl(), '/api/x')).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'a service registered after the attacks is routed over h2' });
    assert.equal((await h2Get(gw.url, '/api/y')).status, 200);
  } finally {
    await api.close();
  }
});

test('a session that never sends a request is closed after --client-header-timeout', async () => {
  const session = await h2Session(gw.url);
  const started = Date.now();
  await new Promise<void>((resolve) => session.once('close', () => resolve()));
  const ms = Date.now() - started;
  assert.ok(ms >= 1_000 && ms < 25_000, `closed after ${ms} ms`);
});
