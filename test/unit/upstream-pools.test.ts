import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { UpstreamPools } from '../../src/balancer/upstream-pools.ts';
import { listenOn } from '../../src/core/net.ts';

const sockets = new Set<Socket>();
// Accepts connections and never answers: a request to it stays in flight until cut.
const silent = createServer((socket) => {
  sockets.add(socket);
  socket.on('error', () => undefined);
});

after(() => {
  for (const s of sockets) s.destroy();
  silent.close();
});

test('closeAll cuts requests still in flight after the grace period', async () => {
  const port = await listenOn(silent, '127.0.0.1', 0);
  const pools = new UpstreamPools({ connectTimeoutMs: 1000, connectionsPerEndpoint: 1 });
  const endpoint = pools.get({ key: `127.0.0.1:${port}`, address: '127.0.0.1', port: port });
  const pending = endpoint.pool.request({ method: 'GET', path: '/', headersTimeout: 60_000 });
  const outcome = pending.then(
    () => 'answered',
    () => 'rejected',
  );
  await new Promise<void>((resolve) => silent.once('connection', () => resolve()));
  await pools.closeAll(50);
  assert.equal(endpoint.pool.destroyed, true);
  assert.equal(await outcome, 'rejected');
});

test('retain keeps live endpoints and their pools', async () => {
  const pools = new UpstreamPools({ connectTimeoutMs: 1000, connectionsPerEndpoint: 1 });
  const kept = pools.get({ key: '127.0.0.1:1', address: '127.0.0.1', port: 1 });
  pools.get({ key: '127.0.0.1:2', address: '127.0.0.1', port: 2 });
  assert.deepEqual(pools.retain(new Set(['127.0.0.1:1'])), ['127.0.0.1:2']);
  assert.equal(pools.get({ key: '127.0.0.1:1', address: '127.0.0.1', port: 1 }), kept);
  assert.equal(pools.size, 1);
  await pools.closeAll(0);
});
