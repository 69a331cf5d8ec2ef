/**
 * The configuration history: which keys make a version and its hash, entries as input from
 * outside (hostile ones refused one by one), the rollback plan as a pure function, the recorder
 * that several gateways run against one KV (one entry per change), and `cgw rollback` against an
 * in-memory Consul (validation first, check-and-set losses with exit 3).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CliError } from '../../src/cli/admin-client.ts';
import { historyRows, readHistory, rollback } from '../../src/cli/history.ts';
import { KV_WRITERS } from '../../src/core/kv-layout.ts';
import { createLogger } from '../../src/core/logger.ts';
import type { KvEntry } from '../../src/core/types.ts';
import {
  buildHistoryEntry,
  configEntries,
  configVersion,
  historyKeyOf,
  MAX_KEPT_VALUE_BYTES,
  parseHistoryEntry,
  valueHash,
  type ConfigEntry,
  type HistoryEntry,
} from '../../src/state/history-entry.ts';
import { planRollback } from '../../src/state/history-plan.ts';
import { HistoryRecorder, type HistoryKv } from '../../src/state/history-recorder.ts';
import { MemoryConsul } from '../helpers/memory-consul.ts';

const P = 'gateway/';
const H = 'gateway-runtime/history/';
const T0 = new Date('2026-12-03T10:00:00.000Z');
const route = (path: string): string => `path: ${path}\nupstreams: [http://127.0.0.1:9]\n`;
const policy = (path: string): string => `appliesTo: {route: ${path}}\nauth:\n  methods: [apiKey]\n`;
const weights = (v1: number): string => JSON.stringify({ weights: { v1, v2: 100 - v1 } });

function kvOf(values: Record<string, string>, index = 10): KvEntry[] {
  return Object.entries(values).map(([key, value], i) => ({ key, value, modifyIndex: index + i }));
}
const entriesOf = (values: Record<string, string>, index = 10): ConfigEntry[] => configEntries(kvOf(values, index), P);

/** Entries as a gateway writes them, one per state, chained. */
function chain(states: Record<string, string>[]): HistoryEntry[] {
  const out: HistoryEntry[] = [];
  const seen = new Map<string, string>();
  states.forEach((state, i) => {
    const current = entriesOf(state, 100 * (i + 1));
    out.push(
      buildHistoryEntry({
        seq: i + 1,
        kvPrefix: P,
        at: new Date(T0.getTime() + i * 1000),
        kvIndex: 100 * (i + 1),
        by: 'gw-1',
        previous: out.at(-1),
        current,
        knownValue: (k, h) => seen.get(`${k} ${h}`),
      }),
    );
    for (const e of current) seen.set(`${e.key} ${valueHash(e.value)}`, e.value);
  });
  return out;
}

describe('configuration versions', () => {
  test('only policy, route and canary keys count; order and ModifyIndex do not', () => {
    const kv = kvOf({
      'gateway/policies/a': policy('/a'),
      'gateway/routes/r': route('/r'),
      'gateway/canary/web': weights(90),
      'gateway/canary/web/extra': 'x',
      'gateway/consumers/acme': '{}',
      'gateway/certs/site': 'pem',
      'gateway/rollouts/web': '{}',
      'gateway/policies/': '',
    });
    assert.deepEqual(configEntries(kv, P).map((e) => [e.key, e.kind]), [
      ['gateway/canary/web', 'canary'],
      ['gateway/policies/a', 'policy'],
      ['gateway/routes/r', 'route'],
    ]);
    const a = configVersion(configEntries(kv, P));
    assert.match(a, /^[0-9a-f]{12}$/);
    assert.equal(configVersion(configEntries([...kv].reverse().map((e) => ({ ...e, modifyIndex: e.modifyIndex + 50 })), P)), a);
    const changed = kv.map((e) => (e.key === 'gateway/canary/web' ? { ...e, value: weights(80) } : e));
    assert.notEqual(configVersion(configEntries(changed, P)), a);
    // A consumer or certificate change is not a new version.
    const consumer = kv.map((e) => (e.key === 'gateway/consumers/acme' ? { ...e, value: '{"x":1}' } : e));
    assert.equal(configVersion(configEntries(consumer, P)), a);
  });

  test('a key with no value counts as the empty string', () => {
    assert.equal(configVersion(configEntries([{ key: 'gateway/routes/r', value: null, modifyIndex: 1 }], P)), configVersion(entriesOf({ 'gateway/routes/r': '' })));
  });
});

describe('history entries', () => {
  test('changes say added, changed and removed, with the values before and after', () => {
    const [first, second] = chain([{ 'gateway/routes/a': route('/a'), 'gateway/canary/web': weights(90) }, { 'gateway/routes/b': route('/b'), 'gateway/canary/web': weights(50) }]);
    assert.equal(first?.previous, null);
    assert.deepEqual(first?.changes.map((c) => [c.key, c.action]), [['gateway/canary/web', 'added'], ['gateway/routes/a', 'added']]);
    assert.equal(second?.previous, first?.version);
    assert.deepEqual(second?.changes.map((c) => [c.key, c.action, c.before, c.after]), [
      ['gateway/canary/web', 'changed', weights(90), weights(50)],
      ['gateway/routes/a', 'removed', route('/a'), undefined],
      ['gateway/routes/b', 'added', undefined, route('/b')],
    ]);
  });

  test('the source names the cgw commands that wrote the new values (Consul flags), kv for any other writer', () => {
    const entry = (kv: KvEntry[], previous?: HistoryEntry) =>
      buildHistoryEntry({ seq: 1, kvPrefix: P, at: T0, kvIndex: 1, by: 'gw', previous, current: configEntries(kv, P), knownValue: () => undefined });
    const pushed = entry([
      { key: 'gateway/routes/a', value: route('/a'), modifyIndex: 1, flags: KV_WRITERS['cgw policy push'] },
      { key: 'gateway/canary/web', value: weights(90), modifyIndex: 2, flags: KV_WRITERS['cgw canary'] },
    ]);
    assert.equal(pushed.source, 'cgw canary, cgw policy push');
    assert.equal(pushed.changes.find((c) => c.key === 'gateway/routes/a')?.writer, 'cgw policy push');
    assert.equal(entry([{ key: 'gateway/routes/a', value: route('/a'), modifyIndex: 1, flags: 12345 }]).source, 'kv');
    assert.equal(entry([], pushed).source, 'kv', 'removals alone');
  });

  test('a value too large to keep is listed by hash only', () => {
    const big = `description: "${'x'.repeat(MAX_KEPT_VALUE_BYTES)}"\n${route('/a')}`;
    const [entry] = chain([{ 'gateway/routes/a': big }]);
    const change = entry?.changes[0];
    assert.equal(change?.afterHash, valueHash(big));
    assert.equal(change?.after, undefined);
  });

  test('a written entry reads back as it was written', () => {
    const [entry] = chain([{ 'gateway/routes/a': route('/a') }]);
    const parsed = parseHistoryEntry(H, P, historyKeyOf(H, 1), JSON.stringify(entry));
    assert.deepEqual(parsed, { ok: true, entry });
  });

  const [good] = chain([{ 'gateway/routes/a': route('/a') }]);
  const goodText = JSON.stringify(good);
  const hostile: { name: string; key: string; text: string | null; error: RegExp }[] = [
    { name: '__proto__ as the key', key: `${H}__proto__`, text: goodText, error: /not an entry key/ },
    { name: 'constructor as the key', key: `${H}constructor`, text: goodText, error: /not an entry key/ },
    { name: 'empty value', key: historyKeyOf(H, 1), text: null, error: /empty/ },
    { name: 'garbage', key: historyKeyOf(H, 1), text: '\u0000\u0001not json', error: /not JSON/ },
    { name: 'huge', key: historyKeyOf(H, 1), text: `"${'x'.repeat(600 * 1024)}"`, error: /larger than/ },
    { name: 'deeply nested', key: historyKeyOf(H, 1), text: `${'['.repeat(10_000)}${']'.repeat(10_000)}`, error: /deeper/ },
    { name: '__proto__ property', key: historyKeyOf(H, 1), text: goodText.replace('{', '{"__proto__":{"polluted":true},'), error: /__proto__|Unrecognized/i },
    { name: 'seq differs from its key', key: historyKeyOf(H, 2), text: goodText, error: /does not match its key/ },
    { name: 'a key outside the prefix', key: historyKeyOf(H, 1), text: goodText.replaceAll('gateway/routes/a', 'other/routes/a'), error: /not a policy, route or canary key/ },
    { name: 'a consumer key', key: historyKeyOf(H, 1), text: goodText.replaceAll('gateway/routes/a', 'gateway/consumers/acme'), error: /not a policy, route or canary key/ },
    { name: 'a kept value that does not match its hash', key: historyKeyOf(H, 1), text: goodText.replace('/a\\n', '/evil\\n'), error: /does not match its hash/ },
    { name: 'wrong format', key: historyKeyOf(H, 1), text: goodText.replace('cgw-history/1', 'cgw-history/9'), error: /format/ },
    { name: 'an array', key: historyKeyOf(H, 1), text: '[]', error: /expected object/i },
  ];
  for (const h of hostile) {
    test(`refused: ${h.name}`, () => {
      const parsed = parseHistoryEntry(H, P, h.key, h.text);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.match(parsed.error, h.error);
      assert.equal(({} as Record<string, unknown>).polluted, undefined);
    });
  }
});

describe('the rollback plan', () => {
  const A = { 'gateway/policies/auth': policy('/a'), 'gateway/routes/a': route('/a') };
  const B = { 'gateway/policies/auth': policy('/b'), 'gateway/routes/b': route('/b') };
  const C = { ...B, 'gateway/canary/web': weights(90) };
  const D = { ...C, 'gateway/routes/direct': route('/direct') };

  const cases: { name: string; states: Record<string, string>[]; target: (e: HistoryEntry[]) => string; now?: Record<string, string>; steps?: [string, string][]; error?: RegExp }[] = [
    {
      name: 'back over a change, an addition and a removal',
      states: [A, B, C, D],
      target: (e) => e[0]?.version ?? '',
      steps: [
        ['update', 'gateway/policies/auth'],
        ['create', 'gateway/routes/a'],
        ['delete', 'gateway/canary/web'],
        ['delete', 'gateway/routes/b'],
        ['delete', 'gateway/routes/direct'],
      ],
    },
    { name: 'one step back removes only what came after', states: [A, B, C, D], target: (e) => e[2]?.version ?? '', steps: [['delete', 'gateway/routes/direct']] },
    { name: 'the version in KV now: nothing to do', states: [A, B], target: (e) => e[1]?.version ?? '', steps: [] },
    { name: 'a unique prefix of the version', states: [A, B], target: (e) => (e[0]?.version ?? '').slice(0, 6), steps: [['update', 'gateway/policies/auth'], ['create', 'gateway/routes/a'], ['delete', 'gateway/routes/b']] },
    { name: 'a version seen twice (after an earlier rollback): the newest occurrence', states: [A, B, A, C], target: (e) => e[0]?.version ?? '', steps: [['update', 'gateway/policies/auth'], ['create', 'gateway/routes/a'], ['delete', 'gateway/canary/web'], ['delete', 'gateway/routes/b']] },
    { name: 'an unknown version', states: [A, B], target: () => 'abcdef123456', error: /not in the history/ },
    { name: 'not a version at all', states: [A], target: () => '../../etc', error: /not a version/ },
    {
      name: 'KV changed since the last entry (someone wrote it meanwhile): the plan starts from KV now',
      states: [A, B],
      now: { ...B, 'gateway/routes/new': route('/new') },
      target: (e) => e[1]?.version ?? '',
      steps: [['delete', 'gateway/routes/new']],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const entries = chain(c.states);
      const current = entriesOf(c.now ?? (c.states.at(-1) as Record<string, string>), 1000);
      const result = planRollback(entries, c.target(entries), current);
      if (c.error) {
        assert.equal(result.ok, false);
        if (!result.ok) assert.match(result.error, c.error);
        return;
      }
      assert.ok(result.ok, result.ok ? '' : result.error);
      assert.deepEqual(result.plan.steps.map((s) => [s.action, s.key]), c.steps);
      // What the plan writes is exactly the target's configuration.
      const after = new Map(current.map((e) => [e.key, e.value]));
      for (const s of result.plan.steps) s.action === 'delete' ? after.delete(s.key) : after.set(s.key, s.value);
      assert.equal(configVersion([...after].map(([key, value]) => ({ key, value }))), result.plan.target.version);
      for (const s of result.plan.steps) if (s.action !== 'create') assert.equal(s.cas, current.find((e) => e.key === s.key)?.modifyIndex);
    });
  }

  test('pruned history: a value recorded only in pruned entries cannot be restored', () => {
    const entries = chain([A, B, C]);
    // Entry 2 (B) kept, entry 1 pruned; B→C does not touch routes/b, so its value is only in entry 2.
    const kept = entries.slice(1);
    assert.equal(planRollback(kept, entries[0]?.version ?? '', entriesOf(C)).ok, false);
    const toB = planRollback(kept, entries[1]?.version ?? '', entriesOf(C));
    assert.ok(toB.ok);
    // Losing entry 2's kept values too: routes/b's value is nowhere.
    const stripped = kept.map((e) => ({ ...e, changes: e.changes.map(({ before: _b, after: _a, ...c }) => c) }));
    const result = planRollback(stripped, entries[1]?.version ?? '', entriesOf({ 'gateway/policies/auth': policy('/b') }));
    assert.equal(result.ok, false);
    if (!result.ok) assert.match(result.error, /gateway\/routes\/b/);
  });

  test('documents named __proto__ and constructor are plain keys', () => {
    const X = { 'gateway/routes/__proto__': route('/p'), 'gateway/canary/constructor': weights(90) };
    const entries = chain([X, {}]);
    const result = planRollback(entries, entries[0]?.version ?? '', []);
    assert.ok(result.ok);
    assert.deepEqual(result.plan.steps.map((s) => [s.action, s.key]), [['create', 'gateway/canary/constructor'], ['create', 'gateway/routes/__proto__']]);
    const parsed = parseHistoryEntry(H, P, historyKeyOf(H, 2), JSON.stringify(entries[1]));
    assert.ok(parsed.ok);
    assert.equal(({} as Record<string, unknown>).p, undefined);
  });

  test('two versions starting alike need more digits', () => {
    const entries = chain([A, B]).map((e, i) => ({ ...e, version: `abcd${i}0000000` }));
    const result = planRollback(entries, 'abcd', entriesOf(B));
    assert.equal(result.ok, false);
    if (!result.ok) assert.match(result.error, /more digits/);
  });
});

// ---------------------------------------------------------------------------------------------
// the recorder

function historyKvOf(c: MemoryConsul): HistoryKv {
  return { keys: async (p) => (await c.list(p)).map((i) => i.key), get: (k) => c.get(k), set: (k, v, cas) => c.set(k, v, cas), del: (k, cas) => c.del(k, cas) };
}

function recorder(c: MemoryConsul, id: string, extra: Partial<ConstructorParameters<typeof HistoryRecorder>[0]> = {}): HistoryRecorder {
  return new HistoryRecorder({ kv: historyKvOf(c), historyPrefix: H, kvPrefix: P, gatewayId: id, logger: createLogger('silent'), minIntervalMs: 0, settleMs: 0, now: () => T0, ...extra });
}

async function entriesIn(c: MemoryConsul): Promise<HistoryEntry[]> {
  return (await c.list(H))
    .map((i) => parseHistoryEntry(H, P, i.key, i.value))
    .flatMap((p) => (p.ok ? [p.entry] : []))
    .sort((a, b) => a.seq - b.seq);
}

describe('the history recorder', () => {
  test('two gateways seeing the same changes write one entry per change', async () => {
    const c = new MemoryConsul();
    const [one, two] = [recorder(c, 'gw-1'), recorder(c, 'gw-2')];
    const v1 = kvOf({ 'gateway/routes/a': route('/a') }, 10);
    const v2 = kvOf({ 'gateway/routes/a': route('/a'), 'gateway/canary/web': weights(90) }, 20);
    for (const [view, index] of [[v1, 10], [v2, 20]] as const) {
      one.observe(view, index);
      two.observe(view, index);
      await Promise.all([one.settled(), two.settled()]);
    }
    const entries = await entriesIn(c);
    assert.deepEqual(entries.map((e) => [e.seq, e.version]), [
      [1, configVersion(configEntries(v1, P))],
      [2, configVersion(configEntries(v2, P))],
    ]);
    assert.equal(entries[1]?.previous, entries[0]?.version);
  });

  test('a gateway whose view lags behind the history writes nothing', async () => {
    const c = new MemoryConsul();
    const fast = recorder(c, 'fast');
    const slow = recorder(c, 'slow');
    fast.observe(kvOf({ 'gateway/routes/a': route('/a') }), 10);
    await fast.settled();
    fast.observe(kvOf({ 'gateway/routes/b': route('/b') }), 30);
    await fast.settled();
    // The slow one still sees the first state, at an older index.
    slow.observe(kvOf({ 'gateway/routes/a': route('/a') }), 10);
    slow.observe(kvOf({ 'gateway/routes/c': route('/c') }), 20);
    await slow.settled();
    assert.equal((await entriesIn(c)).length, 2);
  });

  test('a return to an old version is a new entry; the history is bounded', async () => {
    const c = new MemoryConsul();
    const r = recorder(c, 'gw', { maxEntries: 3 });
    const states = [route('/a'), route('/b'), route('/a'), route('/c'), route('/d')];
    for (const [i, text] of states.entries()) {
      r.observe(kvOf({ 'gateway/routes/r': text }, 10 * (i + 1)), 10 * (i + 1));
      await r.settled();
    }
    const entries = await entriesIn(c);
    assert.deepEqual(entries.map((e) => e.seq), [3, 4, 5]);
    assert.equal(entries[0]?.version, configVersion(entriesOf({ 'gateway/routes/r': route('/a') })));
    assert.equal(entries[0]?.changes[0]?.before, route('/b'));
  });

  test('hostile entries in the history do not stop it', async () => {
    const c = new MemoryConsul();
    c.put(`${H}__proto__`, '{"polluted": true}');
    c.put(historyKeyOf(H, 1), 'garbage');
    c.put(historyKeyOf(H, 7), `${'['.repeat(5000)}`);
    // Well formed, but claiming a view from the far future: it would make every gateway "behind" forever.
    const [forged] = chain([{ 'gateway/routes/x': route('/x') }]);
    c.put(historyKeyOf(H, 50), JSON.stringify({ ...forged, seq: 50, kvIndex: 10 ** 12 }));
    const r = recorder(c, 'gw');
    r.observe(kvOf({ 'gateway/routes/a': route('/a') }), 10);
    await r.settled();
    assert.deepEqual(r.problems(), []);
    const entries = await entriesIn(c);
    assert.equal(entries.length, 2, 'the parser without ModifyIndex reads the forged one too');
    const read = await readHistory(c, { kvPrefix: P });
    assert.deepEqual(read.entries.map((e) => [e.seq, e.previous]), [[51, null]], 'written above every key that exists');
    assert.deepEqual(read.refused.map((x) => x.key).sort(), [historyKeyOf(H, 1), historyKeyOf(H, 7), historyKeyOf(H, 50), `${H}__proto__`].sort());
    assert.match(read.refused.find((x) => x.key === historyKeyOf(H, 50))?.error ?? '', /later than the entry itself/);
  });

  test('a failing Consul shows as a problem and the round is retried', async () => {
    const c = new MemoryConsul();
    const kv = historyKvOf(c);
    let down = true;
    const flaky: HistoryKv = { ...kv, keys: async (p) => (down ? Promise.reject(new Error('connection refused')) : kv.keys(p)) };
    const r = new HistoryRecorder({ kv: flaky, historyPrefix: H, kvPrefix: P, gatewayId: 'gw', logger: createLogger('silent'), minIntervalMs: 0, settleMs: 0 });
    r.observe(kvOf({ 'gateway/routes/a': route('/a') }), 10);
    const deadline = Date.now() + 10_000;
    while (r.problems().length === 0 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 5));
    assert.match(r.problems()[0]?.message ?? '', /connection refused/);
    down = false;
    while ((await entriesIn(c)).length === 0 && Date.now() < deadline + 60_000) await new Promise((res) => setTimeout(res, 20));
    assert.equal((await entriesIn(c)).length, 1);
    assert.deepEqual(r.problems(), []);
    await r.close();
  });
});

// ---------------------------------------------------------------------------------------------
// cgw history / cgw rollback

async function recorded(states: Record<string, string>[]): Promise<{ c: MemoryConsul; versions: string[] }> {
  const c = new MemoryConsul();
  const r = recorder(c, 'gw');
  const versions: string[] = [];
  let previous: Record<string, string> = {};
  for (const state of states) {
    for (const key of Object.keys(previous)) if (!(key in state)) c.items.delete(key);
    for (const [key, value] of Object.entries(state)) if (c.items.get(key)?.value !== value) c.put(key, value);
    previous = state;
    r.observe([...c.items.values()].map((i) => ({ ...i })), c.index);
    await r.settled();
    versions.push(configVersion(entriesOf(state)));
  }
  return { c, versions };
}

const failsWith = (code: number, message: RegExp) => (err: unknown) => {
  assert.ok(err instanceof CliError, String(err));
  assert.equal(err.exitCode, code, err.message);
  assert.match(err.message, message);
  return true;
};

describe('cgw history and cgw rollback', () => {
  const A = { 'gateway/routes/a': route('/a'), 'gateway/policies/auth': policy('/a') };
  const B = { 'gateway/routes/b': route('/b'), 'gateway/policies/auth': policy('/b') };

  test('history lists newest first and marks the version in KV now', async () => {
    const { c, versions } = await recorded([A, B]);
    const rows = historyRows(await readHistory(c, { kvPrefix: 'gateway' }));
    assert.deepEqual(rows.map((r) => [r.version, r.inForce]), [[versions[1], true], [versions[0], false]]);
  });

  test('rollback restores the older version, dry run first', async () => {
    const { c, versions } = await recorded([A, B]);
    const dry = await rollback(c, versions[0] ?? '', { kvPrefix: P, dryRun: true });
    assert.equal(dry.steps.length, 3);
    assert.equal(c.items.get('gateway/routes/a'), undefined);
    const done = await rollback(c, versions[0] ?? '', { kvPrefix: P });
    assert.deepEqual(done.steps.map((s) => s.action), ['update', 'create', 'delete']);
    assert.equal(c.items.get('gateway/routes/a')?.value, route('/a'));
    assert.equal(c.items.get('gateway/routes/a')?.flags, KV_WRITERS['cgw rollback'], 'marked as written by cgw rollback');
    assert.equal(c.items.get('gateway/routes/b'), undefined);
    assert.equal(configVersion(entriesOf(Object.fromEntries([...c.items.values()].filter((i) => i.key.startsWith(P)).map((i) => [i.key, i.value ?? ''])))), versions[0]);
  });

  test('a lost check-and-set stops the rollback with exit 3 and says what was written', async () => {
    const { c, versions } = await recorded([A, B]);
    let writes = 0;
    c.beforeWrite = () => {
      // Someone edits routes/b between the plan and its delete.
      if (++writes === 3) c.put('gateway/routes/b', route('/b2'));
    };
    await assert.rejects(rollback(c, versions[0] ?? '', { kvPrefix: P }), failsWith(3, /gateway\/routes\/b was changed by someone else.*Already written: update gateway\/policies\/auth, create gateway\/routes\/a/));
    assert.equal(c.items.get('gateway/routes/b')?.value, route('/b2'));
  });

  test('a value that no longer validates is refused with exit 2 before anything is written', async () => {
    const { c, versions } = await recorded([{ 'gateway/canary/web': JSON.stringify({ weights: { v1: 60, v2: 40 } }) }, { 'gateway/canary/web': weights(90) }]);
    // The first version's weights, as if the schema had since moved on: tamper with nothing,
    // but write a version whose value never validated (another tool wrote it).
    const { c: c2, versions: v2 } = await recorded([{ 'gateway/routes/bad': 'upstreams: 12\n' }, { 'gateway/routes/bad': route('/ok') }]);
    await assert.rejects(rollback(c2, v2[0] ?? '', { kvPrefix: P }), failsWith(2, /gateway\/routes\/bad: .*nothing was written/));
    assert.deepEqual(c2.writes.filter((w) => !w.startsWith(H)), []);
    // A valid older version goes through.
    await rollback(c, versions[0] ?? '', { kvPrefix: P });
    assert.deepEqual(JSON.parse(c.items.get('gateway/canary/web')?.value ?? ''), { weights: { v1: 60, v2: 40 } });
  });

  test('unknown and malformed versions are clear errors', async () => {
    const { c } = await recorded([A]);
    await assert.rejects(rollback(c, 'ffffffffffff', { kvPrefix: P }), failsWith(1, /not in the history/));
    await assert.rejects(rollback(c, '__proto__', { kvPrefix: P }), failsWith(2, /not a version/));
  });
});
