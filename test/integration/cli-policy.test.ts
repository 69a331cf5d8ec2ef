/**
 * `cgw policy validate|push`, `cgw policies`, `cgw consumer add|rotate|revoke`, `cgw consumers`
 * and the resilience columns of `cgw services|endpoints|status`, as an operator runs them: one
 * real Consul agent and one real gateway (with --policies) for the whole file.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { hashApiKey } from '../../src/policy/consumers.ts';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type CliResult, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let gw: GatewayProcess;
let upstream: Upstream;
let root: string;
/** The gateway's --policies directory. */
let policyDir: string;
let stopping = false;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'cgw-cli-policy-'));
  [consul, upstream] = await Promise.all([startConsul(), startUpstream('keyed')]);
  policyDir = join(root, 'gw');
  await write(join(policyDir, 'routes', 'keyed.yaml'), `description: static route for the API-key tests\npath: /keyed\nupstreams: [${upstream.url}]\n`);
  await write(join(policyDir, 'keyed-auth.yaml'), 'appliesTo: {route: /keyed}\nauth:\n  methods: [apiKey]\n');
  // The plans consumers may name: defined only in a file, so the CLI learns them from the gateway.
  await write(join(policyDir, 'plans.yaml'), 'appliesTo: {service: plans-only}\nrateLimits:\n  - {name: per-consumer, by: consumer, limit: 100, window: 1m, plans: {gold: {limit: 1000, window: 1m}}}\n');
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--policies', policyDir] });
  void gw.exited.then((code) => {
    if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}):\n${gw.logs.slice(-30).join('\n')}\n`);
  });
});

after(async () => {
  stopping = true;
  await gw?.kill();
  await upstream?.close();
  await consul?.destroy();
  if (root) await rm(root, { recursive: true, force: true });
});

async function write(path: string, text: string): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, text);
}

const kvFlags = (prefix = 'gateway/'): string[] => ['--consul', consul.addr, '--kv-prefix', prefix];
/** Consumer add/rotate also ask the gateway which plans its documents (files included) define. */
const planFlags = (): string[] => [...kvFlags(), '--admin', gw.adminUrl];
const admin = (): string[] => ['--admin', gw.adminUrl];

async function ok(args: string[]): Promise<string> {
  const r = await runCli(args);
  assert.equal(r.code, 0, `cgw ${args.join(' ')} exited ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assert.equal(r.stderr, '', `cgw ${args.join(' ')} wrote to stderr`);
  return r.stdout;
}

async function fails(args: string[], code: number): Promise<CliResult> {
  const r = await runCli(args);
  assert.equal(r.code, code, `cgw ${args.join(' ')}: expected exit ${code}, got ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'a stack trace is not a clear message');
  return r;
}

/** Table rows as arrays of cells (columns are separated by two or more spaces). */
function rows(table: string): string[][] {
  return table
    .trimEnd()
    .split('\n')
    .map((l) => l.trim().split(/\s{2,}/));
}

function cell(table: string, first: string, header: string): string | undefined {
  const all = rows(table);
  const i = (all[0] ?? []).indexOf(header);
  assert.notEqual(i, -1, `no column ${header} in:\n${table}`);
  const row = all.find((r) => r[0] === first);
  assert.ok(row, `no row "${first}" in:\n${table}`);
  return row[i];
}

function keyed(key?: string): Promise<Response> {
  return fetch(`${gw.url}/keyed/orders`, { headers: key === undefined ? {} : { 'x-api-key': key }, signal: AbortSignal.timeout(15_000) });
}

async function status(key?: string): Promise<number> {
  const res = await keyed(key);
  await res.arrayBuffer();
  return res.status;
}

describe('cgw policy validate', () => {
  test('valid documents: one ok line each, exit 0; a file in routes/ is a route document', async () => {
    const out = await ok(['policy', 'validate', policyDir, join(policyDir, 'routes', 'keyed.yaml')]);
    assert.deepEqual(out.trim().split('\n'), [
      `ok   ${join(policyDir, 'keyed-auth.yaml')} (policies/keyed-auth)`,
      `ok   ${join(policyDir, 'plans.yaml')} (policies/plans)`,
      `ok   ${join(policyDir, 'routes', 'keyed.yaml')} (routes/keyed)`,
      '3 documents valid',
    ]);
  });

  test('invalid documents: FAIL with the field path, conflicts, missing files, exit 2; --json', async () => {
    const dir = join(root, 'bad');
    await write(join(dir, 'auth.yaml'), 'appliesTo: defaults\nauth:\n  methods: [password]\n');
    await write(join(dir, 'route-connect.yaml'), 'appliesTo: {route: /x}\ntimeouts: {connect: 1s}\n');
    await write(join(dir, 'syntax.yaml'), 'appliesTo: defaults\ntimeouts: {request: 5s\n');
    await write(join(dir, 'zz-defaults.yaml'), 'appliesTo: defaults\n');
    await write(join(dir, 'zz-defaults2.json'), '{"appliesTo": "defaults", "timeouts": {"request": "5s"}}');
    await write(join(dir, 'routes', 'both.yaml'), 'path: /both\nservice: web\nupstreams: [http://127.0.0.1:1]\n');
    const missing = join(root, 'nosuch.yaml');

    const [r, j] = await Promise.all([fails(['policy', 'validate', dir, missing], 2), fails(['policy', 'validate', '--json', dir], 2)]);
    const line = (file: string): string => {
      const l = r.stdout.split('\n').find((x) => x.includes(` ${file}`));
      assert.ok(l, `no line for ${file} in:\n${r.stdout}`);
      return l;
    };
    assert.equal(line(join(dir, 'auth.yaml')), `FAIL ${join(dir, 'auth.yaml')}: auth.methods.0: Invalid option: expected one of "jwt"|"apiKey"|"mtls"`);
    assert.match(line(join(dir, 'route-connect.yaml')), /^FAIL .*: timeouts\.connect: connections are pooled per service/);
    assert.match(line(join(dir, 'syntax.yaml')), /^FAIL .*: not valid JSON or YAML \(line \d+, column \d+\)/);
    assert.match(line(join(dir, 'routes', 'both.yaml')), /^FAIL .*: set exactly one of service, upstreams$/);
    assert.match(line(join(dir, 'zz-defaults.yaml')), /^ok {3}.* \(policies\/zz-defaults\)$/);
    assert.equal(line(missing), `FAIL ${missing}: no such file or directory`);
    // Each is valid alone, but two policies for one target: the gateway applies only the first.
    assert.match(r.stdout, /^FAIL .*zz-defaults2\.json \(policies\/zz-defaults2\): conflict: defaults already has policy policies\/zz-defaults/m);
    assert.equal(r.stderr, 'cgw: 5 of 7 documents invalid, 1 conflict\n');

    const report = JSON.parse(j.stdout) as {
      ok: boolean;
      files: { file: string; id: string | null; kind: string | null; ok: boolean; error: string | null }[];
      conflicts: { id: string; message: string }[];
      error: { message: string; exitCode: number };
    };
    assert.equal(report.ok, false);
    assert.deepEqual(report.error, { message: '4 of 6 documents invalid, 1 conflict', exitCode: 2 });
    assert.equal(report.files.length, 6);
    const both = report.files.find((f) => f.id === 'routes/both');
    assert.deepEqual([both?.kind, both?.ok, both?.error], ['route', false, 'set exactly one of service, upstreams']);
    assert.deepEqual(report.conflicts.map((c) => c.id), ['policies/zz-defaults2']);
    assert.equal(j.stderr, 'cgw: 4 of 6 documents invalid, 1 conflict\n');
  });
});

describe('cgw policy push', () => {
  const prefix = 'pushtest/';
  let dir: string;
  const push = (...extra: string[]): Promise<string> => ok(['policy', 'push', dir, ...kvFlags(prefix), ...extra]);
  const sorted = (out: string): string[] => out.trim().split('\n').sort();

  before(async () => {
    dir = join(root, 'push');
    await write(join(dir, 'defaults.yaml'), '# defaults for every route\nappliesTo: defaults\ntimeouts: {request: 30s}\n');
    await write(join(dir, 'extra.json'), '{"appliesTo": {"service": "extra"}, "retries": {"attempts": 1}}');
    await write(join(dir, 'routes', 'web.yaml'), 'path: /web\nservice: web\n');
  });

  test('created, then unchanged, then updated after an edit; --dry-run writes nothing', async () => {
    assert.deepEqual(sorted(await push()), [
      `created    pushtest/policies/defaults  (${join(dir, 'defaults.yaml')})`,
      `created    pushtest/policies/extra  (${join(dir, 'extra.json')})`,
      `created    pushtest/routes/web  (${join(dir, 'routes', 'web.yaml')})`,
    ]);
    // Verbatim text, comments included.
    assert.equal((await consul.kvGet('pushtest/policies/defaults'))?.value, '# defaults for every route\nappliesTo: defaults\ntimeouts: {request: 30s}\n');
    assert.equal((await consul.kvGet('pushtest/routes/web'))?.value, 'path: /web\nservice: web\n');

    assert.deepEqual(sorted(await push()).map((l) => l.split(/\s+/).slice(0, 2).join(' ')), [
      'unchanged pushtest/policies/defaults',
      'unchanged pushtest/policies/extra',
      'unchanged pushtest/routes/web',
    ]);

    await write(join(dir, 'defaults.yaml'), 'appliesTo: defaults\ntimeouts: {request: 20s}\n');
    const before = await consul.kvGet('pushtest/policies/defaults');
    const dry = await push('--dry-run');
    assert.match(dry, /^would update {2}pushtest\/policies\/defaults {2}\(/m);
    assert.match(dry, /^unchanged +pushtest\/routes\/web/m);
    assert.match(dry, /^dry run: nothing written$/m);
    assert.deepEqual(await consul.kvGet('pushtest/policies/defaults'), before);

    const out = await push();
    assert.match(out, /^updated +pushtest\/policies\/defaults/m);
    assert.match(out, /^unchanged +pushtest\/policies\/extra/m);
    assert.equal((await consul.kvGet('pushtest/policies/defaults'))?.value, 'appliesTo: defaults\ntimeouts: {request: 20s}\n');
  });

  test('a KV document without a file is kept unless --prune; --prune deletes it', async () => {
    await unlink(join(dir, 'extra.json'));
    const kept = await push();
    assert.doesNotMatch(kept, /deleted/);
    assert.match(kept, /^1 KV document has no file \(kept; --prune deletes\): pushtest\/policies\/extra$/m);
    assert.notEqual(await consul.kvGet('pushtest/policies/extra'), null);

    const pruned = JSON.parse(await push('--prune', '--json')) as { results: { action: string; key: string }[] };
    assert.deepEqual(
      pruned.results.map((r) => `${r.action} ${r.key}`).sort(),
      ['deleted pushtest/policies/extra', 'unchanged pushtest/policies/defaults', 'unchanged pushtest/routes/web'],
    );
    assert.equal(await consul.kvGet('pushtest/policies/extra'), null);
  });

  test('one invalid document: exit 2, the FAIL line, and nothing written', async () => {
    await write(join(dir, 'new.yaml'), 'appliesTo: {service: new}\nretries: {attempts: 2}\n');
    await write(join(dir, 'broken.yaml'), 'appliesTo: {service: broken}\nretries: {attempts: 9}\n');
    const r = await fails(['policy', 'push', dir, ...kvFlags(prefix)], 2);
    assert.match(r.stdout, /^FAIL .*broken\.yaml: retries\.attempts: /m);
    assert.match(r.stderr, /^cgw: 1 of 4 documents invalid; nothing was written\n$/);
    assert.equal(await consul.kvGet('pushtest/policies/new'), null);
    await unlink(join(dir, 'broken.yaml'));
    await unlink(join(dir, 'new.yaml'));
  });
});

describe('cgw policies', () => {
  test('file and KV sources; an invalid KV update is shown rejected while the previous version stays applied', async () => {
    type Row = { id: string; kind: string; applied: boolean; source: string | null; version: string | null; target: string | null; rejected: { source: string; error: string } | null };
    // Polled on the admin API (what `cgw policies --json` prints), then checked through the CLI.
    const list = async (): Promise<Row[]> => (await (await fetch(`${gw.adminUrl}/v1/policies`)).json()) as Row[];
    const byId = (rs: Row[], id: string): Row | undefined => rs.find((r) => r.id === id);

    await consul.kvPut('gateway/policies/orders', 'appliesTo: {service: orders}\nretries: {attempts: 1}\n');
    const first = await waitFor(async () => {
      const rs = await list();
      return byId(rs, 'policies/orders')?.applied ? rs : undefined;
    }, { timeoutMs: 15_000, message: 'policies/orders applied' });
    assert.equal(byId(first, 'policies/keyed-auth')?.source, `file:${join(policyDir, 'keyed-auth.yaml')}`);
    assert.equal(byId(first, 'routes/keyed')?.source, `file:${join(policyDir, 'routes', 'keyed.yaml')}`);
    assert.equal(byId(first, 'policies/orders')?.source, 'kv:gateway/policies/orders');
    const goodVersion = byId(first, 'policies/orders')?.version;
    assert.ok(goodVersion);

    await consul.kvPut('gateway/policies/orders', 'appliesTo: {service: orders}\nretries: {attempts: 99}\n');
    await waitFor(async () => byId(await list(), 'policies/orders')?.rejected, { timeoutMs: 15_000, message: 'policies/orders rejected' });
    const [json, table] = await Promise.all([ok(['policies', '--json', ...admin()]), ok(['policies', ...admin()])]);
    const orders = byId(JSON.parse(json) as Row[], 'policies/orders');
    assert.equal(orders?.applied, true, 'the last good version stays in force');
    assert.equal(orders?.version, goodVersion);
    assert.equal(orders?.rejected?.source, 'kv:gateway/policies/orders');
    assert.match(orders?.rejected?.error ?? '', /^retries\.attempts: /);

    assert.equal(cell(table, 'policies/orders', 'APPLIED'), 'yes');
    assert.equal(cell(table, 'policies/orders', 'TARGET'), 'service orders');
    assert.match(cell(table, 'policies/orders', 'REJECTED') ?? '', /^REJECTED kv:gateway\/policies\/orders: retries\.attempts: /);
    assert.match(cell(table, 'policies/orders', 'SOURCE') ?? '', /^kv:gateway\/policies\/orders@\d+$/);
    assert.equal(cell(table, 'policies/keyed-auth', 'REJECTED'), '-');
    assert.equal(cell(table, 'policies/keyed-auth', 'SOURCE'), `file:${join(policyDir, 'keyed-auth.yaml')}`);
    assert.match(table, /^1 document refused:$/m);
    assert.match(table, new RegExp(`^ {4}still in force: the last good version ${goodVersion}`, 'm'));
    await consul.kvDelete('gateway/policies/orders');
  });
});

describe('cgw consumer and cgw consumers', () => {
  const addAcme = ['consumer', 'add', 'acme', '--plan', 'gold', '--scopes', 'orders:read,orders:write', '--limit', '100', '--window', '1m', '--description', 'Acme Corp'];
  let acmeKey = '';

  test('invalid input exits 2 naming the flag; nothing is written', async () => {
    const cases: [string[], RegExp][] = [
      [['Bad_Id'], /"Bad_Id" is not a valid consumer id: consumer ids are 1-64 lower-case/],
      [['ok-id', '--window', 'soon', '--limit', '5'], /--window <duration>' argument 'soon' is invalid/],
      [['ok-id', '--limit', '5', '--window', '500ms'], /--window: must be between 1s and 24h/],
    ];
    const results = await Promise.all(cases.map(([args]) => fails(['consumer', 'add', ...args, ...kvFlags()], 2)));
    results.forEach((r, i) => assert.match(r.stderr, cases[i]?.[1] ?? /never/));
    assert.equal(await consul.kvGet('gateway/consumers/ok-id'), null);
  });

  test('add prints the key once; it works through the gateway; KV holds only its hash', async () => {
    assert.equal(await status(), 401, 'the route is protected');
    const out = await ok([...addAcme, ...planFlags()]);
    const m = /^(cgw_acme_[0-9a-f]{64})$/m.exec(out);
    assert.ok(m?.[1], `no key in:\n${out}`);
    acmeKey = m[1];
    assert.match(out, /^created consumer acme \(gateway\/consumers\/acme\)$/m);
    assert.match(out, /cannot be shown again/);

    const stored = await consul.kvGet('gateway/consumers/acme');
    assert.ok(stored);
    const record = JSON.parse(stored.value) as Record<string, unknown>;
    assert.equal(record.keyHash, hashApiKey(acmeKey));
    assert.ok(!stored.value.includes(acmeKey.slice(-64)), 'the key must never be stored');
    assert.deepEqual([record.plan, record.scopes, record.limits, record.description], ['gold', ['orders:read', 'orders:write'], { limit: 100, window: '1m' }, 'Acme Corp']);

    await waitFor(async () => (await status(acmeKey)) === 200, { timeoutMs: 15_000, message: 'the new key is accepted' });
    const res = await keyed(acmeKey);
    const echoed = (await res.json()) as { headers: Record<string, string> };
    assert.equal(echoed.headers['x-cgw-consumer'], 'acme');
    assert.equal(echoed.headers['x-api-key'], undefined, 'the key is not forwarded upstream');
    assert.equal(await status(`cgw_acme_${'0'.repeat(64)}`), 401, 'a wrong key for the same id');
    assert.ok(!gw.logs.some((l) => l.includes(acmeKey)), 'the key never appears in gateway logs');
  });

  test('add for an existing consumer exits 1 ("already exists" is no lost race) and leaves it alone', async () => {
    const before = await consul.kvGet('gateway/consumers/acme');
    const r = await fails([...addAcme, ...planFlags()], 1);
    assert.equal(
      r.stderr,
      `cgw: consumer acme already exists (gateway/consumers/acme, ModifyIndex ${before?.modifyIndex}); nothing written. \`cgw consumer rotate acme\` gives it a new key, \`cgw consumer revoke acme\` deletes it\n`,
    );
    assert.equal(r.stdout, '');
    assert.deepEqual(await consul.kvGet('gateway/consumers/acme'), before);
  });

  test('a plan no policy defines: exit 2 listing the plans of the documents in force (files too); --force', async () => {
    const r = await fails(['consumer', 'add', 'gamma', '--plan', 'platinum', ...planFlags()], 2);
    assert.equal(
      r.stderr,
      `cgw: plan "platinum" is defined by no policy: no rate limit in the KV documents under gateway/policies/ or in the documents in force at the gateway (${gw.adminUrl}) lists it under plans; plans that exist: gold (file:${join(policyDir, 'plans.yaml')}). Nothing written; --force writes the consumer anyway\n`,
    );
    assert.equal(await consul.kvGet('gateway/consumers/gamma'), null);
    const forced = await ok(['consumer', 'add', 'gamma', '--plan', 'platinum', '--force', '--json', ...planFlags()]);
    const issued = JSON.parse(forced) as { plan: string; warnings: string[] };
    assert.equal(issued.plan, 'platinum');
    assert.match(issued.warnings[0] ?? '', /^plan "platinum" is defined by no policy: .*\(written anyway: --force\)$/);
    await ok(['consumer', 'revoke', 'gamma', ...kvFlags()]);
  });

  test('consumers lists records without hashes and flags invalid ones; add --json', async () => {
    const added = JSON.parse(await ok(['consumer', 'add', 'beta', '--scopes', 'a', '--scopes', 'b', '--json', ...kvFlags()])) as Record<string, unknown>;
    assert.equal(added.id, 'beta');
    assert.match(String(added.key), /^cgw_beta_[0-9a-f]{64}$/);
    assert.deepEqual(added.scopes, ['a', 'b']);
    assert.equal(added.plan, null);
    assert.equal(added.keyHash, undefined);
    await consul.kvPut('gateway/consumers/broken', '{"plan": "gold"}');

    const [table, json] = await Promise.all([ok(['consumers', ...kvFlags()]), ok(['consumers', '--json', ...kvFlags()])]);
    for (const out of [table, json]) assert.doesNotMatch(out, /sha256|"keyHash"|[0-9a-f]{64}/);
    assert.equal(cell(table, 'acme', 'PLAN'), 'gold');
    assert.equal(cell(table, 'acme', 'SCOPES'), 'orders:read,orders:write');
    assert.equal(cell(table, 'acme', 'LIMITS'), '100/1m');
    assert.equal(cell(table, 'acme', 'INVALID'), '-');
    assert.match(cell(table, 'acme', 'MODIFYINDEX') ?? '', /^\d+$/);
    assert.match(cell(table, 'broken', 'INVALID') ?? '', /^INVALID: keyHash: /);
    assert.match(table, /^1 invalid record: the gateway ignores it/m);
    const list = JSON.parse(json) as { id: string; invalid: string | null; modifyIndex: number }[];
    assert.deepEqual(list.map((c) => [c.id, c.invalid === null]), [['acme', true], ['beta', true], ['broken', false]]);
    assert.equal(list[0]?.modifyIndex, (await consul.kvGet('gateway/consumers/acme'))?.modifyIndex);
    await consul.kvDelete('gateway/consumers/broken');
  });

  test('rotate: a new key works, the old one is refused, plan and scopes stay', async () => {
    const out = await ok(['consumer', 'rotate', 'acme', ...kvFlags()]);
    const fresh = /^(cgw_acme_[0-9a-f]{64})$/m.exec(out)?.[1];
    assert.ok(fresh && fresh !== acmeKey, out);
    await waitFor(async () => (await status(acmeKey)) === 401 && (await status(fresh)) === 200, { timeoutMs: 15_000, message: 'rotation applied' });
    const record = JSON.parse((await consul.kvGet('gateway/consumers/acme'))?.value ?? '{}') as Record<string, unknown>;
    assert.deepEqual([record.keyHash, record.plan, record.scopes], [hashApiKey(fresh), 'gold', ['orders:read', 'orders:write']]);
    acmeKey = fresh;
  });

  test('revoke: the key is refused within about a second; revoking again exits 1', async () => {
    assert.equal(await status(acmeKey), 200);
    const out = await ok(['consumer', 'revoke', 'acme', ...kvFlags()]);
    assert.match(out, /^revoked consumer acme: deleted gateway\/consumers\/acme/);
    await waitFor(async () => (await status(acmeKey)) === 401, { timeoutMs: 1500, intervalMs: 10, message: 'revoked key refused' });
    assert.equal(await consul.kvGet('gateway/consumers/acme'), null);

    const [again, rotate] = await Promise.all([fails(['consumer', 'revoke', 'acme', ...kvFlags()], 1), fails(['consumer', 'rotate', 'acme', ...kvFlags()], 1)]);
    for (const r of [again, rotate]) assert.equal(r.stderr, 'cgw: no consumer acme (gateway/consumers/acme does not exist)\n');
  });
});

describe('resilience columns', () => {
  test('services, endpoints and status show kind, discovery, circuit, ejection, rate limiter and policies', async () => {
    const [services, endpoints, statusText, servicesJson] = await Promise.all([
      ok(['services', ...admin()]),
      ok(['endpoints', 'static:keyed', ...admin()]),
      ok(['status', ...admin()]),
      fetch(`${gw.adminUrl}/v1/services`).then((r) => r.text()),
    ]);
    assert.equal(cell(services, 'static:keyed', 'KIND'), 'static');
    assert.equal(cell(services, 'static:keyed', 'DISCOVERY'), 'static');
    assert.equal(cell(services, 'static:keyed', 'EJECTED'), '0');
    const circuit = (JSON.parse(servicesJson) as { name: string; circuit: { enabled: boolean; state: string } | null }[]).find((s) => s.name === 'static:keyed')?.circuit;
    assert.equal(cell(services, 'static:keyed', 'CIRCUIT'), circuit?.enabled ? circuit.state : '-');

    const endpoint = rows(endpoints)[1]?.[0] ?? '';
    assert.equal(cell(endpoints, endpoint, 'EJECTED'), 'no');
    assert.equal(cell(endpoints, endpoint, 'FAILS'), '0');
    assert.equal(cell(endpoints, endpoint, 'ADDRESS'), `127.0.0.1:${upstream.port}`);

    assert.match(statusText, /^rate limiter: local \(no --redis/m);
    assert.match(statusText, /^policies: +3 documents in force, 0 rejected, \d+ consumers?$/m);
    assert.match(statusText, /^circuits: +all closed$/m);
  });
});
