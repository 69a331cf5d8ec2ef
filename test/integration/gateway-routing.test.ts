/**
 * Routing through the real gateway: tags → routes, round robin and Consul weights, segment-boundary
 * prefix matching, strip, host routes, forwarding headers, hop-by-hop removal, streaming bodies,
 * and a malformed tag that is skipped, reported and counted without touching other routes.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send, type Reply } from '../helpers/http.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';



interface Echo {
  upstream: string;
  method: string;
  url: string;
  headers: Record<string, string | undefined>;
}

function echo(r: Reply): Echo {
  assert.equal(r.status, 200, `expected 200, got ${r.status}: ${r.body.toString()}`);
  return JSON.parse(r.body.toString()) as Echo;
}

async function tally(base: string, path: string, n: number, headers?: OutgoingHttpHeaders): Promise<{ counts: Map<string, number>; order: string[] }> {
  const counts = new Map<string, number>();
  const order: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await send(base, path, { headers });
    assert.equal(r.status, 200, `request ${i} to ${path}: ${r.status} ${r.body.toString()}`);
    const who = String(r.headers['x-upstream']);
    order.push(who);
    counts.set(who, (counts.get(who) ?? 0) + 1);
  }
  return { counts, order };
}

async function metricValue(gw: GatewayProcess, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

let consul: ConsulAgent;
let gw: GatewayProcess;
let stopping = false;

/** A gateway that dies mid-file would only show up as ECONNREFUSED: print why it died. */
function reportCrash(g: GatewayProcess): void {
  void g.exited.then((code) => {
    if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}); last log lines:\n${g.logs.slice(-30).join('\n')}\n`);
  });
}
const ups: Record<string, Upstream> = {};

before(async () => {
  consul = await startConsul();
  for (const name of ['web-a', 'web-b', 'heavy-a', 'heavy-b', 'api-1', 'shop-1', 'mixed-1']) ups[name] = await startUpstream(name);
  const port = (n: string): number => (ups[n] as Upstream).port;
  await consul.register({ id: 'web-a', name: 'web', port: port('web-a'), tags: ['urlprefix-/web'] });
  await consul.register({ id: 'web-b', name: 'web', port: port('web-b'), tags: ['urlprefix-/web'] });
  await consul.register({ id: 'heavy-a', name: 'heavy', port: port('heavy-a'), tags: ['urlprefix-/heavy'], weights: { passing: 3, warning: 1 } });
  await consul.register({ id: 'heavy-b', name: 'heavy', port: port('heavy-b'), tags: ['urlprefix-/heavy'], weights: { passing: 1, warning: 1 } });
  await consul.register({ id: 'api-1', name: 'api', port: port('api-1'), tags: ['urlprefix-/api strip=/api'] });
  await consul.register({ id: 'shop-1', name: 'shop', port: port('shop-1'), tags: ['urlprefix-shop.example.com/'] });
  await consul.register({ id: 'mixed-1', name: 'mixed', port: port('mixed-1'), tags: ['urlprefix-/ok', 'urlprefix-/bad opt=1'] });
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s'] });
  reportCrash(gw);
  // Ready means the first full sync is in force; every service above was registered before it.
  const routes = (await (await fetch(`${gw.adminUrl}/v1/routes`)).json()) as Array<{ route: string }>;
  assert.deepEqual(routes.map((r) => r.route).sort(), ['/api', '/heavy', '/ok', '/web', 'shop.example.com/'].sort());
});

after(async () => {
  stopping = true;
  await gw?.kill();
  await Promise.all(Object.values(ups).map((u) => u.close()));
  await consul?.destroy();
});

describe('balancing', () => {
  test('round robin alternates evenly between the two web instances', async () => {
    const { counts, order } = await tally(gw.url, '/web/page', 40);
    assert.equal(counts.get('web-a'), 20);
    assert.equal(counts.get('web-b'), 20);
    for (let i = 1; i < order.length; i++) assert.notEqual(order[i], order[i - 1], `requests ${i - 1} and ${i} both went to ${order[i]}`);
  });

  test('Consul Weights {passing: 3} vs {passing: 1} split traffic about 3:1', async () => {
    const { counts } = await tally(gw.url, '/heavy', 80);
    const a = counts.get('heavy-a') ?? 0;
    const b = counts.get('heavy-b') ?? 0;
    assert.equal(a + b, 80);
    assert.ok(a >= 56 && a <= 64, `heavy-a got ${a}/80, expected about 60`);
  });
});

describe('matching', () => {
  test('/web and /web/... match the /web route, /webx does not (404 JSON route_not_found)', async () => {
    assert.equal(echo(await send(gw.url, '/web')).url, '/web');
    assert.equal(echo(await send(gw.url, '/web/')).url, '/web/');
    assert.equal(echo(await send(gw.url, '/web/a/b?x=1')).url, '/web/a/b?x=1');

    const r = await send(gw.url, '/webx');
    assert.equal(r.status, 404);
    assert.match(String(r.headers['content-type']), /application\/json/);
    const body = JSON.parse(r.body.toString()) as { error: { code: string; message: string; requestId: string } };
    assert.equal(body.error.code, 'route_not_found');
    assert.ok(body.error.message.length > 0);
    assert.ok(body.error.requestId.length > 0);
    assert.equal(body.error.requestId, r.headers['x-request-id']);
    assert.equal((await send(gw.url, '/webx/y')).status, 404);
  });

  test('strip=/api removes the prefix and keeps the query', async () => {
    const e = echo(await send(gw.url, '/api/users?q=1'));
    assert.equal(e.upstream, 'api-1');
    assert.equal(e.url, '/users?q=1');
    assert.equal(echo(await send(gw.url, '/api')).url, '/');
    assert.equal((await send(gw.url, '/apix/users')).status, 404);
  });

  test('host routes win for their host (case-insensitive, port ignored); other hosts use host-less routes', async () => {
    for (const host of ['SHOP.example.com:8080', 'shop.example.com', 'Shop.Example.Com']) {
      const e = echo(await send(gw.url, '/web/page', { headers: { host } }));
      assert.equal(e.upstream, 'shop-1', `Host ${host}`);
      assert.equal(e.url, '/web/page');
      assert.equal(echo(await send(gw.url, '/', { headers: { host } })).upstream, 'shop-1');
    }
    const other = echo(await send(gw.url, '/web/page', { headers: { host: 'other.example.com' } }));
    assert.match(other.upstream, /^web-[ab]$/);
    assert.equal((await send(gw.url, '/', { headers: { host: 'other.example.com' } })).status, 404, 'no host-less / route');
    assert.equal((await send(gw.url, '/', { headers: { host: 'shop.example.com.evil.test' } })).status, 404);
  });
});

describe('forwarding', () => {
  test('X-Forwarded-For is appended, X-Forwarded-Proto/Host set, a given X-Request-Id is kept', async () => {
    const r = await send(gw.url, '/api/headers', {
      headers: { host: 'gw.example.com:8080', 'x-forwarded-for': '203.0.113.7', 'x-request-id': 'req-given-42' },
    });
    const e = echo(r);
    assert.equal(e.headers['x-forwarded-for'], '203.0.113.7, 127.0.0.1');
    assert.equal(e.headers['x-forwarded-proto'], 'http');
    assert.equal(e.headers['x-forwarded-host'], 'gw.example.com:8080');
    assert.equal(e.headers['x-request-id'], 'req-given-42');
    assert.equal(r.headers['x-request-id'], 'req-given-42');

    const plain = await send(gw.url, '/api/headers');
    assert.equal(echo(plain).headers['x-forwarded-for'], '127.0.0.1');
  });

  test('without X-Request-Id one is generated, sent upstream and returned to the client', async () => {
    const one = await send(gw.url, '/api/x');
    const two = await send(gw.url, '/api/x');
    const id1 = one.headers['x-request-id'];
    const id2 = two.headers['x-request-id'];
    assert.equal(typeof id1, 'string');
    assert.ok((id1 as string).length >= 8, `generated id "${String(id1)}"`);
    assert.equal(echo(one).headers['x-request-id'], id1);
    assert.equal(echo(two).headers['x-request-id'], id2);
    assert.notEqual(id1, id2);
  });

  test('hop-by-hop headers, and headers named in Connection, are not forwarded', async () => {
    const e = echo(
      await send(gw.url, '/api/hop', {
        headers: {
          connection: 'keep-alive, X-Secret',
          'x-secret': 's3cret',
          'keep-alive': 'timeout=5',
          'proxy-authorization': 'Basic Zm9vOmJhcg==',
          te: 'trailers',
          'x-kept': 'yes',
        },
      }),
    );
    assert.equal(e.headers['x-secret'], undefined, 'header listed in Connection was forwarded');
    assert.doesNotMatch(e.headers.connection ?? '', /secret/i);
    assert.equal(e.headers['keep-alive'], undefined);
    assert.equal(e.headers['proxy-authorization'], undefined);
    assert.equal(e.headers.te, undefined);
    assert.equal(e.headers['x-kept'], 'yes');
  });
});

describe('a malformed tag', () => {
  test('only skips its own route: /ok serves, /bad does not', async () => {
    assert.equal(echo(await send(gw.url, '/ok/x')).upstream, 'mixed-1');
    assert.equal((await send(gw.url, '/bad')).status, 404);
  });

  test('is listed by cgw status --json', async () => {
    const r = await runCli(['status', '--json', '--admin', gw.adminUrl]);
    assert.equal(r.code, 0, r.stderr);
    const status = JSON.parse(r.stdout) as { problems: Array<{ kind: string; subject: string; message: string }> };
    const p = status.problems.find((x) => x.kind === 'tag' && x.subject === 'mixed');
    assert.ok(p, `no tag problem for "mixed" in ${JSON.stringify(status.problems)}`);
    assert.match(p.message, /urlprefix-\/bad opt=1/);
    assert.match(p.message, /opt/);
    assert.equal(status.problems.filter((x) => x.kind === 'tag').length, 1, 'only the bad tag is a problem');
  });

  test('is counted in cgw_config_rejected_total{kind="tag"}', async () => {
    assert.ok((await metricValue(gw, 'cgw_config_rejected_total', 'kind="tag"')) >= 1);
  });
});

// Last on purpose: if this breaks the gateway process, the tests above have already run.
describe('streaming bodies', () => {
  test('a POST body of several MB goes up and comes back byte for byte', async () => {
    const payload = randomBytes(4 * 1024 * 1024 + 123);
    const r = await send(gw.url, '/api/echo', { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: payload });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-upstream'], 'api-1');
    assert.equal(r.body.length, payload.length);
    assert.equal(createHash('sha256').update(r.body).digest('hex'), createHash('sha256').update(payload).digest('hex'));
    assert.equal(ups['api-1']?.requests.at(-1)?.url, '/echo');
  });

  test('bodies stream: echoed bytes reach the client before the upload has ended', async () => {
    const first = randomBytes(256 * 1024);
    const rest = randomBytes(1024 * 1024);
    const url = new URL('/api/echo/stream', gw.url);
    const received: Buffer[] = [];
    let receivedBytes = 0;
    let ended = false;
    let failure: Error | undefined;
    const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname, method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } });
    req.once('error', (err) => (failure = err));
    req.once('response', (res) => {
      res.on('data', (c: Buffer) => {
        received.push(c);
        receivedBytes += c.length;
      });
      res.once('end', () => (ended = true));
    });
    req.write(first);
    // The upload is still open: the first part must already have made the round trip.
    await waitFor(() => failure ?? receivedBytes >= first.length, { timeoutMs: 15_000, message: 'first part echoed while the upload is open' });
    assert.equal(failure, undefined);
    assert.equal(ended, false);
    req.end(rest);
    await waitFor(() => failure ?? ended, { timeoutMs: 20_000, message: 'response ended' });
    assert.equal(failure, undefined);
    assert.ok(Buffer.concat(received).equals(Buffer.concat([first, rest])), 'echoed body differs');
  });

  test('the gateway is still up after the streamed exchange', async () => {
    assert.equal((await fetch(`${gw.adminUrl}/-/healthz`)).status, 200);
    assert.equal(echo(await send(gw.url, '/api/after')).url, '/after');
  });
});
