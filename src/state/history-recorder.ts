import { Backoff } from '../core/backoff.ts';
import { describeError } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';
import type { KvEntry, Problem } from '../core/types.ts';
import { buildHistoryEntry, configEntries, configVersion, historyKeyOf, MAX_SEQ, parseHistoryEntry, seqOfHistoryKey, valueHash, type ConfigEntry, type HistoryEntry } from './history-entry.ts';

/**
 * Writes the configuration history: each time the control plane applies a KV view whose
 * configuration keys (history-entry.ts) differ from the last one, an entry for the new version.
 * Every gateway of a fleet runs one, so the scheme must give one entry per change whoever writes:
 *
 * - entries are `<history-prefix><seq>`, created with check-and-set index 0: of two gateways
 *   writing the next seq, the first wins and the second reads the history again;
 * - the newest entry's version equal to ours means someone recorded this change already;
 * - each entry carries Consul's index of the KV prefix at which its writer saw the version, and a
 *   gateway appends only when its own view is newer (a gateway whose watch lags behind never
 *   writes the state the fleet has left as if it were new). A return to an old version (a
 *   rollback) is a new entry with the old version: the history is a sequence of transitions, so
 *   it lists in order and every transition's own changes stay readable.
 *
 * Writes run off the request path, one round at a time, at most one per `minIntervalMs`
 * (changes in between coalesce into the newest); failures are logged, counted, shown as a
 * problem and retried with backoff, and never touch the configuration in force.
 */

/** The KV calls the recorder makes (consul/kv-writer.ts in the gateway, a fake in tests). */
export interface HistoryKv {
  keys(prefix: string): Promise<string[]>;
  get(key: string): Promise<{ value: string | null; modifyIndex: number } | undefined>;
  set(key: string, value: string, cas: number): Promise<boolean>;
  del(key: string, cas: number): Promise<boolean>;
}

export type RecordOutcome = 'written' | 'recorded' | 'behind' | 'failed' | 'pruned';

export interface HistoryRecorderOptions {
  readonly kv: HistoryKv;
  /** `<runtime-prefix>history/`. */
  readonly historyPrefix: string;
  readonly kvPrefix: string;
  readonly gatewayId: string;
  readonly logger: Logger;
  readonly count?: (outcome: RecordOutcome) => void;
  /** Entries kept; older ones are pruned. */
  readonly maxEntries?: number;
  readonly minIntervalMs?: number;
  /**
   * How long a new version waits before it is written: `cgw policy push` and `cgw rollback` write
   * their keys one by one, and the states in between are rarely worth an entry of their own.
   */
  readonly settleMs?: number;
  readonly now?: () => Date;
}

export const DEFAULT_MAX_HISTORY_ENTRIES = 100;
/** Newest entries read to find the newest valid one; garbage beyond this is not searched through. */
const MAX_HEAD_READS = 20;
/** Values remembered between two entries written, for their `before`; beyond it only the newest view's. */
const MAX_REMEMBERED_VALUES = 10_000;
/** How long close() waits for a round in flight. */
const CLOSE_WAIT_MS = 2_000;
/** Rounds of a lost check-and-set before the round is retried later. */
const MAX_ATTEMPTS = 5;

interface Pending {
  readonly entries: readonly ConfigEntry[];
  readonly version: string;
  readonly kvIndex: number;
}

export class HistoryRecorder {
  private lastView: readonly KvEntry[] | undefined;
  private lastVersion: string | undefined;
  private pending: Pending | undefined;
  /** Values seen since the last entry written, by key and hash: the `before` of the next entry. */
  private memory = new Map<string, string>();
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly backoff = new Backoff(1_000, 60_000);
  private lastError: string | undefined;
  private closed = false;
  private readonly maxEntries: number;
  private readonly minIntervalMs: number;
  private readonly settleMs: number;
  private readonly now: () => Date;
  /** Last time a round started, for the rate bound. */
  private roundAt = 0;

  constructor(private readonly options: HistoryRecorderOptions) {
    this.maxEntries = options.maxEntries ?? DEFAULT_MAX_HISTORY_ENTRIES;
    this.minIntervalMs = options.minIntervalMs ?? 1_000;
    this.settleMs = options.settleMs ?? 250;
    this.now = options.now ?? (() => new Date());
  }

  /** The KV view in force and Consul's index of it; cheap when the view or its configuration did not change. */
  observe(view: readonly KvEntry[], kvIndex: number): void {
    if (this.closed || view === this.lastView) return;
    this.lastView = view;
    const entries = configEntries(view, this.options.kvPrefix);
    const version = configVersion(entries);
    // Bounded even when writing fails for days (a read-only token) while the configuration keeps changing.
    if (this.memory.size > MAX_REMEMBERED_VALUES) this.memory = new Map();
    for (const e of entries) this.memory.set(memoKey(e.key, valueHash(e.value)), e.value);
    if (version === this.lastVersion) return;
    this.lastVersion = version;
    this.pending = { entries, version, kvIndex };
    this.schedule(this.settleMs);
  }

  /** Shown in `cgw status` while writing fails. */
  problems(): Problem[] {
    if (this.lastError === undefined) return [];
    return [{ kind: 'kv', subject: this.options.historyPrefix, message: `configuration history not written: ${this.lastError}; retrying (configuration changes are applied regardless)` }];
  }

  /** Stops; a round in flight gets a moment to finish (a write is one request), never the whole shutdown. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
    clearTimeout(timer);
  }

  /** Resolves once nothing is pending or running (tests; it does not return while writes keep failing). */
  async settled(): Promise<void> {
    while (!this.closed && (this.running || this.timer || this.pending)) await new Promise((r) => setTimeout(r, 5));
  }

  private schedule(afterMs: number): void {
    if (this.closed || this.running || this.timer) return;
    const wait = Math.max(afterMs, this.roundAt + this.minIntervalMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.round().then((nextInMs) => {
        this.running = undefined;
        if (nextInMs !== undefined) this.schedule(nextInMs);
      });
    }, Math.max(0, wait));
    this.timer.unref();
  }

  /** One write round; resolves with the delay before the next one, if another is due. Never rejects. */
  private async round(): Promise<number | undefined> {
    const p = this.pending;
    if (!p || this.closed) return undefined;
    this.roundAt = Date.now();
    try {
      const outcome = await this.record(p);
      this.options.count?.(outcome);
      this.lastError = undefined;
      this.backoff.reset();
      if (this.pending === p) this.pending = undefined;
      if (outcome !== 'behind') this.options.logger.debug({ version: p.version, outcome }, 'configuration history');
    } catch (err) {
      this.options.count?.('failed');
      const error = describeError(err);
      const retryInMs = this.backoff.next();
      // Once per distinct error at warn (a token without key:write on the history fails every
      // retry alike); the problem in `cgw status` and the counter say it stays so.
      this.options.logger[error === this.lastError ? 'debug' : 'warn']({ err: error, version: p.version, retryInMs }, 'configuration history not written; retrying');
      this.lastError = error;
      return retryInMs;
    }
    return this.pending ? 0 : undefined;
  }

  private async record(p: Pending): Promise<RecordOutcome> {
    const { kv, historyPrefix } = this.options;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const seqs = (await kv.keys(historyPrefix))
        .map((k) => seqOfHistoryKey(historyPrefix, k))
        .filter((s): s is number => s !== undefined)
        .sort((a, b) => b - a);
      const newest: HistoryEntry[] = [];
      for (const seq of seqs.slice(0, MAX_HEAD_READS)) {
        const entry = await this.read(seq);
        if (entry) {
          newest.push(entry);
          break;
        }
      }
      const head = newest[0];
      if (head?.version === p.version) return 'recorded';
      // Index 0: the watch started over (Consul's index went backwards); wait for a real index.
      if (p.kvIndex === 0 || (head && p.kvIndex <= head.kvIndex)) return 'behind';
      const occupied = new Set(seqs);
      // Without a readable newest entry, above everything (never below entries that exist).
      let seq = (head?.seq ?? seqs[0] ?? 0) + 1;
      while (occupied.has(seq)) seq++;
      if (seq > MAX_SEQ) throw new Error(`no entry number left after ${head?.seq ?? 0} under ${historyPrefix}`);
      const known = await this.earlierValues(head, p.entries, seqs);
      const entry = buildHistoryEntry({
        seq,
        kvPrefix: this.options.kvPrefix,
        at: this.now(),
        kvIndex: p.kvIndex,
        by: this.options.gatewayId,
        previous: head,
        current: p.entries,
        knownValue: (key, hash) => known.get(memoKey(key, hash)),
      });
      if (!(await kv.set(historyKeyOf(historyPrefix, seq), JSON.stringify(entry), 0))) continue;
      this.memory = new Map(p.entries.map((e) => [memoKey(e.key, valueHash(e.value)), e.value]));
      await this.prune(seq, seqs);
      return 'written';
    }
    throw new Error(`other writers took the next entry ${MAX_ATTEMPTS} times in a row`);
  }

  /** The values the previous version had for the keys that change now: from memory, else older entries. */
  private async earlierValues(head: HistoryEntry | undefined, current: readonly ConfigEntry[], seqs: readonly number[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    if (!head) return out;
    const now = new Map(current.map((e) => [e.key, valueHash(e.value)]));
    const wanted = new Set(head.keys.filter(([k, h]) => now.get(k) !== h).map(([k, h]) => memoKey(k, h)));
    for (const w of wanted) {
      const v = this.memory.get(w);
      if (v !== undefined) {
        out.set(w, v);
        wanted.delete(w);
      }
    }
    const take = (e: HistoryEntry): void => {
      for (const c of e.changes) {
        for (const [hash, value] of [[c.afterHash, c.after], [c.beforeHash, c.before]] as const) {
          if (hash === null || value === undefined) continue;
          const k = memoKey(c.key, hash);
          if (wanted.delete(k)) out.set(k, value);
        }
      }
    };
    take(head);
    // A gateway that did not see the previous version (it started since) finds the values in the entries.
    for (const seq of seqs) {
      if (wanted.size === 0) break;
      if (seq >= head.seq) continue;
      const e = await this.read(seq);
      if (e) take(e);
    }
    return out;
  }

  private async read(seq: number): Promise<HistoryEntry | undefined> {
    const key = historyKeyOf(this.options.historyPrefix, seq);
    const stored = await this.options.kv.get(key);
    if (!stored) return undefined;
    const parsed = parseHistoryEntry(this.options.historyPrefix, this.options.kvPrefix, key, stored.value, stored.modifyIndex);
    return parsed.ok ? parsed.entry : undefined;
  }

  /** Keeps the newest `maxEntries` at or below `seq` (anything above is someone else's). */
  private async prune(seq: number, seqs: readonly number[]): Promise<void> {
    const older = [seq, ...seqs.filter((s) => s < seq)].sort((a, b) => b - a).slice(this.maxEntries);
    for (const old of older) {
      const key = historyKeyOf(this.options.historyPrefix, old);
      const stored = await this.options.kv.get(key);
      if (stored && (await this.options.kv.del(key, stored.modifyIndex))) this.options.count?.('pruned');
    }
  }
}

function memoKey(key: string, hash: string): string {
  return `${key}\u0000${hash}`;
}
