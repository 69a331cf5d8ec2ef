/**
 * How the Consul commands (canary, policy push, consumer, consumers) find Consul and what they
 * say, as an operator runs them: a real agent; HTTP servers that are not Consul (404 to
 * everything, 200 HTML); an address where nothing listens; a recording proxy in front of the
 * agent to see what is sent; and a second agent with ACLs (default deny) and TLS.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { findConsul, startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, waitFor, type CliResult } from '../helpers/gateway.ts';
import { freePort, freePorts } from '../helpers/ports.ts';
import { collectLines, terminate, track } from '../helpers/process.ts';
import { TEST_CA_PEM, TEST_SERVER_CERT_PEM, TEST_SERVER_KEY_PEM } from '../helpers/cli-tls-fixtures.ts';

let consul: ConsulAgent;
let root: string;
let policyDir: string;
const servers: Server[] = [];
let notFoundAddr: string;
let htmlAddr: string;
let deadAddr: string;

/** An HTTP server on a free loopback port that answers every request with `handler`. */
async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
  const srv = createServer(handler);
  servers.push(srv);
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', () => resolve()));
  const addr = srv.address();
  if (addr === null || typeof addr === 'string') throw new Error('no address');
  return `127.0.0.1:${addr.port}`;
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'cgw-cli-consul-'));
  policyDir = join(root, 'policies');
  await mkdir(policyDir);
  await writeFile(join(policyDir, 'defaults.yaml'), 'appliesTo: defaults\ntimeouts: {request: 30s}\n');
  consul = await startConsul();
  await consul.register({ id: 'web-1', name: 'web', port: 9001, tags: ['urlprefix-/web', 'v1'] });
  await consul.register({ id: 'web-2', name: 'web', port: 9002, tags: ['urlprefix-/web', 'v2'], check: 'critical' });
  notFoundAddr = await serve((_req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('404 page not found\n');
  });
  htmlAddr = `http://${await serve((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><html><body><h1>Welcome</h1></body></html>');
  })}`;
  deadAddr = `127.0.0.1:${await freePort()}`;
});

after(async () => {
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  await consul?.destroy();
  if (root) await rm(root, { recursive: true, force: true });
});

const KEY = 'gateway/canary/web';

/**
 * Runs `tasks` at most `n` at a time: every CLI run is a Node process, and a 2-core machine
 * running other test files too must not be asked for a dozen at once.
 */
async function limited<T>(tasks: readonly (() => Promise<T>)[], n = 2): Promise<T[]> {
  const out: T[] = new Array<T>(tasks.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const i = next++;
      const task = tasks[i];
      if (task) out[i] = await task();
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, tasks.length) }, worker));
  return out;
}

async function expectExit(args: string[], code: number, opts: { env?: Record<string, string> } = {}): Promise<CliResult> {
  const r = await runCli(args, { ...opts, timeoutMs: 60_000 });
  assert.equal(r.code, code, `cgw ${args.join(' ')}: expected exit ${code}, got ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'a stack trace is not a clear message');
  return r;
}

function jsonError(r: CliResult): { message: string; exitCode: number } {
  const body = JSON.parse(r.stdout) as { error?: { message: string; exitCode: number } };
  assert.ok(body.error, `no error object in ${r.stdout}`);
  assert.equal(body.error.exitCode, r.code);
  return body.error;
}

/** Every command that talks to Consul, with valid arguments otherwise. */
const consulCommands = (): string[][] => [
  ['canary', 'get', 'web'],
  ['canary', 'set', 'web', 'v1=90', 'v2=10'],
  ['canary', 'clear', 'web'],
  ['consumers'],
  ['consumer', 'add', 'acme'],
  ['consumer', 'rotate', 'acme'],
  ['consumer', 'revoke', 'acme'],
  ['policy', 'push', policyDir],
];

describe('an address that is not a Consul agent, or where nothing listens: exit 1, never "nothing there"', () => {
  const cases = (): { name: string; consul: string; message: RegExp }[] => [
    { name: '404 to everything', consul: notFoundAddr, message: new RegExp(`^cgw: http://${notFoundAddr.replace(/\./g, '\\.')} is not a Consul agent: GET /v1/status/leader answered 404 Not Found\\n$`) },
    { name: '200 with HTML', consul: htmlAddr, message: /^cgw: http:\/\/127\.0\.0\.1:\d+ is not a Consul agent: GET \/v1\/status\/leader answered 200 with text\/html .*not the leader's address as a JSON string\n$/ },
    { name: 'nothing listening', consul: deadAddr, message: /^cgw: cannot reach Consul at http:\/\/127\.0\.0\.1:\d+: connection refused/ },
  ];

  for (const name of ['404 to everything', '200 with HTML', 'nothing listening']) {
    test(`${name}: every Consul command exits 1 with a clear message, --json too`, async () => {
      const c = cases().find((x) => x.name === name);
      assert.ok(c);
      const results = await limited(
        consulCommands().flatMap((args) => [() => expectExit([...args, '--consul', c.consul], 1), () => expectExit([...args, '--consul', c.consul, '--json'], 1)]),
      );
      for (let i = 0; i < results.length; i += 2) {
        const [text, json] = [results[i], results[i + 1]];
        assert.ok(text && json);
        assert.match(text.stderr, c.message);
        assert.equal(text.stdout, '');
        assert.match(`cgw: ${jsonError(json).message}\n`, c.message);
      }
    });
  }
});

describe('canary set checks the weights against the service\'s instances', () => {
  const kv = (): string[] => ['--consul', consul.addr];

  test('a tag no instance carries, a case mismatch, an unknown service: exit 2 listing the tags, nothing written', async () => {
    await consul.kvPut(KEY, JSON.stringify({ weights: { v1: 100 } }));
    const before = await consul.kvGet(KEY);
    const [caseMismatch, missing, unknown] = await Promise.all([
      expectExit(['canary', 'set', 'web', 'V1=90', 'v2=10', ...kv()], 2),
      expectExit(['canary', 'set', 'web', 'v3=100', ...kv()], 2),
      expectExit(['canary', 'set', 'nosuchsvc', 'v1=100', ...kv()], 2),
    ]);
    assert.equal(
      caseMismatch.stderr,
      'cgw: no instance of web carries tag V1 (weight 90; tags are case-sensitive: did you mean v1?); tags on its 2 instances: v1, v2. Nothing written; --force writes the weights anyway\n',
    );
    assert.equal(missing.stderr, 'cgw: no instance of web carries tag v3 (weight 100); tags on its 2 instances: v1, v2. Nothing written; --force writes the weights anyway\n');
    assert.equal(unknown.stderr, "cgw: Consul's catalog has no instance of service nosuchsvc, whatever its health. Nothing written; --force writes the weights anyway\n");
    assert.deepEqual(await consul.kvGet(KEY), before);
    assert.equal(await consul.kvGet('gateway/canary/nosuchsvc'), null);
  });

  test('the critical instance counts (every instance, whatever its health); weight 0 on a missing tag is allowed', async () => {
    const out = await expectExit(['canary', 'set', 'web', 'v1=90', 'v2=10', 'v3=0', ...kv()], 0);
    assert.match(out.stdout, /^wrote gateway\/canary\/web \(ModifyIndex \d+\): v1=90 v2=10 v3=0$/m);
    assert.match(out.stdout, /^note: no instance of web carries tag v3 \(weight 0\); allowed at weight 0/m);
    assert.deepEqual(JSON.parse((await consul.kvGet(KEY))?.value ?? ''), { weights: { v1: 90, v2: 10, v3: 0 } });
  });

  test('--force writes anyway and says what it overrode; get then flags the tag', async () => {
    const r = await expectExit(['canary', 'set', 'web', 'V1=90', 'v2=10', '--force', '--json', ...kv()], 0);
    const result = JSON.parse(r.stdout) as { weights: Record<string, number>; forced: string[]; modifyIndex: number };
    assert.deepEqual(result.weights, { V1: 90, v2: 10 });
    assert.match(result.forced[0] ?? '', /no instance of web carries tag V1/);
    assert.equal(result.modifyIndex, (await consul.kvGet(KEY))?.modifyIndex);
    const got = await expectExit(['canary', 'get', 'web', ...kv()], 0);
    assert.match(got.stdout, /^note: no instance of web carries tag V1 \(weight 90; tags are case-sensitive: did you mean v1\?\)/m);
    const json = JSON.parse((await expectExit(['canary', 'get', 'web', '--json', ...kv()], 0)).stdout) as { missingTags: string[] };
    assert.deepEqual(json.missingTags, ['V1']);
    const unknown = await expectExit(['canary', 'set', 'nosuchsvc', 'v1=100', '--force', ...kv()], 0);
    assert.match(unknown.stdout, /^warning: Consul's catalog has no instance of service nosuchsvc/m);
    await consul.kvDelete('gateway/canary/nosuchsvc');
  });

  test('malformed weights: each has an accurate message and exit 2; commander does not take v2=-10 for an option', async () => {
    const cases: [string[], string][] = [
      [['v1=110', 'v2=-10'], '"v1=110": the weight must be between 0 and 100'],
      [['v1=90', 'v2=-10'], '"v2=-10": the weight must be between 0 and 100'],
      [['v2'], '"v2" is not tag=weight (e.g. v2=10)'],
      [['=10'], '"=10" is not tag=weight: the tag before "=" is missing'],
      [['v2=abc'], '"v2=abc": "abc" is not a number (a weight is 0-100, e.g. 10 or 12.5)'],
      [['v2=1e2'], '"v2=1e2": write the weight as a plain decimal number between 0 and 100, e.g. 10 or 12.5 (not "1e2")'],
      [['v1=90', 'v2=10%'], '"v2=10%": write the weight without "%" (weights are percentages already: v2=10)'],
      [['v1=50', 'v1=50'], 'tag "v1" given twice ("v1=50" and "v1=50"); tags are case-sensitive, each may appear once'],
      [['v1=90', 'v2=20'], 'weights must sum to 100, not 110 (v1=90 v2=20)'],
      [['v1=101'], '"v1=101": the weight must be between 0 and 100'],
    ];
    const before = await consul.kvGet(KEY);
    const results = await limited(cases.map(([args]) => () => expectExit(['canary', 'set', 'web', ...args, ...kv()], 2)));
    results.forEach((r, i) => assert.equal(r.stderr, `cgw: invalid canary weights: ${cases[i]?.[1] ?? ''}\n`));
    const json = await expectExit(['canary', 'set', 'web', 'v2=-10', 'v1=110', '--json', ...kv()], 2);
    assert.deepEqual(jsonError(json), { message: 'invalid canary weights: "v2=-10": the weight must be between 0 and 100', exitCode: 2 });
    assert.deepEqual(await consul.kvGet(KEY), before);
  });

  test('--cas 0 on an existing key exits 3 and says so; a stale --cas exits 3; the current one writes', async () => {
    const at = (await consul.kvGet(KEY))?.modifyIndex ?? 0;
    const zero = await expectExit(['canary', 'set', 'web', 'v1=80', 'v2=20', '--cas', '0', ...kv()], 3);
    assert.equal(zero.stderr, `cgw: --cas 0 writes only when the key does not exist, and ${KEY} exists at ModifyIndex ${at}; nothing written\n`);
    const stale = await expectExit(['canary', 'set', 'web', 'v1=80', 'v2=20', '--cas', String(at - 1), '--json', ...kv()], 3);
    assert.match(jsonError(stale).message, new RegExp(`^${KEY} is at ModifyIndex ${at}, not ${at - 1} `));
    assert.equal((await consul.kvGet(KEY))?.modifyIndex, at);
    await expectExit(['canary', 'set', 'web', 'v1=80', 'v2=20', '--cas', String(at), ...kv()], 0);
    assert.deepEqual(JSON.parse((await consul.kvGet(KEY))?.value ?? ''), { weights: { v1: 80, v2: 20 } });
  });
});

describe('consumer exit codes', () => {
  const kv = (): string[] => ['--consul', consul.addr, '--kv-prefix', 'codes/', '--admin', deadAddr];
  const PLANS = 'appliesTo: defaults\nrateLimits:\n  - {name: per-consumer, by: consumer, limit: 10, window: 1m, plans: {gold: {limit: 100, window: 1m}}}\n';

  test('an existing consumer: exit 1 "already exists", not 3; an undefined plan: exit 2 listing plans; --force', async () => {
    await consul.kvPut('codes/policies/plans', PLANS);
    await expectExit(['consumer', 'add', 'acme', '--plan', 'gold', ...kv()], 0);
    const before = await consul.kvGet('codes/consumers/acme');
    const [exists, existsJson] = await Promise.all([
      expectExit(['consumer', 'add', 'acme', ...kv()], 1),
      expectExit(['consumer', 'add', 'acme', '--json', ...kv()], 1),
    ]);
    assert.match(exists.stderr, /^cgw: consumer acme already exists \(codes\/consumers\/acme, ModifyIndex \d+\); nothing written/);
    assert.match(jsonError(existsJson).message, /^consumer acme already exists/);
    assert.deepEqual(await consul.kvGet('codes/consumers/acme'), before);

    const plan = await expectExit(['consumer', 'add', 'beta', '--plan', 'platinum', ...kv()], 2);
    assert.match(plan.stderr, /^cgw: plan "platinum" is defined by no policy document in KV \(codes\/policies\/\), and file policies \(--policies\) could not be checked: cannot reach the gateway admin API at http:\/\/127\.0\.0\.1:\d+: connection refused/);
    assert.match(plan.stderr, /plans that exist: gold \(kv:codes\/policies\/plans\)\. Nothing written; --force writes the consumer anyway\n$/);
    assert.equal(await consul.kvGet('codes/consumers/beta'), null);
    const rotate = await expectExit(['consumer', 'rotate', 'acme', '--plan', 'platinum', ...kv()], 2);
    assert.match(rotate.stderr, /plan "platinum"/);
    assert.deepEqual(await consul.kvGet('codes/consumers/acme'), before);

    const forced = await expectExit(['consumer', 'add', 'beta', '--plan', 'platinum', '--force', ...kv()], 0);
    assert.match(forced.stdout, /^warning: plan "platinum" is defined by no policy .*\(written anyway: --force\)$/m);
    assert.match(forced.stdout, /^cgw_beta_[0-9a-f]{64}$/m);
    const missing = await expectExit(['consumer', 'revoke', 'nobody', '--consul', consul.addr, '--kv-prefix', 'codes/'], 1);
    assert.equal(missing.stderr, 'cgw: no consumer nobody (codes/consumers/nobody does not exist)\n');
  });
});

describe('--json errors', () => {
  test('usage errors caught by commander print a JSON error with exit 2', async () => {
    const cases: string[][] = [
      ['canary', 'set', 'web', 'v1=100', '--cas', 'abc', '--json'],
      ['consumer', 'add', '--json'],
      ['consumers', '--no-such-flag', '--json'],
      ['status', '--json', '--bogus'],
    ];
    const results = await limited(cases.map((args) => () => expectExit(args, 2)));
    for (const r of results) assert.equal(jsonError(r).exitCode, 2);
    assert.match(jsonError(results[0] as CliResult).message, /--cas <modifyIndex>' argument 'abc' is invalid/);
  });

  test('invalid addresses and settings: exit 2, JSON too', async () => {
    const [badConsul, badEnv, badAdmin] = await Promise.all([
      expectExit(['consumers', '--consul', 'ftp://127.0.0.1:1', '--json'], 2),
      expectExit(['canary', 'get', 'web', '--json'], 2, { env: { CONSUL_HTTP_ADDR: consul.addr, CONSUL_HTTP_TOKEN_FILE: join(root, 'no-such-token') } }),
      expectExit(['routes', '--admin', 'http://127.0.0.1:9901/v1', '--json'], 2),
    ]);
    assert.match(jsonError(badConsul).message, /^--consul: "ftp:\/\/127\.0\.0\.1:1": scheme ftp:\/\/ is not supported/);
    assert.match(jsonError(badEnv).message, /^CONSUL_HTTP_TOKEN_FILE: cannot read .*no-such-token: no such file$/);
    assert.match(jsonError(badAdmin).message, /^--admin: /);
  });

  test('inspection commands: an unreachable admin API is a JSON error, exit 1', async () => {
    const r = await expectExit(['services', '--admin', deadAddr, '--json'], 1);
    assert.match(jsonError(r).message, /^cannot reach the gateway admin API at http:\/\/127\.0\.0\.1:\d+: connection refused/);
  });
});

describe('the Consul environment', () => {
  let proxyAddr: string;
  const seen: { method: string; url: string; headers: IncomingHttpHeaders }[] = [];

  before(async () => {
    const target = new URL(consul.addr);
    // Forwards to the agent and records what the CLI sends.
    proxyAddr = await serve((req, res) => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
      const fwd = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      fwd.on('error', () => res.destroy());
      req.pipe(fwd);
    });
  });

  test('CONSUL_HTTP_ADDR without scheme and CONSUL_HTTP_TOKEN_FILE: the token goes in X-Consul-Token, never in a URL', async () => {
    const tokenFile = join(root, 'token');
    await writeFile(tokenFile, '  file-token-1234\n');
    seen.length = 0;
    const env = { CONSUL_HTTP_ADDR: proxyAddr, CONSUL_HTTP_TOKEN_FILE: tokenFile, CONSUL_HTTP_TOKEN: 'env-token' };
    await expectExit(['canary', 'set', 'web', 'v1=50', 'v2=50'], 0, { env });
    await expectExit(['consumers'], 0, { env });
    assert.ok(seen.length >= 5, `requests seen: ${seen.map((s) => s.url).join(', ')}`);
    assert.equal(seen[0]?.url, '/v1/status/leader', 'the first request checks that it is Consul');
    for (const s of seen) {
      assert.equal(s.headers['x-consul-token'], 'file-token-1234', `${s.method} ${s.url}`);
      assert.doesNotMatch(s.url, /token/i);
    }
    assert.ok(seen.some((s) => s.method === 'PUT' && decodeURIComponent(s.url).startsWith('/v1/kv/gateway/canary/web?cas=')), seen.map((s) => `${s.method} ${s.url}`).join('\n'));

    seen.length = 0;
    await expectExit(['consumers', '--token', 'flag-token'], 0, { env: { ...env, CONSUL_HTTP_TOKEN_FILE: join(root, 'missing-file') } });
    assert.ok(seen.length > 0 && seen.every((s) => s.headers['x-consul-token'] === 'flag-token'), '--token wins and the file is not read');
  });

  test('--consul host:port and http:// URL are the same agent', async () => {
    const host = consul.addr.replace('http://', '');
    const [a, b] = await Promise.all([
      expectExit(['canary', 'get', 'web', '--json', '--consul', host], 0),
      expectExit(['canary', 'get', 'web', '--json', '--consul', consul.addr], 0),
    ]);
    assert.equal(a.stdout, b.stdout);
  });
});

describe('ACLs and TLS (an agent with ACLs on, default deny, and an https port)', () => {
  let agent: ChildProcess | undefined;
  let httpAddr = '';
  let httpsPort = 0;
  let kvOnlyToken = '';
  const logs: string[] = [];
  const files = (): Record<string, string> => ({ ca: join(root, 'ca.pem'), cert: join(root, 'srv.pem'), key: join(root, 'srv.key'), root: join(root, 'root-token') });

  const api = async (method: string, path: string, body?: string, port = Number(httpAddr.split(':')[1])) => {
    const res = await request(`http://127.0.0.1:${port}${path}`, { method: method as 'GET', headers: { 'x-consul-token': 'root' }, body, headersTimeout: 10_000, bodyTimeout: 10_000 });
    return { status: res.statusCode, text: await res.body.text() };
  };

  before(async () => {
    await writeFile(files().ca ?? '', TEST_CA_PEM);
    await writeFile(files().cert ?? '', TEST_SERVER_CERT_PEM);
    await writeFile(files().key ?? '', TEST_SERVER_KEY_PEM);
    await writeFile(files().root ?? '', 'root\n');
    const [http, https, serfLan, serfWan, server] = (await freePorts(5)) as [number, number, number, number, number];
    httpAddr = `127.0.0.1:${http}`;
    httpsPort = https;
    const child = spawn(
      findConsul(),
      [
        'agent', '-dev', '-node', 'acl-tls', '-bind', '127.0.0.1', '-client', '127.0.0.1',
        '-http-port', String(http), '-dns-port', '-1', '-grpc-port', '-1',
        '-serf-lan-port', String(serfLan), '-serf-wan-port', String(serfWan), '-server-port', String(server),
        '-log-level', 'warn',
        '-hcl', 'disable_update_check = true',
        '-hcl', 'acl { enabled = true\n default_policy = "deny"\n tokens { master = "root" } }',
        '-hcl', `ports { https = ${https} }`,
        '-hcl', `ca_file = "${files().ca}"`,
        '-hcl', `cert_file = "${files().cert}"`,
        '-hcl', `key_file = "${files().key}"`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    agent = child;
    track(child);
    collectLines(child.stdout, logs);
    collectLines(child.stderr, logs);
    await waitFor(async () => (await api('PUT', '/v1/kv/ready', 'ok')).text.trim() === 'true', { timeoutMs: 30_000, message: `ACL agent ready\n${logs.join('\n')}` });
    const reg = await api('PUT', '/v1/agent/service/register', JSON.stringify({ ID: 'api-1', Name: 'api', Port: 9100, Tags: ['blue'] }));
    assert.equal(reg.status, 200, reg.text);
    await waitFor(async () => (JSON.parse((await api('GET', '/v1/catalog/service/api')).text) as unknown[]).length === 1, { message: 'api registered' });
    const policy = await api('PUT', '/v1/acl/policy', JSON.stringify({ Name: 'kv-only', Rules: 'key_prefix "gateway/" { policy = "write" }' }));
    assert.equal(policy.status, 200, policy.text);
    const token = await api('PUT', '/v1/acl/token', JSON.stringify({ Policies: [{ Name: 'kv-only' }] }));
    kvOnlyToken = (JSON.parse(token.text) as { SecretID: string }).SecretID;
  });

  after(async () => {
    if (agent) await terminate(agent, 'SIGTERM', 5000);
  });

  test('no token, an unknown token, a token without permission: exit 1 saying so', async () => {
    const [none, unknown, filtered] = await Promise.all([
      expectExit(['consumers', '--consul', httpAddr], 1),
      expectExit(['canary', 'get', 'api', '--consul', httpAddr, '--token', 'not-a-token'], 1),
      expectExit(['canary', 'set', 'api', 'blue=100', '--consul', httpAddr, '--token', kvOnlyToken], 2),
    ]);
    assert.match(none.stderr, /^cgw: Consul at http:\/\/127\.0\.0\.1:\d+ refused to read gateway\/consumers\/: no ACL token was given \(--token, CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE\), and the anonymous token lacks permission \(403 Permission denied\)\n$/);
    assert.match(unknown.stderr, /does not know the ACL token from --token \(403 ACL not found\)/);
    // Consul answers 200 [] to a catalog read the token may not see: the message says both readings.
    assert.match(filtered.stderr, /no instance of service api, whatever its health \(or the ACL token may not read it: it needs service:read\)/);
  });

  test('CONSUL_HTTP_TOKEN_FILE with CONSUL_HTTP_ADDR without scheme; canary set with the instance tags', async () => {
    const env = { CONSUL_HTTP_ADDR: httpAddr, CONSUL_HTTP_TOKEN_FILE: files().root ?? '' };
    const out = await expectExit(['canary', 'set', 'api', 'blue=100'], 0, { env });
    assert.match(out.stdout, /^wrote gateway\/canary\/api/);
    await expectExit(['canary', 'clear', 'api'], 0, { env });
  });

  test('TLS: CONSUL_CACERT verifies the agent; CONSUL_HTTP_SSL makes host:port https; a wrong name or no CA exits 1', async () => {
    const host = `127.0.0.1:${httpsPort}`;
    const tls = { CONSUL_CACERT: files().ca ?? '', CONSUL_HTTP_TOKEN: 'root' };
    const [url, ssl, serverName, wrongName, noCa, plainToTls] = await limited([
      () => expectExit(['consumers', '--consul', `https://${host}`], 0, { env: tls }),
      () => expectExit(['consumers'], 0, { env: { ...tls, CONSUL_HTTP_ADDR: host, CONSUL_HTTP_SSL: 'true' } }),
      () => expectExit(['consumers', '--consul', `https://${host}`], 0, { env: { ...tls, CONSUL_TLS_SERVER_NAME: 'server.dc1.consul' } }),
      () => expectExit(['consumers', '--consul', `https://${host}`], 1, { env: { ...tls, CONSUL_TLS_SERVER_NAME: 'other.example' } }),
      () => expectExit(['consumers', '--consul', `https://${host}`], 1, { env: { CONSUL_HTTP_TOKEN: 'root' } }),
      () => expectExit(['consumers', '--consul', host], 1, { env: tls }),
    ]);
    assert.ok(url && ssl && serverName && wrongName && noCa && plainToTls);
    for (const r of [url, ssl, serverName]) assert.match(r.stdout, /^no consumers under gateway\/consumers\//);
    assert.match(wrongName.stderr, /TLS certificate not accepted: .*other\.example/);
    assert.match(noCa.stderr, /^cgw: cannot reach Consul at https:\/\/127\.0\.0\.1:\d+: TLS certificate not accepted/);
    assert.match(plainToTls.stderr, /is an HTTPS listener: use https:\/\/127\.0\.0\.1:\d+ or CONSUL_HTTP_SSL=true/);
  });
});
