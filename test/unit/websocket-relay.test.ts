/**
 * The relay between two real loopback sockets (no gateway, no Consul): bytes pass both ways; the
 * gateway's close frame goes into a direction only between frames (a frame in progress is
 * finished first, and nothing of the sender's follows the close); each peer's socket is ended once
 * it answered; a peer stuck inside a frame is cut at the end of the grace time; idle closes.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { after, test } from 'node:test';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { WebSocketSessions } from '../../src/proxy/websocket-sessions.ts';
import { closeFrame } from '../../src/proxy/websocket-frames.ts';
import { waitFor } from '../helpers/wait.ts';

const sockets: Socket[] = [];
after(() => {
  for (const s of sockets) s.destroy();
});

/** Two connected loopback sockets: [the gateway's end, the peer's end]. */
async function pair(): Promise<[Socket, Socket]> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const peer = connect(port, '127.0.0.1');
  const [ours] = await accepted;
  server.close();
  await once(peer, 'connect');
  sockets.push(ours, peer);
  return [ours, peer];
}

/** Everything a peer socket receives, and whether it saw the end. */
function record(socket: Socket): { bytes: () => Buffer; ended: () => boolean; closed: () => boolean } {
  const chunks: Buffer[] = [];
  let ended = false;
  let closed = false;
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.on('end', () => (ended = true));
  socket.on('close', () => (closed = true));
  socket.on('error', () => undefined);
  return { bytes: () => Buffer.concat(chunks), ended: () => ended, closed: () => closed };
}

/** A masked binary frame with `length` payload bytes (RFC 6455 §5.2). */
function clientFrame(length: number, fill = 0x61): Buffer {
  return Buffer.concat([Buffer.from([0x82, 0x80 | length, 9, 9, 9, 9]), Buffer.alloc(length, fill)]);
}

function setup() {
  const metrics = createMetrics({ defaultMetrics: false });
  return { metrics, sessions: new WebSocketSessions(metrics, createLogger('silent')) };
}

async function closeCount(metrics: ReturnType<typeof createMetrics>, reason: string): Promise<number> {
  const values = (await metrics.websocketCloses.get()).values;
  return values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

test('bytes pass both ways unchanged, and the open count follows', async () => {
  const { sessions } = setup();
  const { client, upstream, atClient, atUpstream } = await setupOpen(sessions);
  assert.equal(sessions.view().open, 1);
  assert.deepEqual({ ...sessions.view().byRoute }, { '/r': 1 });
  const frame = clientFrame(20);
  client.write(frame);
  upstream.write(Buffer.from([0x81, 0x02, 0x68, 0x69]));
  await waitFor(() => atUpstream.bytes().equals(frame) && atClient.bytes().length === 4, { message: 'relayed' });
  client.destroy();
  await waitFor(() => atUpstream.closed() && sessions.size === 0, { message: 'the upstream side ends with the client' });
});

test('drain with a client frame half sent: the close to the upstream comes after the frame, nothing of the client after it', async () => {
  const { sessions, metrics } = setup();
  const { client, upstream, atClient, atUpstream } = await setupOpen(sessions);
  const first = clientFrame(10);
  client.write(first.subarray(0, 9));
  await waitFor(() => atUpstream.bytes().length === 9, { message: 'the first part relayed' });
  const drained = sessions.drain(10_000);
  // Towards the client the direction is between frames: its close goes at once.
  await waitFor(() => atClient.bytes().length >= 4, { message: 'close to the client' });
  const toClient = atClient.bytes();
  assert.deepEqual([toClient[0], toClient[1], toClient.readUInt16BE(2)], [0x88, 2 + 'gateway shutting down'.length, 1001]);
  assert.equal(atUpstream.bytes().length, 9, 'nothing injected inside the frame');
  // The rest of the frame, then another data frame the gateway must not pass on after its close.
  client.write(Buffer.concat([first.subarray(9), clientFrame(3, 0x62)]));
  await waitFor(() => atUpstream.bytes().length > first.length, { message: 'the close after the frame' });
  const seen = atUpstream.bytes();
  assert.ok(seen.subarray(0, first.length).equals(first), 'the frame arrived whole');
  assert.equal(seen[first.length], 0x88, 'then a close frame');
  assert.equal((seen[first.length + 1] as number) & 0x80, 0x80, 'masked, as a client frame must be');
  const key = seen.subarray(first.length + 2, first.length + 6);
  const code = (((seen[first.length + 6] as number) ^ (key[0] as number)) << 8) | ((seen[first.length + 7] as number) ^ (key[1] as number));
  assert.equal(code, 1001);
  // Both peers answer with their close frames: each socket is ended by the gateway.
  client.write(closeFrame(1001, '', true));
  upstream.write(closeFrame(1001, '', false));
  await waitFor(() => atClient.ended() && atUpstream.ended(), { message: 'both ended' });
  const closedBytes = atUpstream.bytes().length;
  assert.equal(atUpstream.bytes().subarray(first.length).includes(Buffer.from([0x62, 0x62, 0x62])), false, 'the client frame after the close was dropped');
  assert.ok(closedBytes > first.length);
  client.end();
  upstream.end();
  assert.equal(await drained, 0, 'nothing had to be cut');
  assert.equal(await closeCount(metrics, 'drain'), 1);
  assert.equal(sessions.size, 0);
});

test('a peer stuck inside a frame is cut at the end of the grace time', async () => {
  const { sessions, metrics } = setup();
  const { client, atClient, atUpstream } = await setupOpen(sessions);
  client.write(clientFrame(100).subarray(0, 20));
  await waitFor(() => atUpstream.bytes().length === 20, { message: 'part of a frame relayed' });
  const cut = await sessions.drain(300);
  assert.equal(cut, 1);
  await waitFor(() => atClient.closed() && atUpstream.closed(), { message: 'both sockets closed' });
  assert.equal(atUpstream.bytes().length, 20, 'no close frame inside the frame');
  assert.equal(await closeCount(metrics, 'drain'), 1);
});

test('idle: no byte either way for the idle timeout closes both peers with 1001 "idle timeout"', async () => {
  const { sessions, metrics } = setup();
  const { client, upstream, atClient, atUpstream } = await setupOpen(sessions, { idleTimeoutMs: 200 });
  await waitFor(() => atClient.bytes().length > 0 && atUpstream.bytes().length > 0, { message: 'close frames to both' });
  assert.equal(atClient.bytes().subarray(4).toString(), 'idle timeout');
  client.write(closeFrame(1001, '', true));
  upstream.write(closeFrame(1001, '', false));
  await waitFor(() => atClient.ended() && atUpstream.ended(), { message: 'both ended after answering' });
  client.end();
  upstream.end();
  await waitFor(async () => (await closeCount(metrics, 'idle')) === 1, { message: 'counted as idle' });
});

async function setupOpen(sessions: WebSocketSessions, limits: { idleTimeoutMs?: number } = {}) {
  const [gwClient, client] = await pair();
  const [gwUpstream, upstream] = await pair();
  sessions.relay({ route: '/r', service: 's', client: gwClient, upstream: gwUpstream, idleTimeoutMs: limits.idleTimeoutMs ?? 60_000, maxLifetimeMs: 60_000 });
  return { client, upstream, atClient: record(client), atUpstream: record(upstream) };
}
