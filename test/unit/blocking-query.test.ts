/**
 * The blocking-query loop against a scripted HTTP server. Real Consul cannot be made to answer
 * with index 0 or an index that goes backwards on demand (tombstone reaping takes 15 minutes), so
 * these index rules are checked here; tests/integration runs the loop against real agents.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { BlockingQuery, blockingTimeoutMs, type WatchUpdate } from '../../src/consul/blocking-query.ts';
import { ConsulClient } from '../../src/consul/client.ts';
import { listenOn } from '../../src/core/net.ts';

type Reply = { index: number; body: unknown } | 'fail' | 'cut' | 'hang';

let script: Reply[] = [];
let seen: URLSearchParams[] = [];
const server = createServer((req: IncomingMessage, res: ServerResponse) => {
  seen.push(new URL(req.url ?? '/', 'http://x').searchParams);
  const reply = script.shift() ?? { index: 999, body: 'end' };
  if (reply === 'cut') return req.socket.destroy();
  if (reply === 'hang') return; // never answers: what the watchdog is for
  if (reply === 'fail') {
    res.writeHead(500);
    return res.end('boom');
  }
  res.writeHead(200, { 'content-type': 'application/json', 'x-consul-index': String(reply.index) });
  res.end(JSON.stringify(reply.body));
});
let client: ConsulClient;

before(async () => {
  const port = await listenOn(server, '127.0.0.1', 0);
  client = new ConsulClient({ address: `http://127.0.0.1:${port}`, maxConnections: 2 });
});
after(async () => {
  await client.close();
  server.close();
});

/** Runs the loop until it has sent `requests` requests, collecting what it yielded. */
async function run(
  replies: Reply[],
  requests: number,
  rate = { burst: 100, intervalMs: 1 },
  onRequest?: (query: BlockingQuery<unknown>, n: number) => void,
) {
  script = [...replies];
  seen = [];
  const stop = new AbortController();
  const query = new BlockingQuery<unknown>(
    { name: 't', path: '/v1/kv/x', parse: (b) => b, client, waitMs: 2000, rate, backoff: { baseMs: 1, capMs: 2 } },
    stop.signal,
  );
  const yielded: WatchUpdate<unknown>[] = [];
  const iterator = query[Symbol.asyncIterator]();
  const started = performance.now();
  const pump = (async () => {
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yielded.push(next.value);
    }
  })();
  let reported = 0;
  while (seen.length < requests) {
    if (seen.length > reported) onRequest?.(query, (reported = seen.length));
    await new Promise((resolve) => setImmediate(resolve));
  }
  const elapsedMs = performance.now() - started;
  stop.abort();
  await pump;
  return { yielded, seen: seen.slice(0, requests), status: query.status(), elapsedMs };
}

test('the first read does not block; later reads send index and wait', async () => {
  const { seen: q } = await run([{ index: 5, body: 'a' }], 2);
  assert.equal(q[0]?.has('index'), false);
  assert.equal(q[0]?.has('wait'), false);
  assert.equal(q[1]?.get('index'), '5');
  assert.equal(q[1]?.get('wait'), '2s');
});

test('an index of 0 is never used to block: 1 is sent instead', async () => {
  const { seen: q } = await run([{ index: 0, body: 'a' }], 2);
  assert.equal(q[1]?.get('index'), '1');
});

test('an index that goes backwards triggers a full read, then blocking on the new index', async () => {
  const { seen: q, yielded } = await run([{ index: 10, body: 'a' }, { index: 4, body: 'b' }, { index: 4, body: 'b' }], 4);
  assert.equal(q[1]?.get('index'), '10');
  assert.equal(q[2]?.has('index'), false, 'full read after the index went backwards');
  assert.equal(q[3]?.get('index'), '4');
  assert.deepEqual(yielded.map((u) => u.value), ['a', 'b']);
});

test('only content changes are handed on, whatever the index does', async () => {
  const { yielded } = await run(
    [
      { index: 1, body: { v: 1 } },
      { index: 2, body: { v: 1 } },
      { index: 3, body: { v: 1 } },
      { index: 4, body: { v: 2 } },
      { index: 5, body: { v: 2 } },
    ],
    6,
  );
  assert.deepEqual(
    yielded.map((u) => u.value),
    [{ v: 1 }, { v: 2 }],
  );
});

test('after an error the index is reset and the watch reports failing until a success', async () => {
  const failed = await run([{ index: 7, body: 'a' }, 'fail', { index: 8, body: 'a' }], 3);
  assert.equal(failed.seen[1]?.get('index'), '7');
  assert.equal(failed.seen[2]?.has('index'), false, 'full read after the error');
  const cut = await run([{ index: 7, body: 'a' }, 'cut', 'fail'], 3);
  assert.equal(cut.seen[2]?.has('index'), false, 'full read after a dropped connection');
  assert.equal(cut.status.state, 'failing');
  assert.ok(cut.status.consecutiveErrors >= 1);
  assert.match(cut.status.lastError ?? '', /500|socket|closed/i);
});

test('under churn the loop paces itself: a burst, then one call per interval', async () => {
  const churn: Reply[] = Array.from({ length: 10 }, (_, i) => ({ index: i + 1, body: i }));
  const { elapsedMs } = await run(churn, 7, { burst: 2, intervalMs: 60 });
  // 2 calls at once, then 5 more each at least 60 ms apart.
  assert.ok(elapsedMs >= 5 * 60 - 15, `7 calls took only ${elapsedMs.toFixed(0)} ms`);
});

test('the HTTP timeout exceeds wait plus Consul\'s jitter (wait/16)', () => {
  for (const wait of [1_000, 60_000, 300_000, 600_000]) assert.ok(blockingTimeoutMs(wait) > wait + wait / 16 + 1000);
});

test('the watchdog interrupt restarts a silent request with a full read', async () => {
  let silentMs = 0;
  const { seen: q, status } = await run([{ index: 3, body: 'a' }, 'hang', { index: 3, body: 'a' }], 3, undefined, (query, n) => {
    if (n !== 2) return;
    // The second request hangs; let the watchdog see it silent, then interrupt it.
    setTimeout(() => {
      silentMs = query.silentForMs();
      query.interrupt();
    }, 30);
  });
  assert.ok(silentMs >= 20, `silentForMs reported ${silentMs}`);
  assert.equal(q[1]?.get('index'), '3');
  assert.equal(q[2]?.has('index'), false, 'full read after the restart');
  assert.equal(status.restarts, 1);
  assert.equal(status.errors, 0, 'a watchdog restart is not counted as a Consul error');
});
