/**
 * WebSocket through the gateway, end to end: a real Consul agent, a real `ws` echo server
 * registered in it and a `ws` client. Echo over the plain and the TLS listener; the handshake goes
 * through the route's authentication and rate limits like any request; idle timeout and max
 * lifetime close both sides with 1001; open connections show in /metrics and `cgw status`;
 * malformed, slow, huge and abandoned handshakes and frames leak nothing and the gateway still
 * serves and applies Consul changes; SIGTERM closes an open connection with 1001 on both sides
 * within the drain timeout, and the process exits.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { connect as netConnect, createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { generateApiKey } from '../../src/policy/consumers.ts';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePort, freePorts } from '../helpers/ports.ts';
import { exchange, header } from '../helpers/raw-http.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import * as pem from '../helpers/tls-certs.ts';

const PREFIX = 'gateway/';
const DRAIN_TIMEOUT_MS = 6_000;
const MAX_CONNECTIONS = 40;

interface UpstreamConnection {
  readonly headers: Record<string, string | string[] | undefined>;
  readonly url: string;
  /** Close code the upstream received, once closed. */
  closeCode: number | null;
  readonly socket: WebSocket;
}

let consul: ConsulAgent;
let gw: GatewayProcess;
let echo: { server: WebSocketServer; port: number; connections: UpstreamConnection[] };
let stall: { server: NetServer; port: number; sockets: Set<Socket> };
let web: Upstream;
/** A wss:// echo server, reached through a route document with an https upstream. */
let secureEcho: { server: HttpsServer; port: number; connections: UpstreamConnection[] };
let dir: string;
let tlsPort: number;
const alice = generateApiKey('alice');

async function startSecureEcho(): Promise<typeof secureEcho> {
  const port = await freePort();
  const server = createHttpsServer({ cert: pem.DEFAULT_CERT, key: pem.DEFAULT_KEY });
  const wss = new WebSocketServer({ server });
  const connections: UpstreamConnection[] = [];
  wss.on('connection', (socket, req) => {
    const c: UpstreamConnection = { headers: req.headers, url: req.url ?? '', closeCode: null, socket };
    connections.push(c);
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
    socket.on('close', (code) => (c.closeCode = code));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, port, connections };
}

async function startEcho(): Promise<typeof echo> {
  const port = await freePort();
  const server = new WebSocketServer({ host: '127.0.0.1', port });
  const connections: UpstreamConnection[] = [];
  server.on('connection', (socket, req) => {
    const c: UpstreamConnection = { headers: req.headers, url: req.url ?? '', closeCode: null, socket };
    connections.push(c);
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
    socket.on('close', (code) => (c.closeCode = code));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.once('listening', resolve));
  return { server, port, connections };
}

/** Accepts connections and never answers: an upstream that hangs the handshake. */
async function startStall(): Promise<typeof stall> {
  const port = await freePort();
  const sockets = new Set<Socket>();
  const server = createNetServer((s) => {
    sockets.add(s);
    // Read and drop, so the gateway's FIN is seen.
    s.resume();
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, port, sockets };
}

type Opened = { ok: true; ws: WebSocket } | { ok: false; status: number; body: string; headers: Record<string, string | string[] | undefined> };

/** Opens a WebSocket through the gateway; a refusal resolves with the answer instead. */
function open(path: string, opts: { headers?: Record<string, string>; tls?: boolean; port?: number } = {}): Promise<Opened> {
  const url = opts.tls ? `wss://127.0.0.1:${tlsPort}${path}` : `ws://127.0.0.1:${opts.port ?? gw.listenPort}${path}`;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: opts.headers, rejectUnauthorized: false, handshakeTimeout: 15_000 });
    ws.once('open', () => resolve({ ok: true, ws }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ ok: false, status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    ws.once('error', reject);
  });
}

async function opened(path: string, opts: { headers?: Record<string, string>; tls?: boolean; port?: number } = {}): Promise<WebSocket> {
  const r = await open(path, opts);
  if (!r.ok) assert.fail(`expected a WebSocket on ${path}, got ${r.status} ${r.body}`);
  return r.ws;
}

function roundTrip(ws: WebSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    ws.once('message', (data) => resolve(String(data)));
    ws.once('error', reject);
    ws.send(text);
  });
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve({ code: -1, reason: 'already closed' });
    ws.once('close', (code, reason) => resolve({ code, reason: String(reason) }));
  });
}

async function metric(pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => pattern.test(l));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

async function openWebSockets(): Promise<{ open: number; byRoute: Record<string, number> } | null> {
  const s = (await (await fetch(`${gw.adminUrl}/v1/status`)).json()) as { websocket: { open: number; byRoute: Record<string, number> } | null };
  return s.websocket;
}

async function endpointInflight(service: string): Promise<number> {
  const list = (await (await fetch(`${gw.adminUrl}/v1/services/${service}/endpoints`)).json()) as { inflight: number }[];
  return list.reduce((n, e) => n + e.inflight, 0);
}

/** Until no WebSocket is open and no handshake is in flight: nothing leaked. */
async function nothingOpen(message: string): Promise<void> {
  await waitFor(async () => (await openWebSockets())?.open === 0 && (await endpointInflight('chat')) === 0 && (await endpointInflight('stall')) === 0, { timeoutMs: 20_000, message });
}

function handshakeHead(path: string, extra: Record<string, string> = {}): string {
  const fields: Record<string, string> = {
    host: 'localhost',
    upgrade: 'websocket',
    connection: 'Upgrade',
    'sec-websocket-key': randomBytes(16).toString('base64'),
    'sec-websocket-version': '13',
    ...extra,
  };
  return `GET ${path} HTTP/1.1\r\n${Object.entries(fields).filter(([, v]) => v !== '').map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
}

/** A raw client past the 101: the socket, and the bytes received after the handshake. */
function rawUpgrade(path: string): Promise<{ socket: Socket; received: Buffer[]; ended: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ port: gw.listenPort, host: '127.0.0.1' });
    const received: Buffer[] = [];
    let head = Buffer.alloc(0);
    let upgraded = false;
    const ended = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      if (upgraded) return received.push(d);
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      if (!head.subarray(0, 12).toString().startsWith('HTTP/1.1 101')) return reject(new Error(`no 101: ${head.toString()}`));
      upgraded = true;
      if (end + 4 < head.length) received.push(head.subarray(end + 4));
      resolve({ socket, received, ended });
    });
    socket.once('connect', () => socket.write(handshakeHead(path)));
  });
}

/** A close frame's code in what a raw client received (server frames are not masked). */
function closeCodeIn(bytes: Buffer): number | undefined {
  for (let i = 0; i + 3 < bytes.length; i++) if (bytes[i] === 0x88 && ((bytes[i + 1] as number) & 0x80) === 0) return bytes.readUInt16BE(i + 2);
  return undefined;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cgw-ws-'));
  const policies = join(dir, 'policies');
  await import('node:fs/promises').then((fs) => fs.mkdir(policies));
  await writeFile(join(dir, 'default.crt'), pem.DEFAULT_CERT);
  await writeFile(join(dir, 'default.key'), pem.DEFAULT_KEY);
  const doc = (name: string, body: unknown): Promise<void> => writeFile(join(policies, `${name}.json`), JSON.stringify(body));
  await doc('secure', { appliesTo: { route: '/secure-chat' }, auth: { methods: ['apiKey'] } });
  await doc('limited', { appliesTo: { route: '/limited-chat' }, rateLimits: [{ name: 'handshakes', by: 'ip', limit: 2, window: '1m' }] });
  await doc('idle', { appliesTo: { route: '/idle-chat' }, websocket: { idleTimeout: '1s', maxLifetime: '1h' } });
  await doc('life', { appliesTo: { route: '/life-chat' }, websocket: { idleTimeout: '1h', maxLifetime: '2s' } });
  await doc('stall', { appliesTo: { service: 'stall' }, timeouts: { responseHeaders: '1s' } });
  consul = await startConsul();
  echo = await startEcho();
  secureEcho = await startSecureEcho();
  await import('node:fs/promises').then((fs) => fs.mkdir(join(policies, 'routes')));
  await writeFile(join(policies, 'routes', 'secure-upstream.json'), JSON.stringify({ path: '/wss-upstream', upstreams: [`https://127.0.0.1:${secureEcho.port}`] }));
  stall = await startStall();
  web = await startUpstream('web');
  await consul.kvPut(`${PREFIX}consumers/alice`, JSON.stringify({ keyHash: alice.keyHash }));
  await consul.register({ id: 'chat-1', name: 'chat', port: echo.port, tags: ['urlprefix-/chat', 'urlprefix-/secure-chat', 'urlprefix-/limited-chat', 'urlprefix-/idle-chat', 'urlprefix-/life-chat'] });
  await consul.register({ id: 'stall-1', name: 'stall', port: stall.port, tags: ['urlprefix-/stall'] });
  await consul.register({ id: 'web-1', name: 'web', port: web.port, tags: ['urlprefix-/web'] });
  // Nothing listens there: connections are refused.
  await consul.register({ id: 'dead-1', name: 'dead', port: await freePort(), tags: ['urlprefix-/dead'] });
  [tlsPort] = (await freePorts(1)) as [number];
  gw = await startGateway({
    consul: consul.addr,
    args: [
      '--policies', policies,
      '--listen-tls', `127.0.0.1:${tlsPort}`,
      '--tls-cert', join(dir, 'default.crt'), '--tls-key', join(dir, 'default.key'),
      '--drain-timeout', `${DRAIN_TIMEOUT_MS}ms`,
      '--max-connections', String(MAX_CONNECTIONS),
      '--max-header-size', '8192',
    ],
    // The https upstream's certificate (self-signed for localhost and 127.0.0.1) is trusted like a CA.
    env: { NODE_EXTRA_CA_CERTS: join(dir, 'default.crt') },
  });
  await waitFor(async () => {
    const r = await open('/chat');
    if (r.ok) r.ws.terminate();
    return r.ok;
  }, { timeoutMs: 20_000, message: 'route /chat upgrades' });
  await waitFor(async () => (await fetch(`${gw.url}/web`)).status === 200, { timeoutMs: 20_000, message: 'route /web served' });
});

after(async () => {
  if (gw) await gw.kill();
  echo?.server.close();
  for (const c of secureEcho?.connections ?? []) c.socket.terminate();
  secureEcho?.server.close();
  for (const c of echo?.connections ?? []) c.socket.terminate();
  stall?.server.close();
  for (const s of stall?.sockets ?? []) s.destroy();
  await web?.close();
  await consul?.stop();
  await rm(dir, { recursive: true, force: true });
});

test('echo through the plain listener; the upstream sees the forwarded headers and never a forged identity', async () => {
  const ws = await opened('/chat/room?x=1', { headers: { 'x-request-id': 'ws-echo-1', 'x-cgw-subject': 'forged', 'x-forwarded-proto': 'https' } });
  assert.equal(await roundTrip(ws, 'hello'), 'hello');
  assert.equal(await roundTrip(ws, 'x'.repeat(100_000)), 'x'.repeat(100_000), 'a frame with a 64-bit length');
  const seen = echo.connections.at(-1);
  assert.equal(seen?.url, '/chat/room?x=1');
  assert.equal(seen?.headers['x-request-id'], 'ws-echo-1');
  assert.equal(seen?.headers['x-forwarded-for'], '127.0.0.1');
  assert.equal(seen?.headers['x-forwarded-proto'], 'http');
  assert.equal(seen?.headers['x-cgw-subject'], undefined);
  ws.close(1000, 'done');
  assert.equal((await closed(ws)).code, 1000);
  await waitFor(() => seen?.closeCode === 1000, { message: 'the upstream got the client close' });
});

test('echo through the TLS listener; the upstream is told the client spoke TLS', async () => {
  const ws = await opened('/chat/tls', { tls: true });
  assert.equal(await roundTrip(ws, 'over tls'), 'over tls');
  assert.equal(echo.connections.at(-1)?.headers['x-forwarded-proto'], 'https');
  ws.close();
  await closed(ws);
});

test('an https upstream is dialled over TLS (its certificate verified) and relays like any other', async () => {
  const ws = await opened('/wss-upstream/room');
  assert.equal(await roundTrip(ws, 'to a TLS upstream'), 'to a TLS upstream');
  assert.equal(secureEcho.connections.at(-1)?.url, '/wss-upstream/room');
  ws.close();
  await closed(ws);
});

test('authentication runs on the handshake: 401 without a key (nothing reaches the upstream), echo with one', async () => {
  const before = echo.connections.length;
  const refused = await open('/secure-chat');
  assert.equal(refused.ok, false);
  assert.equal(refused.ok ? 0 : refused.status, 401);
  assert.match(refused.ok ? '' : refused.body, /"code":"unauthorized"/);
  const wrong = await open('/secure-chat', { headers: { 'x-api-key': 'cgw_alice_' + '0'.repeat(64) } });
  assert.equal(wrong.ok ? 0 : wrong.status, 401);
  assert.equal(echo.connections.length, before, 'a refused handshake never reaches the upstream');
  const ws = await opened('/secure-chat', { headers: { 'x-api-key': alice.key } });
  assert.equal(await roundTrip(ws, 'authenticated'), 'authenticated');
  const seen = echo.connections.at(-1);
  assert.equal(seen?.headers['x-cgw-consumer'], 'alice');
  assert.equal(seen?.headers['x-api-key'], undefined, 'the key is not forwarded');
  ws.close();
  await closed(ws);
});

test('rate limits count handshakes: the third within the window gets 429', async () => {
  const first = await opened('/limited-chat');
  const second = await opened('/limited-chat');
  const third = await open('/limited-chat');
  assert.equal(third.ok ? 101 : third.status, 429);
  assert.match(third.ok ? '' : third.body, /"code":"rate_limited"/);
  assert.equal(await roundTrip(first, 'still open'), 'still open');
  first.close();
  second.close();
  await Promise.all([closed(first), closed(second)]);
});

test('idle timeout: a quiet connection is closed with 1001 on both sides', async () => {
  const ws = await opened('/idle-chat');
  const seen = echo.connections.at(-1);
  const { code, reason } = await closed(ws);
  assert.equal(code, 1001);
  assert.equal(reason, 'idle timeout');
  await waitFor(() => seen?.closeCode === 1001, { message: 'the upstream got 1001 too' });
  await waitFor(async () => (await metric(/^cgw_websocket_closes_total\{service="chat",reason="idle"\} /)) >= 1, { message: 'counted as an idle close' });
});

test('max lifetime: a busy connection is closed with 1001 on both sides when its lifetime ends', async () => {
  const ws = await opened('/life-chat');
  const seen = echo.connections.at(-1);
  const ping = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send('busy'), 100);
  try {
    const { code, reason } = await closed(ws);
    assert.equal(code, 1001);
    assert.equal(reason, 'max lifetime reached');
  } finally {
    clearInterval(ping);
  }
  await waitFor(() => seen?.closeCode === 1001, { message: 'the upstream got 1001 too' });
});

test('open connections show in /metrics, /v1/status and cgw status, and go when they close', async () => {
  const a = await opened('/chat/a');
  const b = await opened('/chat/b', { tls: true });
  await waitFor(async () => (await metric(/^cgw_websocket_connections\{route="\/chat",service="chat"\} /)) === 2, { message: 'gauge at 2' });
  assert.deepEqual(await openWebSockets(), { open: 2, byRoute: { '/chat': 2 } });
  const st = await runCli(['status', '--admin', gw.adminUrl]);
  assert.match(st.stdout, /^websocket:\s+2 open \(\/chat 2\)$/m);
  assert.ok((await metric(/^cgw_websocket_upgrades_total\{route="\/chat",result="upgraded"\} /)) >= 2);
  assert.ok((await metric(/^cgw_websocket_bytes_total\{service="chat",direction="to_client"\} /)) > 0);
  a.close();
  b.close();
  await Promise.all([closed(a), closed(b)]);
  await waitFor(async () => (await openWebSockets())?.open === 0, { message: 'none open' });
  assert.equal(await metric(/^cgw_websocket_connections\{route="\/chat",service="chat"\} /), 0);
});

test('malformed handshakes get clear JSON refusals; another protocol is served as a normal request', async () => {
  const noKey = await exchange(gw.listenPort, [handshakeHead('/chat', { 'sec-websocket-key': '' })], { answers: 1 });
  assert.equal(noKey.finals[0]?.status, 400);
  assert.match(String(noKey.finals[0]?.body), /bad_websocket_handshake/);
  const v8 = await exchange(gw.listenPort, [handshakeHead('/chat', { 'sec-websocket-version': '8' })], { answers: 1 });
  assert.equal(v8.finals[0]?.status, 426);
  assert.equal(header(v8.finals[0] as never, 'sec-websocket-version'), '13');
  const post = await exchange(gw.listenPort, [handshakeHead('/chat').replace('GET', 'POST')], { answers: 1 });
  assert.equal(post.finals[0]?.status, 400);
  const h2c = await exchange(gw.listenPort, ['GET /web HTTP/1.1\r\nhost: localhost\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n'], { answers: 1 });
  assert.equal(h2c.finals[0]?.status, 200, 'served as HTTP/1.1');
  assert.equal(header(h2c.finals[0] as never, 'connection'), 'close');
  assert.equal(web.requests.at(-1)?.headers.upgrade, undefined, 'Upgrade is hop-by-hop');
  const h2cBody = await exchange(gw.listenPort, ['POST /web HTTP/1.1\r\nhost: localhost\r\nconnection: Upgrade\r\nupgrade: h2c\r\ncontent-length: 3\r\n\r\nabc'], { answers: 1 });
  assert.equal(h2cBody.finals[0]?.status, 400);
  const big = await exchange(gw.listenPort, [handshakeHead('/chat', { 'x-big': 'a'.repeat(10_000) })], { answers: 1 });
  assert.equal(big.finals[0]?.status, 431);
  const garbled = await exchange(gw.listenPort, [`GET /chat HTTP/1.1\r\nhost: localhost\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\u0000\u0001bad\r\n\r\n`], { answers: 1 });
  assert.equal(garbled.finals[0]?.status ?? 400, 400);
  const proto = await exchange(gw.listenPort, [handshakeHead('/__proto__', { upgrade: '__proto__' })], { answers: 1 });
  assert.equal(proto.finals[0]?.status, 404);
  await nothingOpen('nothing left open after malformed handshakes');
});

test('an upstream that never answers the handshake: 504 within the route response timeout', async () => {
  const r = await exchange(gw.listenPort, [handshakeHead('/stall')], { answers: 1, deadlineMs: 15_000 });
  assert.equal(r.finals[0]?.status, 504);
  assert.match(String(r.finals[0]?.body), /upstream_timeout/);
  await nothingOpen('the stalled handshake leaves nothing in flight');
  await waitFor(() => stall.sockets.size === 0, { timeoutMs: 10_000, message: 'the gateway closed its connection to the upstream' });
});

test('an upstream that answers the handshake without 101: its answer is relayed as a normal response', async () => {
  const r = await open('/web/not-a-websocket');
  assert.equal(r.ok, false);
  assert.equal(r.ok ? 0 : r.status, 200);
  assert.equal(r.ok ? undefined : r.headers['x-upstream'], 'web');
  assert.match(r.ok ? '' : r.body, /"url":"\/web\/not-a-websocket"/);
  assert.ok((await metric(/^cgw_websocket_upgrades_total\{route="\/web",result="upstream_refused"\} /)) >= 1);
});

test('an upstream that refuses connections: 502 upstream_unreachable, counted', async () => {
  const r = await open('/dead');
  assert.equal(r.ok ? 101 : r.status, 502);
  assert.match(r.ok ? '' : r.body, /"code":"upstream_unreachable"/);
  assert.ok((await metric(/^cgw_websocket_upgrades_total\{route="\/dead",result="upstream_failed"\} /)) >= 1);
  assert.ok((await metric(/^cgw_requests_total\{route="\/dead",service="dead",code="502"\} /)) >= 1);
});

test('a client that leaves mid-handshake leaks nothing', async () => {
  await exchange(gw.listenPort, [handshakeHead('/stall')], { leave: true });
  await exchange(gw.listenPort, [handshakeHead('/chat').slice(0, 40)], { leave: true });
  await waitFor(() => stall.sockets.size === 0, { timeoutMs: 10_000, message: 'the upstream connection is closed too' });
  await nothingOpen('nothing in flight after clients left');
});

test('a handshake pipelined behind a normal request: the answers go out in order, then the WebSocket works', async () => {
  const socket = netConnect({ port: gw.listenPort, host: '127.0.0.1' });
  socket.on('error', () => undefined);
  let received = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => (received = Buffer.concat([received, d])));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  socket.write(`GET /web HTTP/1.1\r\nhost: localhost\r\n\r\n${handshakeHead('/chat/pipelined')}`);
  await waitFor(() => received.includes('101 Switching Protocols'), { message: 'the 101 after the first answer' });
  const text = received.toString('latin1');
  assert.ok(text.startsWith('HTTP/1.1 200'), text.slice(0, 200));
  assert.ok(text.indexOf('HTTP/1.1 101') > text.indexOf('HTTP/1.1 200'));
  // A masked text frame "hi" comes back unmasked.
  const mark = received.length;
  socket.write(Buffer.from([0x81, 0x82, 1, 2, 3, 4, 0x68 ^ 1, 0x69 ^ 2]));
  await waitFor(() => received.subarray(mark).includes(Buffer.from([0x81, 0x02, 0x68, 0x69])), { message: 'the echo' });
  socket.destroy();
  await nothingOpen('nothing left after the pipelined upgrade');
});

test('a huge frame header then a stall: the idle timeout closes the client with 1001 and cuts the upstream', async () => {
  const { socket, received, ended } = await rawUpgrade('/idle-chat');
  // A masked binary frame announcing 50 MB in the 64-bit length encoding (below the echo
  // server's own limit, which would otherwise close first), a few bytes of it, then nothing.
  const head = Buffer.from([0x82, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
  head.writeUInt32BE(50_000_000, 6);
  socket.write(Buffer.concat([head, Buffer.alloc(1000)]));
  await ended;
  assert.equal(closeCodeIn(Buffer.concat(received)), 1001);
  await nothingOpen('the stalled connection is gone');
});

test('a half-closed client: its FIN reaches the upstream and the connection ends', async () => {
  const { socket, ended } = await rawUpgrade('/chat');
  const seen = echo.connections.at(-1);
  socket.end();
  await ended;
  await waitFor(() => seen?.closeCode !== null, { message: 'the upstream connection ended' });
  await nothingOpen('nothing left after a half-close');
});

test('a frame the gateway cannot relay (unmasked from a client) ends the connection with 1002', async () => {
  const { socket, received, ended } = await rawUpgrade('/chat');
  socket.write(Buffer.from([0x81, 0x02, 0x68, 0x69]));
  await ended;
  assert.equal(closeCodeIn(Buffer.concat(received)), 1002);
  await nothingOpen('nothing left after a protocol error');
});

test('many concurrent upgrades: --max-connections holds, the rest echo, nothing leaks', async () => {
  const attempts = await Promise.allSettled(Array.from({ length: MAX_CONNECTIONS + 15 }, () => opened('/chat/many')));
  const sockets = attempts.flatMap((a) => (a.status === 'fulfilled' ? [a.value] : []));
  assert.ok(sockets.length <= MAX_CONNECTIONS, `${sockets.length} open`);
  assert.ok(sockets.length > 0);
  assert.ok(attempts.some((a) => a.status === 'rejected'), 'connections beyond the cap are refused');
  for (const ws of sockets) assert.equal(await roundTrip(ws, 'many'), 'many');
  for (const ws of sockets) ws.close();
  await Promise.all(sockets.map(closed));
  await nothingOpen('all closed');
});

test('after all that: the gateway serves and applies Consul changes (a new WebSocket route works)', async () => {
  await consul.register({ id: 'chat-2', name: 'chat2', port: echo.port, tags: ['urlprefix-/later-chat'] });
  await waitFor(async () => {
    const r = await open('/later-chat');
    if (r.ok) r.ws.terminate();
    return r.ok;
  }, { timeoutMs: 20_000, message: 'the new route upgrades' });
  const ws = await opened('/later-chat');
  assert.equal(await roundTrip(ws, 'later'), 'later');
  ws.close();
  await closed(ws);
  assert.equal((await fetch(`${gw.url}/web`)).status, 200);
});

test('with --workers 2: open connections are summed over the workers in cgw status, and SIGTERM closes them all with 1001', async () => {
  const gw2 = await startGateway({ consul: consul.addr, args: ['--workers', '2', '--drain-timeout', `${DRAIN_TIMEOUT_MS}ms`] });
  try {
    await waitFor(async () => {
      const r = await open('/chat', { port: gw2.listenPort });
      if (r.ok) r.ws.terminate();
      return r.ok;
    }, { timeoutMs: 30_000, message: 'route /chat upgrades on the workers' });
    await waitFor(async () => ((await (await fetch(`${gw2.adminUrl}/v1/status`)).json()) as { websocket: { open: number } }).websocket.open === 0, { message: 'the probes are closed' });
    const sockets = await Promise.all(Array.from({ length: 6 }, () => opened('/chat/workers', { port: gw2.listenPort })));
    for (const ws of sockets) assert.equal(await roundTrip(ws, 'w'), 'w');
    await waitFor(async () => ((await (await fetch(`${gw2.adminUrl}/v1/status`)).json()) as { websocket: { open: number } }).websocket.open === 6, { message: 'six open over the workers' });
    const st = await runCli(['status', '--admin', gw2.adminUrl]);
    assert.match(st.stdout, /^websocket:\s+6 open \(\/chat 6\)$/m);
    const closing = sockets.map(closed);
    const exit = gw2.kill('SIGTERM', DRAIN_TIMEOUT_MS + 20_000);
    for (const { code } of await Promise.all(closing)) assert.equal(code, 1001);
    assert.equal(await exit, 0);
  } finally {
    await gw2.kill('SIGKILL');
  }
});

// Last: it stops the gateway.
test('SIGTERM: an open connection gets 1001 on both sides within the drain timeout, then the process exits', async () => {
  const ws = await opened('/chat/drain');
  const seen = echo.connections.at(-1);
  assert.equal(await roundTrip(ws, 'before'), 'before');
  const closing = closed(ws);
  const exit = gw.kill('SIGTERM', DRAIN_TIMEOUT_MS + 20_000);
  const { code, reason } = await closing;
  // A close frame, not a cut (1006): it came before the drain timeout, when the rest is cut.
  assert.equal(code, 1001);
  assert.equal(reason, 'gateway shutting down');
  await waitFor(() => seen?.closeCode === 1001, { message: 'the upstream got 1001 too' });
  assert.equal(await exit, 0);
});
