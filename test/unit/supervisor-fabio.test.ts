/**
 * The watch on fabio's route key: it reads the key and its subtree only (a recursive read of
 * `fabio/config` also lists `fabio/configs`), marks bytes that are not UTF-8 instead of mangling
 * them, lets a token that may not read the key (403 on every read) not hold back the views, and
 * costs no watch of its own when the key lies under the gateway's prefix. A small fake Consul on
 * loopback plays the agent.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import { ConsulClient } from '../../src/consul/client.ts';
import { ConsulSupervisor } from '../../src/consul/supervisor.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { freePort } from '../helpers/ports.ts';
import { waitFor } from '../helpers/wait.ts';

let server: Server;
let port: number;
let fabioStatus = 200;
const requested = new Set<string>();

const b64 = (text: string | Buffer): string => Buffer.from(text).toString('base64');
const FABIO = [
  { Key: 'fabio/config', Value: b64('route add a /a http://10.0.0.1:80'), ModifyIndex: 3 },
  { Key: 'fabio/config/x', Value: b64(Buffer.from([0x72, 0xff, 0xfe])), ModifyIndex: 4 },
  { Key: 'fabio/configs', Value: b64('route del a'), ModifyIndex: 5 },
];
const GATEWAY = [
  { Key: 'gateway/fabio', Value: b64('route add b /b http://10.0.0.2:80'), ModifyIndex: 6 },
  { Key: 'gateway/fabio/y', Value: b64('# nothing'), ModifyIndex: 7 },
  { Key: 'gateway/fabiox', Value: b64('route del b'), ModifyIndex: 8 },
];

before(async () => {
  port = await freePort();
  server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    requested.add(path);
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'x-consul-index': '9' });
      res.end(JSON.stringify(body));
    };
    if (path === '/v1/status/leader') return json(200, '127.0.0.1:8300');
    if (path === '/v1/catalog/services') return json(200, { consul: [] });
    if (path === '/v1/kv/gateway/') return json(200, GATEWAY);
    if (path === '/v1/kv/fabio/config') {
      if (fabioStatus !== 200) {
        res.writeHead(fabioStatus, { 'content-type': 'text/plain' });
        return res.end('Permission denied');
      }
      return json(200, FABIO);
    }
    json(404, null);
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port }, resolve));
});

after(async () => {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
});

function supervisor(fabioKvKey: string | null): ConsulSupervisor {
  return new ConsulSupervisor({
    client: new ConsulClient({ address: `http://127.0.0.1:${port}`, maxConnections: 16 }),
    waitMs: 2_000,
    kvPrefix: 'gateway/',
    fabioKvKey,
    maxConnections: 16,
    resyncIntervalMs: 60_000,
    isRouted: (tags) => tags.some((t) => t.startsWith('urlprefix-')),
    logger: createLogger('silent'),
    metrics: createMetrics({ defaultMetrics: false }),
    onChange: () => {},
  });
}

test('the key and its subtree, not its siblings; bytes that are not UTF-8 are marked', async () => {
  fabioStatus = 200;
  const s = supervisor('fabio/config');
  s.start();
  try {
    const views = await waitFor(() => s.views(), { timeoutMs: 20_000, message: 'views with the fabio key' });
    assert.deepEqual(views.fabio, [
      { key: 'fabio/config', value: 'route add a /a http://10.0.0.1:80', modifyIndex: 3 },
      { key: 'fabio/config/x', value: null, modifyIndex: 4, undecodable: true },
    ]);
    assert.ok(s.status().watches.some((w) => w.name === 'fabio-kv'));
  } finally {
    await s.close();
  }
});

test('a token that may not read the key: the views come anyway, empty, and the problem is reported', async () => {
  fabioStatus = 403;
  const s = supervisor('fabio/config');
  s.start();
  try {
    const views = await waitFor(() => s.views(), { timeoutMs: 30_000, message: 'views despite the unreadable fabio key' });
    assert.deepEqual(views.fabio, []);
    const problem = s.problems().find((p) => p.kind === 'fabio-kv');
    assert.equal(problem?.subject, 'fabio/config');
    assert.match(problem?.message ?? '', /Consul does not answer for fabio's route key \(.*403.*\); no fabio routes until a read succeeds/);
  } finally {
    await s.close();
    fabioStatus = 200;
  }
});

test('a read once, then denials: the lines read last stay, and the problem says so', async () => {
  fabioStatus = 200;
  const s = supervisor('fabio/config');
  s.start();
  try {
    await waitFor(() => s.views(), { timeoutMs: 20_000, message: 'views with the fabio key' });
    fabioStatus = 403;
    const problem = await waitFor(() => s.problems().find((p) => p.kind === 'fabio-kv'), { timeoutMs: 30_000, message: 'the denial is reported' });
    assert.match(problem.message, /the lines read last stay in force/);
    assert.equal(problem.keptLastGood, true);
    assert.equal(s.views()?.fabio?.[0]?.value, 'route add a /a http://10.0.0.1:80');
  } finally {
    await s.close();
    fabioStatus = 200;
  }
});

test('a key under the gateway prefix is read from the gateway\'s own KV watch', async () => {
  requested.clear();
  const s = supervisor('gateway/fabio');
  s.start();
  try {
    const views = await waitFor(() => s.views(), { timeoutMs: 20_000, message: 'views with the fabio key' });
    assert.deepEqual(
      views.fabio?.map((e) => e.key),
      ['gateway/fabio', 'gateway/fabio/y'],
    );
    assert.ok(!s.status().watches.some((w) => w.name === 'fabio-kv'));
    assert.ok(![...requested].some((p) => p.startsWith('/v1/kv/gateway/fabio')), [...requested].join(' '));
  } finally {
    await s.close();
  }
});

test('turned off: no watch and no fabio view', async () => {
  const s = supervisor(null);
  s.start();
  try {
    const views = await waitFor(() => s.views(), { timeoutMs: 20_000, message: 'views' });
    assert.equal(views.fabio, undefined);
    assert.ok(!s.status().watches.some((w) => w.name === 'fabio-kv'));
  } finally {
    await s.close();
  }
});
