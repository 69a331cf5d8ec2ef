/**
 * Slow clients cannot starve a service: bodies are buffered before an upstream is picked, a paused
 * body or a slow head gets 408, an endpoint never queues more than --max-requests-per-endpoint
 * (503 upstream_busy at once instead), and --max-connections caps the listener, all of it counted
 * in /metrics and shown in /v1/status.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { freePort } from '../helpers/ports.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';

const CAP = 4;

let consul: ConsulAgent;
let gw: GatewayProcess;
let upstream: { url: string; port: number; heads: number; server: Server };
const sockets: Socket[] = [];

/** Counts request heads and answers once the whole body arrived. */
async function startCountingUpstream(): Promise<typeof upstream> {
  const port = await freePort();
  const state = { heads: 0 };
  const server = createServer((req, res) => {
    state.heads += 1;
    req.resume();
    req.once('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port }, resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    get heads() {
      return state.heads;
    },
  };
}

/** Opens a raw connection to the gateway and writes `head` (and kept for cleanup). */
function rawClient(head: string): Promise<{ socket: Socket; received: () => string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(gw.listenPort, '127.0.0.1');
    sockets.push(socket);
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (data += d));
    socket.on('error', () => {});
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.once('connect', () => {
      socket.write(head);
      resolve({ socket, received: () => data, closed });
    });
    socket.once('error', reject);
  });
}

async function timedGet(path: string): Promise<{ status: number; ms: number; code?: string }> {
  const started = Date.now();
  const res = await fetch(`${gw.url}${path}`, { signal: AbortSignal.timeout(20_000) });
  const body = await res.text();
  const code = res.headers.get('content-type')?.includes('json') && res.status >= 400 ? (JSON.parse(body) as { error?: { code?: string } }).error?.code : undefined;
  return { status: res.status, ms: Date.now() - started, code };
}

before(async () => {
  consul = await startConsul();
  upstream = await startCountingUpstream();
  await consul.register({ id: 'slow-1', name: 'slow', port: upstream.port, tags: ['urlprefix-/slow'] });
  gw = await startGateway({
    consul: consul.addr,
    args: ['--max-requests-per-endpoint', String(CAP), '--client-body-timeout', '1500ms', '--client-header-timeout', '1500ms', '--max-connections', '120'],
  });
});

after(async () => {
  for (const s of sockets) s.destroy();
  await gw?.kill();
  await new Promise<void>((resolve) => {
    upstream?.server.close(() => resolve());
    upstream?.server.closeAllConnections();
  });
  await consul?.destroy();
});

test('clients trickling small bodies hold no upstream connection; others are served meanwhile', async () => {
  const headsBefore = upstream.heads;
  const trickling = await Promise.all(
    Array.from({ length: 60 }, () => rawClient('POST /slow/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nContent-Type: text/plain\r\n\r\nab')),
  );
  // Keep each body alive: a byte every 500 ms stays under the 1.5 s idle timeout.
  const ticker = setInterval(() => {
    for (const t of trickling) if (!t.socket.destroyed) t.socket.write('x');
  }, 500);
  try {
    for (let i = 0; i < 10; i++) {
      const r = await timedGet('/slow/ok');
      assert.equal(r.status, 200, `request ${i} got ${r.status} ${r.code ?? ''}`);
      assert.ok(r.ms < 5_000, `request ${i} took ${r.ms} ms`);
    }
    assert.equal(upstream.heads - headsBefore, 10, 'no trickling body reached the upstream before it was complete');
  } finally {
    clearInterval(ticker);
    for (const t of trickling) t.socket.destroy();
  }
});

test('a body that pauses longer than --client-body-timeout gets 408 JSON and the connection is closed', async () => {
  const started = Date.now();
  const client = await rawClient('POST /slow/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789');
  await Promise.race([client.closed, new Promise((r) => setTimeout(r, 20_000))]);
  const text = client.received();
  assert.match(text, /^HTTP\/1\.1 408 /, text.slice(0, 200));
  assert.match(text, /"code":"request_timeout"/);
  assert.match(text, /x-request-id: /i);
  assert.ok(Date.now() - started >= 1_400, 'not before the idle timeout');
});

test('a chunked body that pauses gets 408 too, also past the buffer (streaming)', async () => {
  const client = await rawClient(`POST /slow/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${(70_000).toString(16)}\r\n${'y'.repeat(70_000)}\r\n`);
  await Promise.race([client.closed, new Promise((r) => setTimeout(r, 20_000))]);
  const text = client.received();
  // The upstream had begun to receive the streamed body; the client still learns why it was cut.
  assert.match(text, /^HTTP\/1\.1 408 /, text.slice(0, 200));
  assert.match(text, /"code":"request_timeout"/);
});

test('a request head that does not arrive within --client-header-timeout gets 408 JSON', async () => {
  const started = Date.now();
  const client = await rawClient('GET /slow/ok HTTP/1.1\r\nHost: x\r\n');
  await Promise.race([client.closed, new Promise((r) => setTimeout(r, 20_000))]);
  const text = client.received();
  assert.match(text, /^HTTP\/1\.1 408 /, text.slice(0, 200));
  assert.match(text, /"code":"request_timeout"/);
  assert.ok(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
});

test('large uploads at a trickle fill the endpoint to its cap; other requests get 503 upstream_busy at once, never a queue', async () => {
  const big = await Promise.all(
    Array.from({ length: CAP + 2 }, () => rawClient(`POST /slow/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n${'z'.repeat(70_000)}`)),
  );
  const ticker = setInterval(() => {
    for (const b of big) if (!b.socket.destroyed) b.socket.write('z');
  }, 400);
  try {
    // The streaming uploads reach the upstream (past the 64 KiB buffer) and hold all CAP slots.
    await waitFor(async () => (await timedGet('/slow/ok')).code === 'upstream_busy', { timeoutMs: 20_000 });
    const r = await timedGet('/slow/ok');
    assert.equal(r.status, 503);
    assert.equal(r.code, 'upstream_busy');
    assert.ok(r.ms < 3_000, `refused after ${r.ms} ms`);
    const s = await status();
    assert.ok((s.limits.upstreamBusy.slow?.count ?? 0) >= 1, JSON.stringify(s.limits));
    assert.match(await metrics(), /cgw_upstream_busy_total\{service="slow"\} [1-9]/);
  } finally {
    clearInterval(ticker);
    for (const b of big) b.socket.destroy();
  }
  // Once the uploads are gone, the slots are free again.
  await waitFor(async () => (await timedGet('/slow/ok')).status === 200, { timeoutMs: 20_000 });
});

test('--max-connections: connections beyond the cap are closed at once, counted and shown', async () => {
  const held = await Promise.all(Array.from({ length: 130 }, () => rawClient('')));
  try {
    await waitFor(async () => (await status()).limits.connectionsRefused.count > 0, { timeoutMs: 20_000 });
    const s = await status();
    assert.equal(s.limits.maxConnections, 120);
    assert.match(await metrics(), /cgw_client_connections_refused_total [1-9]/);
  } finally {
    for (const h of held) h.socket.destroy();
  }
  await waitFor(async () => (await timedGet('/slow/ok')).status === 200, { timeoutMs: 20_000 });
});

interface StatusBody {
  limits: { maxConnections: number | null; connectionsRefused: { count: number }; upstreamBusy: Record<string, { count: number } | undefined> };
}

async function status(): Promise<StatusBody> {
  return (await (await fetch(`${gw.adminUrl}/v1/status`)).json()) as StatusBody;
}

async function metrics(): Promise<string> {
  return (await fetch(`${gw.adminUrl}/metrics`)).text();
}
