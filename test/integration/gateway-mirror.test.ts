/**
 * Shadow traffic through the real gateway and a real Consul: a mirror policy in KV copies a share
 * of a route's requests to (a) a subset of the route's own service (tag `shadow`, weight 0 in the
 * canary weights so it serves no client) and (b) another service nothing routes to. The shadow
 * sees method, path, query, body and `X-Cgw-Mirror: 1`; the client sees only the primary's answer,
 * also while the shadow hangs, fails or resets, and the in-flight cap drops what it must. Bad
 * mirror sections in KV are problems of their document only; afterwards the gateway still serves
 * and still applies Consul changes.
 */
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePort } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

/** At most this many shadows in flight (the gateway's flag), so a hanging shadow shows drops soon. */
const MAX_IN_FLIGHT = 4;
const POLICY_KEY = 'gateway/policies/mirror';

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

type Mode = 'answer' | 'fail' | 'reset' | 'hang';

/** A shadow instance: records what it got (body included), then answers, fails, resets or hangs. */
interface Shadow {
  readonly port: number;
  readonly seen: Seen[];
  mode: Mode;
  /** Requests it holds unanswered now, and the most it ever held at once. */
  readonly open: { now: number; most: number };
  close(): Promise<void>;
}

async function startShadow(): Promise<Shadow> {
  const sockets = new Set<Socket>();
  const shadow = {
    port: await freePort(),
    seen: [] as Seen[],
    mode: 'answer' as Mode,
    open: { now: 0, most: 0 },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    res.on('error', () => {});
    req.once('end', () => {
      shadow.seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() });
      const mode = shadow.mode;
      if (mode === 'reset') return req.socket.destroy();
      if (mode === 'hang') {
        shadow.open.now++;
        shadow.open.most = Math.max(shadow.open.most, shadow.open.now);
        res.once('close', () => shadow.open.now--);
        return;
      }
      const body = JSON.stringify({ shadow: true });
      res.writeHead(mode === 'fail' ? 500 : 200, { 'content-type': 'application/json', 'x-upstream': 'shadow', 'x-shadow-secret': 'leak' });
      res.end(body);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: shadow.port }, resolve));
  return shadow;
}

let consul: ConsulAgent;
let gw: GatewayProcess;
let primary: Upstream;
let subset: Shadow;
let other: Shadow;
let stopping = false;
const client = new Agent({ keepAliveTimeout: 10_000, connections: 8 });

async function send(path: string, init: { method?: string; body?: string; headers?: Record<string, string> } = {}) {
  const r = await request(`${gw.url}${path}`, {
    dispatcher: client,
    method: (init.method ?? 'GET') as 'GET',
    body: init.body,
    headers: init.headers,
    // Generous: the client must never wait for a shadow, but the machine may be busy.
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
  });
  const text = await r.body.text();
  return { status: r.statusCode, headers: r.headers, text };
}

/** `cgw_mirror_requests_total` by outcome for one target. */
async function outcomes(target: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith('cgw_mirror_requests_total{') || !line.includes(`target="${target}"`)) continue;
    const outcome = /outcome="([^"]+)"/.exec(line)?.[1] ?? '';
    out[outcome] = Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return out;
}

async function problems(): Promise<{ kind: string; subject: string; message: string; keptLastGood?: boolean }[]> {
  return (await (await fetch(`${gw.adminUrl}/v1/problems`)).json()) as { kind: string; subject: string; message: string; keptLastGood?: boolean }[];
}

/** Puts a mirror policy for /web and waits until a request is mirrored by it (seen by `shadow`). */
async function mirrorTo(mirror: Record<string, unknown>, shadow: Shadow): Promise<void> {
  await consul.kvPut(POLICY_KEY, JSON.stringify({ appliesTo: { route: '/web' }, mirror }));
  await waitFor(
    async () => {
      const before = shadow.seen.length;
      const r = await send('/web/probe');
      assert.equal(r.status, 200);
      return waitFor(() => shadow.seen.length > before, { timeoutMs: 1_000 }).then(() => true, () => false);
    },
    { timeoutMs: 20_000, message: `mirror ${JSON.stringify(mirror)} in force` },
  );
}

before(async () => {
  consul = await startConsul();
  primary = await startUpstream('web-v1');
  subset = await startShadow();
  other = await startShadow();
  await consul.register({ id: 'web-v1', name: 'web', port: primary.port, tags: ['urlprefix-/web', 'v1'] });
  await consul.register({ id: 'web-shadow', name: 'web', port: subset.port, tags: ['urlprefix-/web', 'shadow'] });
  // No urlprefix- tag: nothing routes to it, only the mirror names it.
  await consul.register({ id: 'web-next-1', name: 'web-next', port: other.port });
  // The shadow subset serves no client: every client request goes to v1.
  await consul.kvPut('gateway/canary/web', JSON.stringify({ weights: { v1: 100, shadow: 0 } }));
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--mirror-max-in-flight', String(MAX_IN_FLIGHT)] });
  void gw.exited.then((code) => {
    if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}); last log lines:\n${gw.logs.slice(-30).join('\n')}\n`);
  });
  await waitFor(async () => (await send('/web/x')).headers['x-upstream'] === 'web-v1' && primary.hits > 0, { timeoutMs: 20_000, message: '/web served by v1' });
});

after(async () => {
  stopping = true;
  await gw?.kill();
  await client.close();
  await primary?.close();
  await subset?.close();
  await other?.close();
  await consul?.destroy();
});

describe('percent 100', () => {
  test('subset: the shadow instances see every request (method, path, query, body, X-Cgw-Mirror: 1); the client sees only the primary', async () => {
    await mirrorTo({ subset: 'shadow', percent: 100 }, subset);
    const start = subset.seen.length;
    const primaryStart = primary.requests.length;
    for (let i = 0; i < 20; i++) {
      const post = i % 2 === 1;
      // A client cannot pass off its request as a shadow copy: x-cgw-* headers are dropped.
      const r = await send(`/web/item/${i}?q=${i}`, post ? { method: 'POST', body: `payload-${i}`, headers: { 'content-type': 'text/plain', 'x-cgw-mirror': '1' } } : {});
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-upstream'], 'web-v1');
      assert.equal(r.headers['x-shadow-secret'], undefined);
      assert.equal(JSON.parse(r.text).upstream, 'web-v1');
    }
    await waitFor(() => subset.seen.length >= start + 20, { message: '20 shadow copies' });
    const copies = subset.seen.slice(start);
    for (let i = 0; i < 20; i++) {
      const copy = copies.find((c) => c.url === `/web/item/${i}?q=${i}`);
      assert.ok(copy, `copy of request ${i}`);
      assert.equal(copy.method, i % 2 === 1 ? 'POST' : 'GET');
      assert.equal(copy.body, i % 2 === 1 ? `payload-${i}` : '');
      assert.equal(copy.headers['x-cgw-mirror'], '1');
      assert.ok(copy.headers['x-request-id'], 'the copy carries the request id the primary got');
    }
    const originals = primary.requests.slice(primaryStart);
    assert.equal(originals.length, 20);
    assert.ok(originals.every((o) => o.headers['x-cgw-mirror'] === undefined), 'the primary never sees X-Cgw-Mirror');
  });

  test('service: another service nothing routes to sees every request', async () => {
    await mirrorTo({ service: 'web-next', percent: 100 }, other);
    const start = other.seen.length;
    const subsetStart = subset.seen.length;
    for (let i = 0; i < 10; i++) assert.equal((await send(`/web/n/${i}`, { method: 'PUT', body: `n${i}` })).status, 200);
    await waitFor(() => other.seen.length >= start + 10, { message: '10 copies at web-next' });
    assert.deepEqual(
      other.seen.slice(start).map((c) => [c.method, c.url, c.body, c.headers['x-cgw-mirror']]).sort(),
      Array.from({ length: 10 }, (_, i) => ['PUT', `/web/n/${i}`, `n${i}`, '1']).sort(),
    );
    assert.equal(subset.seen.length, subsetStart, 'the old mirror target gets nothing');
  });

  test('the shadow service is listed with its instances though it has no route', async () => {
    const services = (await (await fetch(`${gw.adminUrl}/v1/services`)).json()) as { name: string; routes: string[]; endpointsHealthy: number }[];
    const next = services.find((x) => x.name === 'web-next');
    assert.deepEqual([next?.routes, next?.endpointsHealthy], [[], 1]);
  });

  test('its instance turning critical: copies are skipped (no_target), clients served; passing again: copied again', async () => {
    await consul.setCheck('web-next-1', 'critical');
    const before = (await outcomes('service:web-next')).no_target ?? 0;
    await waitFor(
      async () => {
        assert.equal((await send('/web/critical')).status, 200);
        return ((await outcomes('service:web-next')).no_target ?? 0) > before;
      },
      { timeoutMs: 20_000, message: 'no_target once the shadow instance is critical' },
    );
    await consul.setCheck('web-next-1', 'passing');
    await mirrorTo({ service: 'web-next', percent: 100 }, other);
  });
});

describe('a share', () => {
  test('at 30 % over 300 requests the shadow sees roughly 30 % (wide band), every client request answered by the primary', async () => {
    await mirrorTo({ service: 'web-next', percent: 30 }, other);
    const before = await outcomes('service:web-next');
    const start = other.seen.length;
    for (let i = 0; i < 300; i++) {
      const r = await send(`/web/share/${i}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-upstream'], 'web-v1');
    }
    // Counted when sent: wait until every copy sent has arrived.
    const sent = await waitFor(async () => {
      const now = await outcomes('service:web-next');
      const count = (now.sent ?? 0) - (before.sent ?? 0);
      return (now.ok ?? 0) - (before.ok ?? 0) === count && other.seen.length - start === count ? count : false;
    }, { message: 'copies settled' });
    // 300 draws at p = 0.3: mean 90, standard deviation 7.9; this band is more than 5 of them.
    assert.ok(sent >= 45 && sent <= 135, `${sent} of 300 mirrored`);
  });
});

describe('the client never notices the shadow', () => {
  test('a shadow answering 500 or resetting: clients get 200 from the primary; the outcomes are counted', async () => {
    await mirrorTo({ service: 'web-next', percent: 100 }, other);
    for (const [mode, outcome] of [['fail', 'status_5xx'], ['reset', 'error']] as const) {
      other.mode = mode;
      const before = (await outcomes('service:web-next'))[outcome] ?? 0;
      for (let i = 0; i < 10; i++) {
        const r = await send(`/web/${mode}/${i}`, { method: 'POST', body: 'x' });
        assert.equal(r.status, 200, `${mode}: ${r.text}`);
        assert.equal(r.headers['x-upstream'], 'web-v1');
      }
      await waitFor(async () => ((await outcomes('service:web-next'))[outcome] ?? 0) >= before + 10, { message: `${outcome} counted` });
    }
    other.mode = 'answer';
  });

  test('a shadow that accepts and never answers: client requests complete with 200 while it holds copies, at most the cap is held, drops and timeouts are counted', async () => {
    await mirrorTo({ service: 'web-next', percent: 100, timeout: '10s' }, other);
    other.mode = 'hang';
    const before = await outcomes('service:web-next');
    // Ten at once: the hanging shadow takes MAX_IN_FLIGHT copies, the cap drops the rest.
    const batch = await Promise.all(Array.from({ length: 10 }, (_, i) => send(`/web/hang/${i}`)));
    for (const r of batch) {
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['x-upstream'], 'web-v1');
    }
    // Answered while the copies still hang (their timeout is 10 s away): nobody waited for them.
    assert.ok(other.open.now > 0, 'the shadow holds copies after every client got its answer');
    assert.equal((await outcomes('service:web-next')).timeout ?? 0, before.timeout ?? 0, 'no shadow timed out before the clients were answered');
    assert.ok(other.open.most <= MAX_IN_FLIGHT, `the hanging shadow held ${other.open.most} requests at once (cap ${MAX_IN_FLIGHT})`);
    const now = await outcomes('service:web-next');
    assert.equal((now.dropped_cap ?? 0) - (before.dropped_cap ?? 0) + (now.sent ?? 0) - (before.sent ?? 0), 10, 'each request was either copied or dropped');
    assert.ok((now.dropped_cap ?? 0) - (before.dropped_cap ?? 0) >= 10 - MAX_IN_FLIGHT, 'copies beyond the cap were dropped');
    // The held copies end at their timeout, which frees the cap for later ones.
    await waitFor(async () => ((await outcomes('service:web-next')).timeout ?? 0) >= (before.timeout ?? 0) + 1, { timeoutMs: 30_000, message: 'shadow timeouts counted' });
    await waitFor(async () => /^cgw_mirror_in_flight 0$/m.test(await (await fetch(`${gw.adminUrl}/metrics`)).text()), { timeoutMs: 20_000, message: 'no shadow in flight after the timeouts' });
    other.mode = 'answer';
  });

  test('a body over maxBodyBytes is not mirrored (counted skipped_body); one within it is', async () => {
    await mirrorTo({ service: 'web-next', percent: 100, maxBodyBytes: 100 }, other);
    const before = await outcomes('service:web-next');
    const start = other.seen.length;
    const big = 'b'.repeat(1000);
    const r = await send('/web/echo-big', { method: 'POST', body: big });
    assert.equal(r.status, 200);
    assert.equal(primary.requests.at(-1)?.url, '/web/echo-big');
    await waitFor(async () => ((await outcomes('service:web-next')).skipped_body ?? 0) === (before.skipped_body ?? 0) + 1, { message: 'skipped_body counted' });
    assert.equal((await send('/web/small', { method: 'POST', body: 's'.repeat(100) })).status, 200);
    await waitFor(() => other.seen.length > start, { message: 'the small body mirrored' });
    assert.deepEqual(other.seen.slice(start).map((c) => [c.url, c.body.length]), [['/web/small', 100]]);
  });
});

describe('attacks on the mirror section in KV', () => {
  const bad: [string, string][] = [
    ['not JSON', '{"appliesTo": {"route": "/web"}, "mirror": {"subset": '],
    ['both targets', JSON.stringify({ appliesTo: { route: '/web' }, mirror: { subset: 'shadow', service: 'web-next', percent: 100 } })],
    ['percent 0', JSON.stringify({ appliesTo: { route: '/web' }, mirror: { subset: 'shadow', percent: 0 } })],
    ['percent 1e400 (Infinity)', '{"appliesTo": {"route": "/web"}, "mirror": {"subset": "shadow", "percent": 1e400}}'],
    ['__proto__ as the service', JSON.stringify({ appliesTo: { route: '/web' }, mirror: { service: '__proto__', percent: 100 } })],
    ['__proto__ as a field', '{"appliesTo": {"route": "/web"}, "mirror": {"service": "web-next", "percent": 100, "__proto__": {"subset": "shadow"}}}'],
    ['deeply nested', `{"appliesTo": {"route": "/web"}, "mirror": {"subset": ${'['.repeat(5000)}${']'.repeat(5000)}, "percent": 100}}`],
    ['oversized', JSON.stringify({ appliesTo: { route: '/web' }, mirror: { subset: 'x'.repeat(400 * 1024), percent: 100 } })],
  ];

  test('set a good mirror first (to web-next)', async () => {
    await mirrorTo({ service: 'web-next', percent: 100 }, other);
  });

  for (const [label, value] of bad) {
    test(`${label}: rejected as a problem of that document, the last good mirror keeps copying`, async () => {
      await consul.kvPut(POLICY_KEY, value);
      const modifyIndex = (await consul.kvGet(POLICY_KEY))?.modifyIndex;
      const problem = await waitFor(
        async () => (await problems()).find((p) => p.kind === 'policy' && p.subject === 'policies/mirror' && p.message.includes(`ModifyIndex ${modifyIndex}`)),
        { message: `problem for ModifyIndex ${modifyIndex}` },
      );
      assert.equal(problem.keptLastGood, true);
      const start = other.seen.length;
      const r = await send(`/web/after-${label.replace(/\W+/g, '-')}`);
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-upstream'], 'web-v1');
      await waitFor(() => other.seen.length > start, { message: 'the last good mirror still copies' });
    });
  }

  test('subset "constructor" (no instance carries it): the problem says so, nothing is mirrored, clients are served', async () => {
    await consul.kvPut(POLICY_KEY, JSON.stringify({ appliesTo: { route: '/web' }, mirror: { subset: 'constructor', percent: 100 } }));
    await waitFor(async () => (await problems()).some((p) => p.message.includes('subset "constructor", a tag no instance')), { message: 'constructor subset problem' });
    const before = (await outcomes('subset:constructor')).no_target ?? 0;
    const starts = [subset.seen.length, other.seen.length];
    for (let i = 0; i < 5; i++) assert.equal((await send(`/web/c/${i}`)).status, 200);
    await waitFor(async () => ((await outcomes('subset:constructor')).no_target ?? 0) >= before + 5, { message: 'no_target counted' });
    assert.deepEqual([subset.seen.length, other.seen.length], starts);
  });

  test('a Consul service named constructor is a mirror target like any other', async () => {
    const shadow = await startShadow();
    try {
      await consul.register({ id: 'ctor-1', name: 'constructor', port: shadow.port });
      await mirrorTo({ service: 'constructor', percent: 100 }, shadow);
      assert.equal(shadow.seen.at(-1)?.headers['x-cgw-mirror'], '1');
    } finally {
      await consul.deregister('ctor-1');
      await shadow.close();
    }
  });

  test('afterwards the gateway still serves and still applies a Consul change', async () => {
    const late = await startUpstream('late');
    try {
      await consul.register({ id: 'late-1', name: 'late', port: late.port, tags: ['urlprefix-/late'] });
      await waitFor(async () => (await send('/late/x')).headers['x-upstream'] === 'late', { timeoutMs: 20_000, message: '/late routed' });
      assert.equal((await send('/web/final')).status, 200);
    } finally {
      await consul.deregister('late-1');
      await late.close();
    }
  });
});
