import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { RateBoundedWriter, type WriterClock } from '../../src/state/rate-bounded-writer.ts';
import { StateFileKeeper } from '../../src/state/state-file-keeper.ts';
import { decodeStateFile, encodeStateFile } from '../../src/state/state-file.ts';
import { readStateFileBytes, writeFileAtomically } from '../../src/state/state-file-io.ts';
import { buildSnapshot, type Snapshot } from '../../src/state/snapshot.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics, type Metrics } from '../../src/core/metrics.ts';
import { webInstance } from '../helpers/instances.ts';

/** Timers that fire only when the test advances time. */
class FakeClock implements WriterClock {
  private t = 1_000_000;
  private timers: { at: number; run: () => void; id: number }[] = [];
  private nextId = 1;
  now(): number {
    return this.t;
  }
  setTimer(run: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, run, id });
    return id;
  }
  clearTimer(handle: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== handle);
  }
  get pending(): number {
    return this.timers.length;
  }
  /** Moves time on, firing due timers in order and letting their writes settle. */
  async advance(ms: number): Promise<void> {
    const until = this.t + ms;
    for (;;) {
      await settle();
      const due = this.timers.filter((x) => x.at <= until).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.timers = this.timers.filter((x) => x !== due);
      this.t = due.at;
      due.run();
    }
    this.t = until;
    await settle();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise<void>((r) => setImmediate(r));
}

interface Harness {
  clock: FakeClock;
  writer: RateBoundedWriter<string>;
  written: { value: string; at: number }[];
  failed: string[];
  fail: Set<string>;
  noRetry: boolean;
  /** Writes in progress complete only when released. */
  hold: boolean;
  release: () => void;
}

function harness(minIntervalMs = 5_000): Harness {
  const clock = new FakeClock();
  const h: Harness = {
    clock,
    written: [],
    failed: [],
    fail: new Set(),
    noRetry: false,
    hold: false,
    release: () => {},
    writer: undefined as unknown as RateBoundedWriter<string>,
  };
  h.writer = new RateBoundedWriter<string>({
    minIntervalMs,
    clock,
    write: async (value) => {
      if (h.hold) await new Promise<void>((r) => (h.release = r));
      if (h.fail.has(value)) throw new Error(`disk full writing ${value}`);
      h.written.push({ value, at: clock.now() });
    },
    onFailed: (value) => {
      h.failed.push(value);
      return !h.noRetry;
    },
  });
  return h;
}

describe('RateBoundedWriter', () => {
  test('the first value is written at once, later ones at most once per interval', async () => {
    const h = harness();
    h.writer.offer('v1');
    await h.clock.advance(0);
    assert.deepEqual(h.written.map((w) => w.value), ['v1']);
    h.writer.offer('v2');
    await h.clock.advance(4_999);
    assert.deepEqual(h.written.map((w) => w.value), ['v1'], 'not before the interval is over');
    await h.clock.advance(1);
    assert.deepEqual(h.written.map((w) => w.value), ['v1', 'v2']);
    assert.equal(h.written[1]!.at - h.written[0]!.at, 5_000);
  });

  test('a burst ends with its newest value written at the end of the quiet time, the middle ones skipped', async () => {
    const h = harness();
    h.writer.offer('v1');
    await h.clock.advance(0);
    for (let i = 2; i <= 50; i++) {
      h.writer.offer(`v${i}`);
      await h.clock.advance(100);
    }
    await h.clock.advance(5_000);
    assert.equal(h.written[0]?.value, 'v1');
    assert.equal(h.written.at(-1)?.value, 'v50', 'the last value is never lost');
    assert.ok(h.written.length <= 3, `at most one write per 5 s over ~10 s, got ${h.written.map((w) => w.value).join(',')}`);
    for (let i = 1; i < h.written.length; i++) assert.ok(h.written[i]!.at - h.written[i - 1]!.at >= 5_000);
    assert.equal(h.clock.pending, 0, 'nothing left scheduled');
  });

  test('values offered during a slow write replace each other; the newest follows', async () => {
    const h = harness();
    h.hold = true;
    h.writer.offer('v1');
    await h.clock.advance(0);
    h.writer.offer('v2');
    h.writer.offer('v3');
    await h.clock.advance(10_000);
    assert.equal(h.written.length, 0, 'v1 still writing');
    h.hold = false;
    h.release();
    await h.clock.advance(0);
    await h.clock.advance(0);
    assert.deepEqual(h.written.map((w) => w.value), ['v1', 'v3']);
  });

  test('a failed write is retried after the interval, with the newest value by then', async () => {
    const h = harness();
    h.fail.add('v1');
    h.writer.offer('v1');
    await h.clock.advance(0);
    assert.deepEqual(h.failed, ['v1']);
    h.fail.clear();
    await h.clock.advance(5_000);
    assert.deepEqual(h.written.map((w) => w.value), ['v1'], 'retried');
    h.fail.add('v2');
    h.writer.offer('v2');
    await h.clock.advance(5_000);
    h.writer.offer('v3');
    await h.clock.advance(5_000);
    assert.deepEqual(h.written.map((w) => w.value), ['v1', 'v3'], 'v3 replaced the failed v2');
  });

  test('a value the failure handler calls unwritable is dropped, not retried', async () => {
    const h = harness();
    h.noRetry = true;
    h.fail.add('v1');
    h.writer.offer('v1');
    await h.clock.advance(60_000);
    assert.deepEqual(h.failed, ['v1']);
    assert.equal(h.writer.busy, false);
    h.writer.offer('v2');
    await h.clock.advance(0);
    assert.deepEqual(h.written.map((w) => w.value), ['v2']);
  });

  test('flush writes the pending value at once (drain), close takes no more', async () => {
    const h = harness();
    h.writer.offer('v1');
    await h.clock.advance(0);
    h.writer.offer('v2');
    await h.writer.close();
    assert.deepEqual(h.written.map((w) => w.value), ['v1', 'v2']);
    assert.equal(h.written[1]!.at, h.written[0]!.at, 'without waiting for the interval');
    h.writer.offer('v3');
    await h.clock.advance(60_000);
    assert.deepEqual(h.written.map((w) => w.value), ['v1', 'v2']);
    assert.equal(h.clock.pending, 0);
  });
});

function snapshotOf(ports: number[]): Snapshot {
  return buildSnapshot({ catalog: { web: ['urlprefix-/web'] }, health: new Map([['web', ports.map((port) => webInstance({ port }))]]), kv: [] }, { allowWarning: false, kvPrefix: 'gateway/' });
}

async function counter(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  assert.ok(metric);
  const { values } = await metric.get();
  return values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value ?? 0;
}

function keeper(path: string, clock = new FakeClock(), metrics = createMetrics({ defaultMetrics: false }), maxFileBytes?: number): { keeper: StateFileKeeper; clock: FakeClock; metrics: Metrics } {
  const k = new StateFileKeeper({
    ...(maxFileBytes === undefined ? {} : { maxFileBytes }),
    path,
    owner: { kvPrefix: 'gateway/', datacenter: null },
    datacenter: () => 'dc1',
    consulAddress: 'http://127.0.0.1:8500',
    gatewayVersion: '0.0.0-test',
    minIntervalMs: 5_000,
    logger: createLogger('silent'),
    metrics,
    clock,
  });
  return { keeper: k, clock, metrics };
}

describe('StateFileKeeper: the file on disk', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cgw-state-'));
  test.after(() => rmSync(dir, { recursive: true, force: true }));

  test('writes each new version atomically with mode 0600, no temporary files left, and reads it back', async () => {
    const path = join(dir, 'state.json');
    const { keeper: k, clock, metrics } = keeper(path);
    assert.equal(k.load(), undefined, 'absent at first');
    const first = snapshotOf([31001]);
    k.published(first);
    await clock.advance(0);
    await k.close();
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(dir).filter((f) => f.includes('.tmp')), []);
    const decoded = decodeStateFile(readFileSync(path), { kvPrefix: 'gateway/', datacenter: 'dc1' });
    assert.ok(decoded.ok);
    assert.equal(decoded.snapshot.version, first.version);
    assert.equal(await counter(metrics, 'cgw_state_file_writes_total', { outcome: 'written' }), 1);

    const again = keeper(path);
    assert.equal(again.keeper.load()?.version, first.version);
    again.keeper.published(first);
    await again.clock.advance(10_000);
    assert.equal(await counter(again.metrics, 'cgw_state_file_writes_total', { outcome: 'written' }), 0, 'the version the file holds is not written again');
    await again.keeper.close();
  });

  test('a foreign file is refused, never overwritten, and shown', async () => {
    const path = join(dir, 'foreign.json');
    writeFileSync(path, 'root:x:0:0:root:/root:/bin/bash\n');
    const { keeper: k, clock, metrics } = keeper(path);
    assert.equal(k.load(), undefined);
    k.published(snapshotOf([31002]));
    await clock.advance(10_000);
    await k.close();
    assert.equal(readFileSync(path, 'utf8'), 'root:x:0:0:root:/root:/bin/bash\n');
    assert.equal(await counter(metrics, 'cgw_state_file_reads_total', { outcome: 'corrupt' }), 1);
    assert.equal(await counter(metrics, 'cgw_state_file_writes_total', { outcome: 'not_ours' }), 1);
    const view = k.view();
    assert.equal(view.writable, false);
    assert.equal(view.refused?.reason, 'corrupt');
    assert.match(k.problems()[0]?.message ?? '', /refused \(corrupt\): not JSON/);
  });

  test('a file over 64 MiB is refused unread and never overwritten', async () => {
    const path = join(dir, 'huge.json');
    writeFileSync(path, '');
    truncateSync(path, 64 * 1024 * 1024 + 1);
    const { keeper: k, clock, metrics } = keeper(path);
    assert.equal(k.load(), undefined);
    assert.match(k.view().refused?.error ?? '', /the file is 67108865 bytes, more than the 67108864/);
    assert.equal(k.view().writable, false);
    k.published(snapshotOf([31010]));
    await clock.advance(10_000);
    await k.close();
    assert.equal(statSync(path).size, 64 * 1024 * 1024 + 1);
    assert.equal(await counter(metrics, 'cgw_state_file_reads_total', { outcome: 'corrupt' }), 1);
  });

  test('our own damaged file is refused, then replaced by the next snapshot', async () => {
    const path = join(dir, 'damaged.json');
    const source = keeper(path);
    source.keeper.published(snapshotOf([31003]));
    await source.keeper.close();
    writeFileSync(path, readFileSync(path, 'utf8').replace('"port":31003', '"port":31004'));
    const { keeper: k, clock } = keeper(path);
    assert.equal(k.load(), undefined);
    assert.match(k.view().refused?.error ?? '', /checksum mismatch/);
    const next = snapshotOf([31005]);
    k.published(next);
    await clock.advance(0);
    await k.close();
    const decoded = decodeStateFile(readFileSync(path), { kvPrefix: 'gateway/', datacenter: null });
    assert.ok(decoded.ok);
    assert.equal(decoded.snapshot.version, next.version);
    assert.equal(k.view().refused, null, 'the refusal is gone once a good file replaced it');
  });

  test('while the file serves: stale mark, gauge, age; nothing written until a live snapshot', async () => {
    const path = join(dir, 'serving.json');
    const source = keeper(path);
    const old = snapshotOf([31006]);
    source.keeper.published(old);
    await source.keeper.close();
    const { keeper: k, clock, metrics } = keeper(path);
    assert.equal(k.load()?.version, old.version);
    k.serving();
    assert.equal(k.inForce, true);
    assert.equal(k.view().staleSince !== null, true);
    assert.equal(await counter(metrics, 'cgw_state_file_in_force', {}), 1);
    await clock.advance(30_000);
    assert.ok((await counter(metrics, 'cgw_state_file_age_seconds', {})) >= 30);
    k.published(old);
    k.liveInForce();
    assert.equal(await counter(metrics, 'cgw_state_file_in_force', {}), 0);
    assert.equal(await counter(metrics, 'cgw_state_file_age_seconds', {}), 0);
    const live = snapshotOf([31007]);
    k.published(live);
    await clock.advance(0);
    await k.close();
    assert.equal(await counter(metrics, 'cgw_state_file_writes_total', { outcome: 'written' }), 1);
  });

  test('concurrent writers to one path (two gateways, one file): a reader only ever sees a whole file', async () => {
    const path = join(dir, 'shared.json');
    const texts = Array.from({ length: 12 }, (_, i) => encodeStateFile(snapshotOf([32000 + i, 32100 + i]), { gatewayVersion: 't', consulAddress: 'http://127.0.0.1:8500', kvPrefix: 'gateway/', datacenter: null, writtenAt: new Date() }));
    await writeFileAtomically(path, texts[0]!);
    let reading = true;
    let reads = 0;
    const reader = (async () => {
      while (reading) {
        const read = readStateFileBytes(path);
        if (read.kind === 'read') {
          const decoded = decodeStateFile(read.bytes, { kvPrefix: 'gateway/', datacenter: null });
          assert.ok(decoded.ok, decoded.ok ? '' : decoded.error);
          reads++;
        }
        await new Promise<void>((r) => setImmediate(r));
      }
    })();
    await Promise.all(texts.map((text) => writeFileAtomically(path, text)));
    reading = false;
    await reader;
    assert.ok(texts.includes(readFileSync(path, 'utf8')), 'the last rename wins, whole');
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('.shared.json')), [], 'no temporary file left');
    assert.ok(reads >= 1, 'the reader ran');
  });

  test('a FIFO or a directory at the path is unreadable, and reading it does not block', () => {
    assert.equal(readStateFileBytes(dir).kind, 'unreadable');
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const read = readStateFileBytes(fifo);
    assert.equal(read.kind, 'unreadable');
    assert.match(read.kind === 'unreadable' ? read.error : '', /not a regular file/);
  });

  test('a snapshot larger than the bound is not written: the older file stays, the failure shows, no retry', async () => {
    const path = join(dir, 'bounded.json');
    const small = snapshotOf([33001]);
    const size = Buffer.byteLength(encodeStateFile(small, { gatewayVersion: '0.0.0-test', consulAddress: 'http://127.0.0.1:8500', kvPrefix: 'gateway/', datacenter: 'dc1', writtenAt: new Date() }));
    const { keeper: k, clock, metrics } = keeper(path, new FakeClock(), createMetrics({ defaultMetrics: false }), size + 100);
    k.load();
    k.published(small);
    await clock.advance(0);
    await until(async () => (await counter(metrics, 'cgw_state_file_writes_total', { outcome: 'written' })) === 1);
    const before = readFileSync(path, 'utf8');
    k.published(snapshotOf(Array.from({ length: 40 }, (_, i) => 33100 + i)));
    await clock.advance(5_000);
    await until(async () => (await counter(metrics, 'cgw_state_file_writes_total', { outcome: 'failed' })) === 1);
    assert.match(k.view().lastWrite?.error ?? '', /more than the \d+ a state file may have/);
    await clock.advance(60_000);
    assert.equal(await counter(metrics, 'cgw_state_file_writes_total', { outcome: 'failed' }), 1, 'not retried');
    assert.equal(readFileSync(path, 'utf8'), before);
    await k.close();
  });

  test('a write that fails is counted, shown, and retried', async () => {
    const path = join(dir, 'no-such-dir', 'state.json');
    const { keeper: k, clock, metrics } = keeper(path);
    k.load();
    k.published(snapshotOf([31008]));
    await clock.advance(0);
    await until(async () => (await counter(metrics, 'cgw_state_file_writes_total', { outcome: 'failed' })) === 1);
    assert.equal(k.view().lastWrite?.outcome, 'failed');
    assert.match(k.problems()[0]?.message ?? '', /cannot be written: .*ENOENT/);
    await clock.advance(4_999);
    assert.equal(await counter(metrics, 'cgw_state_file_writes_total', { outcome: 'failed' }), 1, 'not retried before the interval');
    await clock.advance(1);
    await until(async () => (await counter(metrics, 'cgw_state_file_writes_total', { outcome: 'failed' })) === 2);
    await k.close();
  });
});

/** Real file-system calls finish outside the fake clock: wait for them (bounded by a generous deadline). */
async function until(condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail('condition not met within 10 s');
    await new Promise<void>((r) => setImmediate(r));
  }
}
