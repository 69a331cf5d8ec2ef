/**
 * The configuration history and `cgw rollback` as an operator meets them: one real Consul agent
 * and two gateways on the same KV prefix (one process, and a primary with two workers). Policy pushes, canary weights and a route document
 * written straight to KV by another tool each become one entry (not one per gateway), `cgw
 * history` lists them in order, and `cgw rollback` restores an older version that both gateways
 * then serve. Garbage in the history's KV prefix is refused entry by entry while the gateways
 * keep serving and recording.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CliError } from '../../src/cli/admin-client.ts';
import { consulKv } from '../../src/cli/consul-kv.ts';
import { rollback } from '../../src/cli/history.ts';
import { resolveConsulConnection } from '../../src/consul/connection.ts';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type CliResult, type GatewayProcess } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

interface HistoryJson {
  historyPrefix: string;
  inForce: string;
  recorded: boolean;
  entries: { seq: number; version: string; previous: string | null; at: string; source: string; by: string; inForce: boolean; changes: { key: string; kind: string; action: string; restorable: boolean }[] }[];
  refused: { key: string; error: string }[];
}

let consul: ConsulAgent;
let upstream: Upstream;
let gateways: GatewayProcess[] = [];
let root: string;
let stopping = false;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'cgw-history-'));
  [consul, upstream] = await Promise.all([startConsul(), startUpstream('docs')]);
  // The second runs a primary and two workers: the primary's control plane writes the history.
  gateways = await Promise.all([1, 2].map((n) => startGateway({ consul: consul.addr, args: ['--wait', '5s', '--gateway-id', `edge-${n}`, '--workers', String(n)] })));
  for (const gw of gateways) {
    void gw.exited.then((code) => {
      if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}):\n${gw.logs.slice(-30).join('\n')}\n`);
    });
  }
});

after(async () => {
  stopping = true;
  await Promise.all(gateways.map((gw) => gw.kill()));
  await upstream?.close();
  await consul?.destroy();
  if (root) await rm(root, { recursive: true, force: true });
});

const kvFlags = (): string[] => ['--consul', consul.addr, '--kv-prefix', 'gateway/'];
const routeDoc = (path: string): string => `description: history test\npath: ${path}\nupstreams: [${upstream.url}]\n`;

async function policyDir(name: string, routes: string[]): Promise<string> {
  const dir = join(root, name);
  await mkdir(join(dir, 'routes'), { recursive: true });
  for (const r of routes) await writeFile(join(dir, 'routes', `${r}.yaml`), routeDoc(`/${r}`));
  return dir;
}

async function ok(args: string[]): Promise<string> {
  const r = await runCli(args);
  assert.equal(r.code, 0, `cgw ${args.join(' ')} exited ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  return r.stdout;
}

async function fails(args: string[], code: number): Promise<CliResult> {
  const r = await runCli(args);
  assert.equal(r.code, code, `cgw ${args.join(' ')}: expected exit ${code}, got ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'a stack trace is not a clear message');
  return r;
}

async function history(): Promise<HistoryJson> {
  return JSON.parse(await ok(['history', '--json', ...kvFlags()])) as HistoryJson;
}

/** Until the version in KV now is the newest entry of the history. */
async function recorded(what: string): Promise<HistoryJson> {
  return waitFor(
    async () => {
      const h = await history();
      return h.entries[0]?.version === h.inForce && h;
    },
    { timeoutMs: 30_000, intervalMs: 200, message: `history records ${what}` },
  );
}

async function status(gw: GatewayProcess, path: string): Promise<number> {
  const res = await fetch(`${gw.url}${path}`, { signal: AbortSignal.timeout(10_000) });
  await res.arrayBuffer();
  return res.status;
}

/** Until every gateway answers each path with its status. */
async function served(expect: Record<string, number>, what: string): Promise<void> {
  await waitFor(
    async () => {
      for (const gw of gateways) for (const [path, code] of Object.entries(expect)) if ((await status(gw, path)) !== code) return false;
      return true;
    },
    { timeoutMs: 30_000, intervalMs: 100, message: what },
  );
}

describe('configuration history and rollback', () => {
  let versionA = '';

  test('pushes, canary weights and a document written by another tool each make one entry, in order', async () => {
    const first = await recorded('the configuration the gateways started with');
    const seqs: number[] = [first.entries[0]?.seq ?? 0];

    await ok(['policy', 'push', await policyDir('a', ['only-a', 'shared']), ...kvFlags()]);
    await served({ '/only-a/x': 200, '/shared/x': 200 }, 'both gateways serve version A');
    const a = await recorded('version A');
    versionA = a.inForce;
    seqs.push(a.entries[0]?.seq ?? 0);

    await ok(['policy', 'push', await policyDir('b', ['only-b', 'shared']), '--prune', ...kvFlags()]);
    await served({ '/only-b/x': 200, '/only-a/x': 404 }, 'both gateways serve version B');
    seqs.push((await recorded('version B')).entries[0]?.seq ?? 0);

    await ok(['canary', 'set', 'web', 'v1=90', 'v2=10', '--force', ...kvFlags()]);
    seqs.push((await recorded('the canary weights')).entries[0]?.seq ?? 0);

    // Another tool writes a route document straight to KV.
    await consul.kvPut('gateway/routes/direct', routeDoc('/direct'));
    await served({ '/direct/x': 200 }, 'both gateways serve the document written to KV');
    const h = await recorded('the document written to KV');
    seqs.push(h.entries[0]?.seq ?? 0);

    // A push writes its keys one by one: a gateway may apply (and record) a state in between, so
    // each step is one entry or a few, never one per gateway.
    const changesOf = (from: number, to: number): string[] =>
      h.entries
        .filter((e) => e.seq > from && e.seq <= to)
        .flatMap((e) => e.changes.map((c) => `${c.action} ${c.key}`))
        .sort();
    const steps = seqs.slice(1).map((to, i) => changesOf(seqs[i] ?? 0, to));
    assert.deepEqual(steps, [
      ['added gateway/routes/only-a', 'added gateway/routes/shared'],
      ['added gateway/routes/only-b', 'removed gateway/routes/only-a'],
      ['added gateway/canary/web'],
      ['added gateway/routes/direct'],
    ]);
    // Single-key changes are exactly one entry although two gateways applied each.
    assert.equal(seqs[3], (seqs[2] ?? 0) + 1);
    assert.equal(seqs[4], (seqs[3] ?? 0) + 1);
    assert.ok((seqs[1] ?? 0) - (seqs[0] ?? 0) <= 2 && (seqs[2] ?? 0) - (seqs[1] ?? 0) <= 2, `one entry per state applied: ${seqs.join(', ')}`);
    h.entries.forEach((e, i) => {
      const older = h.entries[i + 1];
      if (older) assert.equal(e.previous, older.version, `entry ${e.seq} follows entry ${older.seq}`);
    });
    assert.equal(new Set(h.entries.map((e) => e.version)).size, h.entries.length);
    assert.deepEqual(h.entries.map((e) => e.seq), [...h.entries.map((e) => e.seq)].sort((x, y) => y - x), 'newest first');
    for (const e of h.entries) assert.ok(['edge-1', 'edge-2'].includes(e.by), e.by);
    // Which tool wrote each change: cgw's commands mark their values (Consul flags), anything else is kv.
    const sourceOf = (key: string, action = 'added'): string | undefined => h.entries.find((e) => e.changes.some((c) => c.key === key && c.action === action))?.source;
    assert.equal(sourceOf('gateway/routes/only-a'), 'cgw policy push');
    assert.equal(sourceOf('gateway/routes/only-b'), 'cgw policy push');
    assert.equal(sourceOf('gateway/canary/web'), 'cgw canary');
    assert.equal(sourceOf('gateway/routes/direct'), 'kv');
    assert.deepEqual(h.entries.map((e) => e.inForce), h.entries.map((_, i) => i === 0));

    const text = await ok(['history', ...kvFlags()]);
    assert.match(text, /SEQ\s+VERSION\s+AT\s+SOURCE\s+BY\s+CHANGES/);
    assert.match(text, new RegExp(`\\*\\s+\\d+\\s+${h.inForce}\\s+\\S+\\s+kv\\s+edge-\\d\\s+\\+routes/direct`));
    assert.match(text, /cgw canary\s+edge-\d\s+\+canary\/web/);
    assert.match(text, /-routes\/only-a/);
  });

  test('rollback --dry-run shows the plan and writes nothing', async () => {
    const before = await history();
    const out = await ok(['rollback', versionA, '--dry-run', ...kvFlags()]);
    assert.match(out, /would create\s+gateway\/routes\/only-a/);
    assert.match(out, /would delete\s+gateway\/routes\/only-b/);
    assert.match(out, /would delete\s+gateway\/canary\/web/);
    assert.match(out, /would delete\s+gateway\/routes\/direct/);
    assert.equal(await consul.kvGet('gateway/routes/only-a'), null);
    assert.equal((await history()).inForce, before.inForce);
  });

  test('rollback restores an older version, and both gateways apply it', async () => {
    const headBefore = (await history()).entries[0]?.seq ?? 0;
    const out = JSON.parse(await ok(['rollback', versionA.slice(0, 8), '--json', ...kvFlags()])) as { version: string; steps: { action: string; key: string }[] };
    assert.equal(out.version, versionA);
    assert.deepEqual(out.steps.map((s) => `${s.action} ${s.key}`).sort(), ['create gateway/routes/only-a', 'delete gateway/canary/web', 'delete gateway/routes/direct', 'delete gateway/routes/only-b'].sort());
    await served({ '/only-a/x': 200, '/shared/x': 200, '/only-b/x': 404, '/direct/x': 404 }, 'both gateways serve version A again');
    assert.equal(await consul.kvGet('gateway/canary/web'), null);
    const h = await recorded('the rollback');
    assert.equal(h.inForce, versionA);
    assert.equal(h.entries[0]?.version, versionA, 'the return to A is a new entry');
    assert.ok(h.entries[0]?.inForce);
    // The keys are written one by one: a gateway may apply (and record) a state in between.
    const since = h.entries.filter((e) => e.seq > headBefore);
    assert.ok(since.length >= 1 && since.length <= 4, JSON.stringify(since));
    assert.deepEqual(since.flatMap((e) => e.changes.map((c) => `${c.action} ${c.key}`)).sort(), ['added gateway/routes/only-a', 'removed gateway/canary/web', 'removed gateway/routes/direct', 'removed gateway/routes/only-b']);
    assert.equal(since.find((e) => e.changes.some((c) => c.action === 'added'))?.source, 'cgw rollback');
    // Nothing to do the second time.
    assert.match(await ok(['rollback', versionA, ...kvFlags()]), /already in KV: nothing to do/);
  });

  test("a key changed by someone else during the rollback: Consul's check-and-set refuses it, exit 3 naming the key", async () => {
    const h = await history();
    const target = h.entries.find((e) => e.changes.some((c) => c.key === 'gateway/canary/web' && c.action === 'added'));
    assert.ok(target);
    const store = consulKv(resolveConsulConnection({ address: consul.addr }, {}));
    let writes = 0;
    const racing = {
      ...store,
      set: async (key: string, value: string, cas: number, flags?: number) => {
        // Another operator creates the second key between the plan and its write.
        if (++writes === 2) await consul.kvPut(key, routeDoc('/someone-else'));
        return store.set(key, value, cas, flags);
      },
    };
    await assert.rejects(rollback(racing, target.version, { kvPrefix: 'gateway/' }), (err: unknown) => {
      assert.ok(err instanceof CliError);
      assert.equal(err.exitCode, 3);
      assert.match(err.message, /gateway\/routes\/only-b was changed by someone else during the rollback \(check-and-set on ModifyIndex 0 lost\); not restored\. Already written: create gateway\/canary\/web\./);
      return true;
    });
    assert.equal((await consul.kvGet('gateway/routes/only-b'))?.value, routeDoc('/someone-else'), 'the other writer\'s value stays');
    assert.ok(await consul.kvGet('gateway/routes/only-a'), 'the deletes after the lost write were not made');
  });

  test('unknown versions are clear errors', async () => {
    const unknown = await fails(['rollback', '0123456789ab', ...kvFlags()], 1);
    assert.match(unknown.stderr, /version 0123456789ab is not in the history/);
    const bad = await fails(['rollback', 'not-a-version', '--json', ...kvFlags()], 2);
    assert.match(bad.stdout, /"exitCode": 2/);
  });

  test('garbage in the history prefix is refused entry by entry; the gateways keep serving and recording', async () => {
    const before = await history();
    const deep = `${'['.repeat(100_000)}${']'.repeat(100_000)}`;
    const foreign = JSON.stringify({ format: 'cgw-history/1', seq: 900, version: 'aaaaaaaaaaaa', previous: null, at: new Date().toISOString(), kvIndex: 1, by: 'x', source: 'kv', keys: [['other/secret', '0000000000000000']], changes: [] });
    await consul.kvPut('gateway-runtime/history/__proto__', '{"polluted": true}');
    await consul.kvPut('gateway-runtime/history/constructor', 'x');
    await consul.kvPut('gateway-runtime/history/9999999990', 'x'.repeat(450 * 1024));
    await consul.kvPut('gateway-runtime/history/0000000800', deep);
    await consul.kvPut('gateway-runtime/history/0000000900', foreign);
    // Well formed, but claiming a KV view from the far future: trusted, it would stop every gateway recording.
    await consul.kvPut('gateway-runtime/history/0000000950', foreign.replace('"other/secret"', '"gateway/routes/x"').replace('"seq":900', '"seq":950').replace('"kvIndex":1', `"kvIndex":${10 ** 12}`));

    await consul.kvPut('gateway/routes/after-attack', routeDoc('/after-attack'));
    await served({ '/after-attack/x': 200, '/only-a/x': 200 }, 'the gateways apply a change after the garbage');
    const h = await recorded('the change after the garbage');
    assert.equal(h.entries.length, before.entries.length + 1);
    assert.deepEqual(h.entries[0]?.changes.map((c) => `${c.action} ${c.key}`), ['added gateway/routes/after-attack']);
    assert.deepEqual(
      h.refused.map((r) => r.key).sort(),
      ['gateway-runtime/history/0000000800', 'gateway-runtime/history/0000000900', 'gateway-runtime/history/0000000950', 'gateway-runtime/history/9999999990', 'gateway-runtime/history/__proto__', 'gateway-runtime/history/constructor'].sort(),
    );
    assert.match(h.refused.find((r) => r.key.endsWith('0900'))?.error ?? '', /not a policy, route or canary key/);
    assert.match(h.refused.find((r) => r.key.endsWith('0950'))?.error ?? '', /later than the entry itself/);
    const text = await ok(['history', ...kvFlags()]);
    assert.match(text, /refused entry gateway-runtime\/history\/__proto__: not an entry key/);
    // A rollback across the garbage still works.
    await ok(['rollback', versionA, ...kvFlags()]);
    await served({ '/after-attack/x': 404, '/only-a/x': 200 }, 'the gateways apply the rollback');
    const statusOut = await ok(['status', '--admin', gateways[0]?.adminUrl ?? '']);
    assert.doesNotMatch(statusOut, /configuration history not written/);
  });
});
