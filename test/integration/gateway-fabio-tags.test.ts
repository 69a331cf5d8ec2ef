/**
 * fabio's tag language through the real gateway and a real Consul agent: host=, prepend=,
 * redirect= with $path, $DC, glob hosts, a tag with a leading space, allow=/deny= on the client
 * address, proto=https with tlsskipverify and with --upstream-ca, bad options that stay problems
 * of their own tag, attack-ish tags, and a Consul change applied after all of it.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send, type Reply } from '../helpers/http.ts';
import { freePort } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import { DEFAULT_CERT, DEFAULT_KEY } from '../helpers/tls-certs.ts';

interface Echo {
  upstream: string;
  url: string;
  headers: Record<string, string | undefined>;
  tls?: boolean;
}

function echo(r: Reply): Echo {
  assert.equal(r.status, 200, `expected 200, got ${r.status}: ${r.body.toString()}`);
  return JSON.parse(r.body.toString()) as Echo;
}

function errorOf(r: Reply): { code: string; message: string } {
  return (JSON.parse(r.body.toString()) as { error: { code: string; message: string } }).error;
}

/** An HTTPS upstream with the self-signed test certificate (SAN IP 127.0.0.1, localhost). */
async function startHttpsUpstream(name: string): Promise<{ port: number; server: HttpsServer; hits: () => number }> {
  let hits = 0;
  const server = createHttpsServer({ cert: DEFAULT_CERT, key: DEFAULT_KEY }, (req, res) => {
    hits++;
    req.resume();
    const body = JSON.stringify({ upstream: name, url: req.url, headers: req.headers, tls: true });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  const port = await freePort();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port }, () => resolve());
  });
  return { port, server, hits: () => hits };
}

async function metricValue(g: GatewayProcess, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${g.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function tagProblems(g: GatewayProcess): Promise<Array<{ subject: string; message: string }>> {
  const r = await runCli(['status', '--json', '--admin', g.adminUrl]);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { problems: Array<{ kind: string; subject: string; message: string }> }).problems.filter((p) => p.kind === 'tag');
}

async function routeIds(g: GatewayProcess): Promise<string[]> {
  return ((await (await fetch(`${g.adminUrl}/v1/routes`)).json()) as Array<{ route: string }>).map((r) => r.route).sort();
}

let consul: ConsulAgent;
let gw: GatewayProcess;
let stopping = false;
const ups: Record<string, Upstream> = {};
let secure: Awaited<ReturnType<typeof startHttpsUpstream>>;
const dir = mkdtempSync(join(tmpdir(), 'cgw-fabio-tags-'));

before(async () => {
  consul = await startConsul();
  for (const name of ['hosty', 'dsty', 'pre', 'redir', 'dc', 'glob', 'deepglob', 'exact', 'spaced', 'guarded', 'mixed', 'odd']) ups[name] = await startUpstream(name);
  secure = await startHttpsUpstream('secure');
  const port = (n: string): number => (ups[n] as Upstream).port;
  await consul.register({ id: 'hosty', name: 'hosty', port: port('hosty'), tags: ['urlprefix-/hosty host=internal.example'] });
  await consul.register({ id: 'dsty', name: 'dsty', port: port('dsty'), tags: ['urlprefix-/dsty host=dst'] });
  await consul.register({ id: 'pre', name: 'pre', port: port('pre'), tags: ['urlprefix-/pre strip=/pre prepend=/v2'] });
  await consul.register({ id: 'redir', name: 'redir', port: port('redir'), tags: ['urlprefix-/old redirect=301,https://new.example.com$path', 'urlprefix-/moved redirect=308,https://docs.example.com/fixed', 'urlprefix-loop.test/ redirect=301,http://loop.test$path'] });
  await consul.register({ id: 'dc', name: 'dc', port: port('dc'), tags: ['urlprefix-/in/$DC/app', 'urlprefix-${DC}.dc.test/'] });
  await consul.register({ id: 'glob', name: 'glob', port: port('glob'), tags: ['urlprefix-*.glob.test/'] });
  await consul.register({ id: 'deepglob', name: 'deepglob', port: port('deepglob'), tags: ['urlprefix-*.deep.glob.test/'] });
  await consul.register({ id: 'exact', name: 'exact', port: port('exact'), tags: ['urlprefix-x.deep.glob.test/'] });
  await consul.register({ id: 'spaced', name: 'spaced', port: port('spaced'), tags: [' urlprefix-/spaced'] });
  await consul.register({
    id: 'guarded',
    name: 'guarded',
    port: port('guarded'),
    tags: ['urlprefix-/denied deny=ip:127.0.0.0/8', 'urlprefix-/allowed allow=ip:127.0.0.1,ip:::1', 'urlprefix-/elsewhere allow=ip:10.0.0.0/8'],
  });
  await consul.register({
    id: 'mixed',
    name: 'mixed',
    port: port('mixed'),
    tags: ['urlprefix-/fine', 'urlprefix-/tcp proto=tcp', 'urlprefix-/js redirect=301,javascript:alert(1)', 'urlprefix-/cidr allow=ip:10.0.0.0/33', 'urlprefix-/proto __proto__=1'],
  });
  await consul.register({
    id: 'odd',
    name: 'odd',
    port: port('odd'),
    tags: ['urlprefix-/odd', `urlprefix-/huge${'/a'.repeat(3000)}`, 'urlprefix-*.*.*/ strip=/x', 'urlprefix-/dc2/$DC/$DC', 'urlprefix-/v/$HOME'],
  });
  await consul.register({ id: 'secure', name: 'secure', port: secure.port, tags: ['urlprefix-/secure proto=https tlsskipverify=true'] });
  await consul.register({ id: 'strict', name: 'strict', port: secure.port, tags: ['urlprefix-/strict proto=https'] });
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--connect-timeout', '5s'] });
  void gw.exited.then((code) => {
    if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}); last log lines:\n${gw.logs.slice(-30).join('\n')}\n`);
  });
  // $DC tags route once the datacenter is known (read at start): wait for them, not a fixed time.
  await waitFor(async () => (await routeIds(gw)).includes('/in/dc1/app'), { timeoutMs: 30_000, message: 'the $DC route never appeared' });
});

after(async () => {
  stopping = true;
  await gw?.kill();
  await Promise.all(Object.values(ups).map((u) => u.close()));
  await new Promise<void>((resolve) => secure?.server.close(() => resolve()));
  secure?.server.closeAllConnections();
  await consul?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

describe('host=', () => {
  test('a name replaces the Host header the upstream sees; X-Forwarded-Host keeps the client\'s', async () => {
    const seen = echo(await send(gw.url, '/hosty/a', { headers: { host: 'public.example' } }));
    assert.equal(seen.upstream, 'hosty');
    assert.equal(seen.headers.host, 'internal.example');
    assert.equal(seen.headers['x-forwarded-host'], 'public.example');
  });

  test('dst sends the endpoint\'s address:port', async () => {
    const seen = echo(await send(gw.url, '/dsty', { headers: { host: 'public.example' } }));
    assert.equal(seen.headers.host, `127.0.0.1:${(ups.dsty as Upstream).port}`);
  });
});

describe('prepend=', () => {
  test('is added after strip, query kept', async () => {
    assert.equal(echo(await send(gw.url, '/pre/items/7?x=1')).url, '/v2/items/7?x=1');
    assert.equal(echo(await send(gw.url, '/pre')).url, '/v2/');
  });

  test('the options show in /v1/routes', async () => {
    const routes = (await (await fetch(`${gw.adminUrl}/v1/routes`)).json()) as Array<Record<string, unknown>>;
    const pre = routes.find((r) => r.route === '/pre');
    assert.deepEqual([pre?.strip, pre?.prepend, pre?.proto], ['/pre', '/v2', 'http']);
    const secureRoute = routes.find((r) => r.route === '/secure');
    assert.deepEqual([secureRoute?.proto, secureRoute?.tlsSkipVerify], ['https', true]);
  });
});

describe('redirect=', () => {
  test('$path becomes the request path and the query is kept; no upstream is asked', async () => {
    const before = (ups.redir as Upstream).hits;
    const r = await send(gw.url, '/old/page?lang=en');
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, 'https://new.example.com/old/page?lang=en');
    const fixed = await send(gw.url, '/moved/anything');
    assert.equal(fixed.status, 308);
    assert.equal(fixed.headers.location, 'https://docs.example.com/fixed');
    assert.equal((ups.redir as Upstream).hits, before);
  });

  test('a redirect to the very URL asked for is skipped for the host-less route, as fabio does', async () => {
    assert.equal(echo(await send(gw.url, '/spaced', { headers: { host: 'loop.test' } })).upstream, 'spaced');
    const none = await send(gw.url, '/nothing-here', { headers: { host: 'loop.test' } });
    assert.equal(none.status, 404);
    assert.equal(errorOf(none).code, 'route_not_found');
  });
});

describe('$DC', () => {
  test('is the agent\'s datacenter in paths and hosts', async () => {
    assert.equal(echo(await send(gw.url, '/in/dc1/app/x')).upstream, 'dc');
    assert.equal(echo(await send(gw.url, '/', { headers: { host: 'dc1.dc.test' } })).upstream, 'dc');
    assert.equal((await send(gw.url, '/in/$DC/app')).status, 404);
  });
});

describe('glob hosts', () => {
  test('*.glob.test matches any subdomain, the more specific glob first, an exact host before both', async () => {
    assert.equal(echo(await send(gw.url, '/', { headers: { host: 'a.glob.test' } })).upstream, 'glob');
    assert.equal(echo(await send(gw.url, '/p', { headers: { host: 'a.b.glob.test:8080' } })).upstream, 'glob');
    assert.equal(echo(await send(gw.url, '/', { headers: { host: 'y.deep.glob.test' } })).upstream, 'deepglob');
    assert.equal(echo(await send(gw.url, '/', { headers: { host: 'x.deep.glob.test' } })).upstream, 'exact');
    assert.equal((await send(gw.url, '/', { headers: { host: 'glob.test' } })).status, 404);
  });
});

describe('a tag with a leading space', () => {
  test('routes like fabio reads it', async () => {
    assert.equal(echo(await send(gw.url, '/spaced')).upstream, 'spaced');
  });
});

describe('allow= and deny=', () => {
  test('deny=ip:127.0.0.0/8 refuses this client (403 ip_denied), allow=ip:127.0.0.1 admits it, allow=ip:10.0.0.0/8 refuses it', async () => {
    const denied = await send(gw.url, '/denied');
    assert.equal(denied.status, 403);
    assert.equal(errorOf(denied).code, 'ip_denied');
    assert.equal(echo(await send(gw.url, '/allowed')).upstream, 'guarded');
    const elsewhere = await send(gw.url, '/elsewhere');
    assert.equal(elsewhere.status, 403);
    assert.equal(errorOf(elsewhere).code, 'ip_denied');
    assert.equal((ups.guarded as Upstream).requests.filter((r) => r.url !== '/allowed').length, 0, 'a refused request reached the upstream');
  });

  test('an X-Forwarded-For address outside the allow list refuses too (fabio checks every element); it never admits', async () => {
    assert.equal((await send(gw.url, '/allowed', { headers: { 'x-forwarded-for': '10.9.9.9' } })).status, 403);
    assert.equal((await send(gw.url, '/denied', { headers: { 'x-forwarded-for': '192.0.2.1' } })).status, 403);
  });

  test('refusals are counted per route', async () => {
    assert.ok((await metricValue(gw, 'cgw_ip_denied_total', 'route="/denied"')) >= 2);
    assert.ok((await metricValue(gw, 'cgw_ip_denied_total', 'route="/elsewhere"')) >= 1);
  });
});

describe('proto=https', () => {
  test('tlsskipverify=true dials the self-signed instance over TLS', async () => {
    const seen = echo(await send(gw.url, '/secure/x'));
    assert.equal(seen.upstream, 'secure');
    assert.equal(seen.tls, true);
    assert.equal(seen.url, '/secure/x');
  });

  test('without it (and no --upstream-ca) the certificate is refused: 502 upstream_tls_error with the reason', async () => {
    const before = secure.hits();
    const r = await send(gw.url, '/strict');
    assert.equal(r.status, 502);
    const error = errorOf(r);
    assert.equal(error.code, 'upstream_tls_error');
    assert.match(error.message, /self-signed|certificate/i);
    assert.match(error.message, /--upstream-ca|tlsskipverify/);
    assert.equal(secure.hits(), before, 'no request reached the upstream');
  });

  test('TLS failures count against the endpoint like connect failures (outlier detection)', async () => {
    await send(gw.url, '/strict');
    const [endpoint] = (await (await fetch(`${gw.adminUrl}/v1/services/strict/endpoints`)).json()) as Array<{ consecutiveFailures: number; ejected: boolean }>;
    assert.ok(endpoint && (endpoint.ejected || endpoint.consecutiveFailures >= 2), JSON.stringify(endpoint));
    // The same address:port over TLS without verification is another pool and endpoint: unaffected.
    assert.equal(echo(await send(gw.url, '/secure/z')).upstream, 'secure');
  });

  test('with --upstream-ca naming its certificate, a second gateway verifies and serves it', async () => {
    const ca = join(dir, 'upstream-ca.pem');
    writeFileSync(ca, DEFAULT_CERT);
    const verifying = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--upstream-ca', ca] });
    try {
      const seen = echo(await send(verifying.url, '/strict/y'));
      assert.equal(seen.tls, true);
      assert.equal(seen.url, '/strict/y');
    } finally {
      await verifying.kill();
    }
  });

  test('--upstream-ca that holds no certificate stops the start with a clear error', async () => {
    const bad = join(dir, 'not-a-ca.pem');
    writeFileSync(bad, 'hello\n');
    const refused = await startGateway({ consul: consul.addr, waitReady: false, args: ['--upstream-ca', bad] });
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([refused.exited, new Promise<'running'>((r) => (timer = setTimeout(() => r('running'), 30_000)))]);
    clearTimeout(timer);
    if (code === 'running') await refused.kill('SIGKILL');
    assert.notEqual(code, 0);
    assert.notEqual(code, 'running');
    assert.match(refused.logs.join('\n'), /--upstream-ca: .*holds no PEM certificate/);
  });
});

describe('bad options', () => {
  test('each makes only its own tag a problem, with a clear message; the good tag of the service serves', async () => {
    assert.equal(echo(await send(gw.url, '/fine')).upstream, 'mixed');
    for (const path of ['/tcp', '/js', '/cidr', '/proto']) assert.equal((await send(gw.url, path)).status, 404, path);
    const problems = (await tagProblems(gw)).filter((p) => p.subject === 'mixed');
    const about = (needle: string) => problems.find((p) => p.message.includes(needle))?.message ?? '';
    assert.equal(problems.length, 4, JSON.stringify(problems));
    assert.match(about('proto=tcp'), /TCP routes are not supported/);
    assert.match(about('javascript:'), /scheme must be http or https/);
    assert.match(about('/33'), /prefix length must be 0-32/);
    assert.match(about('__proto__'), /unknown option "__proto__"/);
  });

  test('attack-ish tags (a huge one, *.*.*, $DC repeated, an unknown variable) are problems or routes, and the gateway serves on', async () => {
    assert.equal(echo(await send(gw.url, '/odd')).upstream, 'odd');
    assert.equal(echo(await send(gw.url, '/dc2/dc1/dc1')).upstream, 'odd');
    const problems = (await tagProblems(gw)).filter((p) => p.subject === 'odd');
    assert.ok(problems.some((p) => /at most 4096/.test(p.message)), JSON.stringify(problems));
    assert.ok(problems.some((p) => /"\*\.\*\.\*" names no domain/.test(p.message)));
    assert.ok(problems.some((p) => /unknown variable \$HOME/.test(p.message)));
    assert.ok(problems.every((p) => p.message.length < 1000), 'a problem quotes the huge tag whole');
  });
});

// Last: the gateway must still follow Consul after everything above.
describe('after all of it', () => {
  test('a service registered now with fabio options is routed', async () => {
    const late = await startUpstream('late');
    try {
      await consul.register({ id: 'late', name: 'late', port: late.port, tags: ['urlprefix-*.late.test/ prepend=/base host=late.internal'] });
      const seen = await waitFor(
        async () => {
          const r = await send(gw.url, '/x', { headers: { host: 'a.late.test' } });
          return r.status === 200 ? echo(r) : undefined;
        },
        { timeoutMs: 30_000, message: 'the late service was never routed' },
      );
      assert.equal(seen.upstream, 'late');
      assert.equal(seen.url, '/base/x');
      assert.equal(seen.headers.host, 'late.internal');
    } finally {
      await consul.deregister('late');
      await late.close();
    }
  });
});
