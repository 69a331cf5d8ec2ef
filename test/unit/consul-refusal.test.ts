/**
 * Consul refusing connections (per-client connection limit): how a refusal is told apart from
 * other failures, how the gateway-wide gate paces reads while it lasts, and the watch loop against
 * a scripted agent that accepts connections and drops them at once, as Consul 1.8 does at its limit.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { BlockingQuery } from '../../src/consul/blocking-query.ts';
import { ConsulClient, ConsulHttpError, ConsulRefusedError, isRefusal, REFUSAL_WINDOW_MS, REFUSED_TEXT } from '../../src/consul/client.ts';
import { RefusalGate, type Admission } from '../../src/consul/refusal-gate.ts';
import { listenOn } from '../../src/core/net.ts';
import { waitFor } from '../helpers/wait.ts';

function withCode(code: string, extra: Record<string, unknown> = {}): Error {
  return Object.assign(new Error(code === 'UND_ERR_SOCKET' ? 'other side closed' : `read ${code}`), { code }, extra);
}

describe('isRefusal', () => {
  const cases: { name: string; err: unknown; elapsedMs: number; refused: boolean }[] = [
    { name: 'other side closed before any byte', err: withCode('UND_ERR_SOCKET', { socket: { bytesRead: 0, bytesWritten: 96 } }), elapsedMs: 4, refused: true },
    { name: 'ECONNRESET at once', err: withCode('ECONNRESET'), elapsedMs: 2, refused: true },
    { name: 'EPIPE at once', err: withCode('EPIPE'), elapsedMs: 2, refused: true },
    { name: 'a reset wrapped as a cause', err: new Error('fetch failed', { cause: withCode('ECONNRESET') }), elapsedMs: 3, refused: true },
    { name: 'HTTP 429 (newer agents)', err: new ConsulHttpError(429, '/v1/kv/x', 'Your IP is issuing too many concurrent connections'), elapsedMs: 50_000, refused: true },
    { name: 'closed on a kept-alive socket that already answered', err: withCode('UND_ERR_SOCKET', { socket: { bytesRead: 5120 } }), elapsedMs: 3, refused: false },
    { name: 'a reset after the request had time to block', err: withCode('ECONNRESET'), elapsedMs: REFUSAL_WINDOW_MS + 1, refused: false },
    { name: 'agent down', err: withCode('ECONNREFUSED'), elapsedMs: 1, refused: false },
    { name: 'HTTP 500', err: new ConsulHttpError(500, '/v1/kv/x', 'boom'), elapsedMs: 1, refused: false },
    { name: 'HTTP 403', err: new ConsulHttpError(403, '/v1/kv/x', 'ACL not found'), elapsedMs: 1, refused: false },
    { name: 'aborted', err: Object.assign(new Error('This operation was aborted'), { name: 'AbortError', code: 'UND_ERR_ABORTED' }), elapsedMs: 1, refused: false },
    { name: 'headers timeout', err: withCode('UND_ERR_HEADERS_TIMEOUT'), elapsedMs: 1, refused: false },
    { name: 'not an error', err: 'ECONNRESET', elapsedMs: 1, refused: false },
  ];
  for (const c of cases) {
    test(c.name, () => assert.equal(isRefusal(c.err, c.elapsedMs), c.refused));
  }
});

/**
 * A scripted agent: while `refusing`, every new connection is accepted and dropped at once
 * (half of them with a reset, as the agent does when the request bytes already arrived); otherwise
 * the connection is handed to an HTTP server answering `reply`.
 */
class ScriptedAgent {
  refusing = true;
  reply: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-consul-index': '5' });
    res.end('[]');
  };
  /** Time of every connection dropped. */
  readonly refusedAt: number[] = [];
  accepted = 0;
  private readonly sockets = new Set<Socket>();
  private readonly http = createHttpServer((req, res) => this.reply(req, res));
  private readonly tcp = createTcpServer((socket) => {
    if (this.refusing) {
      this.refusedAt.push(Date.now());
      if (this.refusedAt.length % 2 === 0) socket.resetAndDestroy();
      else socket.destroy();
      return;
    }
    this.accepted += 1;
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    this.http.emit('connection', socket);
  });
  port = 0;

  async listen(): Promise<void> {
    this.port = await listenOn(this.tcp, '127.0.0.1', 0);
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.tcp.close(() => resolve()));
  }
}

describe('ConsulClient', () => {
  const agent = new ScriptedAgent();
  let client: ConsulClient;
  before(async () => {
    await agent.listen();
    client = new ConsulClient({ address: `http://127.0.0.1:${agent.port}`, maxConnections: 4 });
  });
  after(async () => {
    await client.close();
    await agent.close();
  });

  test('a connection dropped at once is a ConsulRefusedError naming the likely limit', async () => {
    agent.refusing = true;
    for (let i = 0; i < 4; i++) {
      const err = await client.get('/v1/kv/x', {}, { timeoutMs: 5000 }).then(
        () => assert.fail('expected a refusal'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof ConsulRefusedError, `attempt ${i}: ${String(err)}`);
      assert.ok(err.message.startsWith(REFUSED_TEXT), err.message);
      assert.equal(REFUSED_TEXT, 'Consul refused the connection (per-client connection limit, http_max_conns_per_client?)');
    }
  });

  test('429 is a refusal; other statuses are not', async () => {
    agent.refusing = false;
    agent.reply = (_req, res) => {
      res.writeHead(429);
      res.end('Your IP is issuing too many concurrent connections, please rate limit your calls\n');
    };
    await assert.rejects(client.get('/v1/kv/x', {}, { timeoutMs: 5000 }), (e: unknown) => e instanceof ConsulRefusedError && /HTTP 429/.test(e.message));
    agent.reply = (_req, res) => {
      res.writeHead(500);
      res.end('boom');
    };
    await assert.rejects(client.get('/v1/kv/x', {}, { timeoutMs: 5000 }), (e: unknown) => e instanceof ConsulHttpError && e.status === 500);
  });
});

describe('RefusalGate', () => {
  /** Whether `p` has resolved once pending callbacks have run. */
  async function resolved(p: Promise<unknown>): Promise<boolean> {
    let done = false;
    void p.then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    return done;
  }

  test('admits reads that cannot block a few at a time while Consul accepts connections', async () => {
    const gate = new RefusalGate({ maxAtOnce: 2, baseMs: 1000, capMs: 8000 });
    const a = gate.admit();
    const b = gate.admit();
    const c = gate.admit();
    assert.equal(await resolved(a), true);
    assert.equal(await resolved(b), true);
    assert.equal(await resolved(c), false, 'third waits for a slot');
    (await a).done('ok');
    assert.equal(await resolved(c), true);
    assert.equal(gate.status(), null);
    gate.close();
  });

  test('while refusing: one probe at a time after a jittered backoff, slow start after a success', async (t) => {
    t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
    const starts: string[] = [];
    const ends: number[] = [];
    let refusals = 0;
    const gate = new RefusalGate({
      maxAtOnce: 8,
      baseMs: 1000,
      capMs: 8000,
      random: () => 0, // the lower end of the jitter: half the ceiling
      onRefusal: () => (refusals += 1),
      onEpisodeStart: (key) => starts.push(key),
      onEpisodeEnd: (e) => ends.push(e.count),
    });
    // A burst sent before anything was known: three reads at once, all refused.
    const burst = await Promise.all([gate.admit(), gate.admit(), gate.admit()]);
    for (const key of ['w1', 'w2', 'w3']) gate.refused(key);
    for (const adm of burst) adm.done('refused');
    assert.deepEqual(starts, ['w1']);
    assert.equal(refusals, 3);
    assert.deepEqual(gate.status(), { since: 1_000_000, count: 3, lastAt: 1_000_000, waiting: 3 });

    const retries = [gate.admit(), gate.admit(), gate.admit()];
    assert.equal(await resolved(retries[0]!), false, 'no probe before the backoff');
    t.mock.timers.tick(499);
    assert.equal(await resolved(retries[0]!), false);
    t.mock.timers.tick(1); // the burst counted as one refusal: 1 s ceiling, half of it
    assert.equal(await resolved(retries[0]!), true);
    assert.equal(await resolved(retries[1]!), false, 'one probe at a time');

    // The probe is refused again: the next one waits twice as long.
    gate.refused('w1');
    (await retries[0]!).done('refused');
    t.mock.timers.tick(999);
    assert.equal(await resolved(retries[1]!), false);
    t.mock.timers.tick(1);
    assert.equal(await resolved(retries[1]!), true);
    assert.equal(await resolved(retries[2]!), false);

    // Room appears: the probe succeeds and two are admitted at once, without a backoff.
    gate.succeeded('w1');
    (await retries[1]!).done('ok');
    const more = [gate.admit(), gate.admit()];
    assert.equal(await resolved(retries[2]!), true);
    assert.equal(await resolved(more[0]!), true);
    assert.equal(await resolved(more[1]!), false, 'window of 2 after one success');
    assert.equal(gate.status()?.waiting, 2);

    gate.succeeded('w2');
    (await retries[2]!).done('ok');
    gate.succeeded('w3');
    assert.deepEqual(ends, [4]);
    assert.equal(gate.status(), null);
    assert.equal(await resolved(more[1]!), true);
    for (const adm of [await more[0]!, await more[1]!]) adm.done('ok');
    gate.close();
  });

  test('a refused watch that stops ends the episode; closing releases every waiter', async () => {
    const gate = new RefusalGate({ maxAtOnce: 4, baseMs: 60_000, capMs: 60_000 });
    gate.refused('health:gone');
    const waiting = gate.admit();
    assert.equal(await resolved(waiting), false);
    gate.forget('health:gone');
    assert.equal(gate.status(), null);
    assert.equal(await resolved(waiting), true, 'no backoff once nothing is refused');
    gate.refused('health:x');
    const held = gate.admit();
    const aborted = new AbortController();
    const leaving = gate.admit(aborted.signal);
    aborted.abort();
    assert.equal(await resolved(leaving), true, 'an aborted waiter leaves the queue');
    gate.close();
    assert.equal(await resolved(held), true);
    const late: Admission = await gate.admit();
    late.done('ok');
  });
});

describe('watches sharing a gate against an agent at its connection limit', () => {
  const agent = new ScriptedAgent();
  let client: ConsulClient;
  before(async () => {
    await agent.listen();
    client = new ConsulClient({ address: `http://127.0.0.1:${agent.port}`, maxConnections: 16 });
  });
  after(async () => {
    await client.close();
    await agent.close();
  });

  test('refused watches report it, probe one at a time, and all start once the agent accepts', async () => {
    agent.refusing = true;
    const BASE = 60;
    const gate = new RefusalGate({ maxAtOnce: 8, baseMs: BASE, capMs: 4 * BASE });
    const stop = new AbortController();
    const queries = Array.from(
      { length: 6 },
      (_, i) =>
        new BlockingQuery<unknown>(
          { name: `health:s${i}`, path: `/v1/health/service/s${i}`, parse: (b) => b, client, waitMs: 2000, gate },
          stop.signal,
        ),
    );
    const firstValue = queries.map((q) => {
      const it = q[Symbol.asyncIterator]();
      return it.next();
    });
    try {
      // Six first reads at once, all dropped; then probes, one at a time, spaced by the backoff.
      await waitFor(() => agent.refusedAt.length >= 12, { timeoutMs: 20_000, message: 'a dozen refused connections' });
      const state = gate.status();
      assert.ok(state && state.count >= 12 && state.waiting === 6, JSON.stringify(state));
      for (const q of queries) {
        const s = q.status();
        assert.equal(s.state, 'failing');
        assert.ok(s.lastError?.startsWith(REFUSED_TEXT), String(s.lastError));
      }
      const probes = agent.refusedAt.slice(6);
      for (let i = 1; i < probes.length; i++) {
        const gap = (probes[i] ?? 0) - (probes[i - 1] ?? 0);
        // Half the base is the smallest jittered delay; timers may fire a millisecond early.
        assert.ok(gap >= BASE / 2 - 2, `probes ${i - 1} and ${i} only ${gap} ms apart: ${probes.map((p) => p - (probes[0] ?? 0)).join(',')}`);
      }

      agent.refusing = false;
      const openedAt = Date.now();
      const values = await Promise.all(firstValue);
      const tookMs = Date.now() - openedAt;
      assert.ok(values.every((v) => !v.done));
      assert.ok(tookMs < 10_000, `watches took ${tookMs} ms to start once the agent accepted connections`);
      await waitFor(() => gate.status() === null, { timeoutMs: 5_000, message: 'refusal episode over' });
      assert.ok(agent.accepted <= 8, `${agent.accepted} connections opened for 6 watches`);
    } finally {
      stop.abort();
      gate.close();
    }
  });
});
