/**
 * The `cgw` CLI as a user runs it: help, every inspection command in table and JSON form against
 * a running gateway, and the exit codes and messages of the error paths.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePort } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
let stopping = false;
const ups: Upstream[] = [];

before(async () => {
  consul = await startConsul();
  const up = async (name: string): Promise<number> => {
    const u = await startUpstream(name);
    ups.push(u);
    return u.port;
  };
  await consul.register({ id: 'web-1', name: 'web', port: await up('web-1'), tags: ['urlprefix-/web', 'v1'] });
  await consul.register({ id: 'web-2', name: 'web', port: await up('web-2'), tags: ['urlprefix-/web', 'v2'], check: 'critical' });
  await consul.register({ id: 'api-1', name: 'api', port: await up('api-1'), tags: ['urlprefix-/api strip=/api', 'urlprefix-api.example.com/'] });
  // Not exposed: no urlprefix- tag.
  await consul.register({ id: 'db-1', name: 'db', port: await up('db-1'), tags: ['internal'] });
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s'] });
  void gw.exited.then((code) => {
    if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}):\n${gw.logs.slice(-30).join('\n')}\n`);
  });
});

after(async () => {
  stopping = true;
  await gw?.kill();
  await Promise.all(ups.map((u) => u.close()));
  await consul?.destroy();
});

async function ok(args: string[]): Promise<string> {
  const r = await runCli(args);
  assert.equal(r.code, 0, `cgw ${args.join(' ')} exited ${r.code}\n${r.stderr}`);
  assert.equal(r.stderr, '', `cgw ${args.join(' ')} wrote to stderr`);
  return r.stdout;
}

/** Table rows as arrays of cells (columns are separated by two or more spaces). */
function rows(table: string): string[][] {
  return table
    .trimEnd()
    .split('\n')
    .map((l) => l.trim().split(/\s{2,}/));
}

function rowOf(table: string, first: string): string[] {
  const row = rows(table).find((r) => r[0] === first);
  assert.ok(row, `no row "${first}" in:\n${table}`);
  return row;
}

function column(table: string, row: string[], header: string): string | undefined {
  const headers = rows(table)[0] ?? [];
  const i = headers.indexOf(header);
  assert.notEqual(i, -1, `no column ${header} in:\n${table}`);
  return row[i];
}

describe('help', () => {
  test('cgw --help lists every command', async () => {
    const out = await ok(['--help']);
    for (const cmd of ['start', 'status', 'services', 'endpoints', 'routes', 'canary']) {
      assert.match(out, new RegExp(`^\\s+${cmd}\\b`, 'm'), `--help does not list "${cmd}"`);
    }
    const canary = await ok(['canary', '--help']);
    for (const cmd of ['get', 'set', 'clear']) assert.match(canary, new RegExp(`^\\s+${cmd}\\b`, 'm'), `canary --help does not list "${cmd}"`);
  });

  test('cgw start --help documents the flags', async () => {
    const out = await ok(['start', '--help']);
    for (const flag of ['--consul', '--token', '--dc', '--consistency', '--wait', '--consul-max-conns', '--listen', '--admin', '--kv-prefix', '--log-level', '--allow-warning']) {
      assert.match(out, new RegExp(`${flag}\\b`), `start --help does not mention ${flag}`);
    }
  });
});

describe('inspection commands against a running gateway', () => {
  const admin = (): string[] => ['--admin', gw.adminUrl];

  test('status: table and --json', async () => {
    const json = JSON.parse(await ok(['status', '--json', ...admin()])) as {
      ready: boolean;
      snapshot: { services: number; routes: number; version: string };
      consul: { healthMode: string; routedServices: number; watchesFailing: unknown[] };
      problems: unknown[];
    };
    assert.equal(json.ready, true);
    assert.equal(json.snapshot.services, 2);
    assert.equal(json.snapshot.routes, 3);
    assert.equal(json.consul.healthMode, 'per-service');
    assert.equal(json.consul.routedServices, 2);
    assert.deepEqual(json.consul.watchesFailing, []);
    assert.deepEqual(json.problems, []);

    const table = await ok(['status', ...admin()]);
    assert.match(table, /ready:\s+yes/);
    assert.match(table, new RegExp(`${json.snapshot.version}.*2 services, 3 routes`));
    assert.match(table, /health mode:\s+per-service/);
    assert.match(table, /0 failing/);
    assert.match(table, /^leader: +known, last contact 0 ms$/m);
    assert.match(table, /problems:\s+none/);
  });

  test('services: table and --json list the routed services with endpoint counts', async () => {
    const json = JSON.parse(await ok(['services', '--json', ...admin()])) as Array<{ name: string; routes: string[]; endpointsHealthy: number; endpointsTotal: number }>;
    const byName = new Map(json.map((s) => [s.name, s]));
    assert.deepEqual([...byName.keys()].sort(), ['api', 'web'], 'db has no urlprefix- tag and must not be listed');
    const webJson = byName.get('web');
    assert.deepEqual([webJson?.routes, webJson?.endpointsHealthy, webJson?.endpointsTotal], [['/web'], 1, 2]);
    assert.deepEqual(byName.get('api')?.routes.sort(), ['/api', 'api.example.com/']);
    assert.equal(byName.get('api')?.endpointsHealthy, 1);

    const table = await ok(['services', ...admin()]);
    const web = rowOf(table, 'web');
    assert.equal(column(table, web, 'HEALTHY'), '1');
    assert.equal(column(table, web, 'TOTAL'), '2');
    assert.equal(column(table, web, 'ROUTES'), '/web');
    assert.equal(column(table, rowOf(table, 'api'), 'TOTAL'), '1');
    assert.equal(rows(table).some((r) => r[0] === 'db'), false);
  });

  test('routes: table and --json show route ids, services and strip', async () => {
    const json = JSON.parse(await ok(['routes', '--json', ...admin()])) as Array<{ route: string; service: string; strip: string | null; host: string | null; path: string }>;
    assert.deepEqual(
      json.map((r) => [r.route, r.service, r.host, r.path, r.strip]).sort(),
      [
        ['/api', 'api', null, '/api', '/api'],
        ['/web', 'web', null, '/web', null],
        ['api.example.com/', 'api', 'api.example.com', '/', null],
      ],
    );
    const table = await ok(['routes', ...admin()]);
    assert.equal(column(table, rowOf(table, '/api'), 'SERVICE'), 'api');
    assert.equal(column(table, rowOf(table, '/api'), 'STRIP'), '/api');
    assert.equal(column(table, rowOf(table, '/web'), 'SERVICE'), 'web');
    assert.equal(column(table, rowOf(table, 'api.example.com/'), 'SERVICE'), 'api');
    assert.equal(rows(table).length, 4, table);
  });

  test('endpoints web: table and --json show every instance with its health', async () => {
    const json = JSON.parse(await ok(['endpoints', 'web', '--json', ...admin()])) as Array<{ id: string; status: string; port: number; receivesTraffic: boolean; tags: string[] }>;
    const byId = new Map(json.map((e) => [e.id, e]));
    assert.deepEqual([...byId.keys()].sort(), ['web-1', 'web-2']);
    assert.equal(byId.get('web-1')?.status, 'passing');
    assert.equal(byId.get('web-1')?.receivesTraffic, true);
    assert.equal(byId.get('web-1')?.port, ups[0]?.port);
    assert.equal(byId.get('web-2')?.status, 'critical');
    assert.equal(byId.get('web-2')?.receivesTraffic, false);
    assert.ok(byId.get('web-2')?.tags.includes('v2'));

    const table = await ok(['endpoints', 'web', ...admin()]);
    const one = rowOf(table, 'web-1');
    assert.equal(column(table, one, 'STATUS'), 'passing');
    assert.equal(column(table, one, 'ADDRESS'), `127.0.0.1:${ups[0]?.port}`);
    assert.equal(column(table, one, 'TRAFFIC'), 'yes');
    const two = rowOf(table, 'web-2');
    assert.equal(column(table, two, 'STATUS'), 'critical');
    assert.equal(column(table, two, 'TRAFFIC'), 'no');
  });

  test('endpoints of an unknown service exits 1 and names it; with --json the error is JSON on stdout', async () => {
    const [text, json] = await Promise.all([runCli(['endpoints', 'nosuch', ...admin()]), runCli(['endpoints', 'nosuch', '--json', ...admin()])]);
    for (const r of [text, json]) {
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr, 'cgw: no routed service named "nosuch"\n');
    }
    assert.equal(text.stdout, '');
    assert.deepEqual(JSON.parse(json.stdout), { error: { message: 'no routed service named "nosuch"', exitCode: 1 } });
  });

  test('CGW_ADMIN and --admin take a URL or host:port alike', async () => {
    const hostPort = gw.adminUrl.replace('http://', '');
    const cases: Array<[string[], Record<string, string>]> = [
      [[], { CGW_ADMIN: gw.adminUrl }],
      [[], { CGW_ADMIN: hostPort }],
      [['--admin', hostPort], {}],
      [['--admin', `:${gw.adminPort}`], {}],
    ];
    for (const [args, env] of cases) {
      const r = await runCli(['routes', '--json', ...args], { env });
      assert.equal(r.code, 0, `${args.join(' ')} ${JSON.stringify(env)}: ${r.stderr}`);
      assert.equal((JSON.parse(r.stdout) as unknown[]).length, 3);
    }
  });
});

describe('error paths', () => {
  test('inspection commands with an unreachable --admin exit 1 with "cannot reach"', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    for (const args of [['status'], ['services', '--json'], ['routes'], ['endpoints', 'web']]) {
      const r = await runCli([...args, '--admin', dead]);
      assert.equal(r.code, 1, `cgw ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, /cannot reach/);
      assert.ok(r.stderr.includes(dead), `stderr should name ${dead}: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'a stack trace is not a clear message');
    }
  });

  test('a bad --admin or CGW_ADMIN exits 2 naming it', async () => {
    const [flag, env] = await Promise.all([runCli(['status', '--admin', 'ftp://x:1']), runCli(['status'], { env: { CGW_ADMIN: 'http://127.0.0.1:9901/v1' } })]);
    assert.equal(flag.code, 2, flag.stderr);
    assert.match(flag.stderr, /^cgw: --admin: "ftp:\/\/x:1" has scheme ftp:\/\//);
    assert.equal(env.code, 2, env.stderr);
    assert.match(env.stderr, /^cgw: CGW_ADMIN: .* must be only scheme, host and port/);
  });

  test('cgw start with a bad Consul setting exits 2 naming it, without starting', async () => {
    const admin = `127.0.0.1:${await freePort()}`;
    const cases: Array<[string[], Record<string, string>, RegExp]> = [
      [['--consul', 'ftp://127.0.0.1:1'], {}, /^cgw: --consul: "ftp:\/\/127\.0\.0\.1:1": scheme ftp:\/\/ is not supported/],
      [[], { CONSUL_HTTP_TOKEN_FILE: '/nonexistent/cgw-token' }, /^cgw: CONSUL_HTTP_TOKEN_FILE: cannot read \/nonexistent\/cgw-token: no such file/],
      [['--consul', consul.addr], { CONSUL_CACERT: '/nonexistent/ca.pem' }, /^cgw: CONSUL_CACERT: cannot read \/nonexistent\/ca\.pem/],
      [['--consul', consul.addr], { CONSUL_HTTP_SSL: 'perhaps' }, /^cgw: CONSUL_HTTP_SSL: expected true or false/],
    ];
    for (const [args, env, message] of cases) {
      const r = await runCli(['start', '--admin', admin, ...args], { env, timeoutMs: 60_000 });
      assert.equal(r.code, 2, `${args.join(' ')} ${JSON.stringify(env)}: exit ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });

  test('cgw start with invalid flags exits 2 naming the flag, without starting', async () => {
    const cases: Array<[string[], string]> = [
      [['--listen', 'nonsense'], '--listen'],
      [['--wait', 'soon'], '--wait'],
      [['--consul-max-conns', '3'], '--consul-max-conns'],
    ];
    for (const [args, flag] of cases) {
      const r = await runCli(['start', '--consul', consul.addr, '--admin', `127.0.0.1:${await freePort()}`, ...args], { timeoutMs: 30_000 });
      assert.equal(r.code, 2, `cgw start ${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
      assert.ok(r.stderr.includes(flag), `stderr should name ${flag}: ${r.stderr}`);
    }
  });
});

describe('cgw status of a gateway that is not ready', () => {
  let lonely: GatewayProcess | undefined;
  type Status = { ready: boolean; consul: { watches: number; watchesFailing: unknown[]; leaderKnown: boolean | null; maxLastContactMs: number | null } };

  before(async () => {
    // Nothing listens at this address: the gateway starts, its watches fail, it never gets ready.
    lonely = await startGateway({ consul: `127.0.0.1:${await freePort()}`, args: ['--wait', '5s'], waitReady: false });
    const adminUrl = lonely.adminUrl;
    await waitFor(
      async () => {
        const s = (await (await fetch(`${adminUrl}/v1/status`, { signal: AbortSignal.timeout(2000) })).json()) as Status;
        return s.consul.watches > 0 && s.consul.watchesFailing.length === s.consul.watches;
      },
      { timeoutMs: 30_000, intervalMs: 100, message: 'every watch of the lonely gateway failing' },
    );
  });

  after(async () => {
    await lonely?.kill();
  });

  test('exit 1 after printing the status; the leader is unknown, not "known, last contact 0 ms"', async () => {
    const adminUrl = lonely?.adminUrl ?? '';
    const [json, text] = await Promise.all([runCli(['status', '--json', '--admin', adminUrl]), runCli(['status', '--admin', adminUrl])]);
    assert.equal(json.code, 1, json.stderr);
    const s = JSON.parse(json.stdout) as Status;
    assert.equal(s.ready, false);
    assert.equal(s.consul.leaderKnown, null);
    assert.equal(s.consul.maxLastContactMs, null);
    assert.match(json.stderr, /^cgw: the gateway at http:\/\/127\.0\.0\.1:\d+ is not ready/);

    assert.equal(text.code, 1, text.stderr);
    assert.match(text.stdout, /^ready: +NO /m);
    assert.match(text.stdout, /^leader: +unknown \(Consul unreachable: every watch is failing\)$/m);
    assert.match(text.stdout, /^consul: +UNREACHABLE \(every watch is failing\)$/m);
    assert.doesNotMatch(text.stdout, /known, last contact/);
  });

  test('lists of a gateway that is not ready say so instead of showing an empty table', async () => {
    const r = await runCli(['routes', '--admin', lonely?.adminUrl ?? '']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'none: the gateway is not ready yet (see cgw status)\n');
    assert.match(r.stderr, /is not ready \(no snapshot in force yet\)/);
  });
});
