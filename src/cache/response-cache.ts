import type { Metrics } from '../core/metrics.ts';
import { ByteLru } from './byte-lru.ts';
import { entryBytes, selectingValues, type CacheEntry } from './entry.ts';
import type { L2Store } from './l2.ts';

/** Entries kept per primary key (one per distinct set of Vary'd values); older ones give way. */
export const MAX_VARIANTS = 8;
/** Requests that may wait on one in-flight miss; more go upstream themselves. */
export const MAX_WAITERS = 1024;

/** The entries stored under one primary key. */
interface VariantGroup {
  readonly routeId: string;
  readonly fingerprint: string;
  readonly entries: readonly CacheEntry[];
  readonly bytes: number;
}

export type FlightOutcome = 'landed' | 'timeout';
type Waiter = (outcome: FlightOutcome) => void;

interface Flight {
  readonly waiters: Waiter[];
  readonly timer: NodeJS.Timeout;
}

/** The purge generations in force (from `<prefix>cache-purge/`), as the snapshot carries them. */
export interface CachePurges {
  readonly all: number;
  readonly routes: Readonly<Record<string, number>>;
  readonly paths: Readonly<Record<string, number>>;
}

export const NO_PURGES: CachePurges = Object.freeze({ all: 0, routes: Object.freeze({}), paths: Object.freeze({}) });


/**
 * The in-memory (L1) response cache of one process: one LRU bounded in bytes (`--cache-max-bytes`)
 * shared by every cached route, the misses in flight that others may wait on (request
 * coalescing), and the Redis (L2) store when the gateway has one. Each worker has its own.
 */
export class ResponseCache {
  private readonly lru: ByteLru<VariantGroup>;
  private readonly flights = new Map<string, Flight>();
  private purges: CachePurges | undefined;

  constructor(
    maxBytes: number,
    private readonly metrics: Metrics,
    readonly l2: L2Store | null,
  ) {
    this.lru = new ByteLru<VariantGroup>(maxBytes, (_key, group) => {
      metrics.cacheEvictions.inc({ reason: 'size' }, group.entries.length);
    });
  }

  get bytes(): number {
    return this.lru.bytes;
  }

  get size(): number {
    return this.lru.size;
  }

  /** The newest entry under the key whose selecting fields match the request's. */
  lookup(key: string, header: (name: string) => string | readonly string[] | undefined): CacheEntry | undefined {
    const group = this.lru.get(key);
    if (group === undefined) return undefined;
    for (let i = group.entries.length - 1; i >= 0; i--) {
      const entry = group.entries[i] as CacheEntry;
      if (selectingValues(entry.varyNames, header) === entry.varyValues) return entry;
    }
    return undefined;
  }

  /** Stores an entry (replacing one with the same selecting values); false when it does not fit. */
  store(key: string, fingerprint: string, entry: CacheEntry): boolean {
    const group = this.lru.peek(key);
    const kept = group === undefined ? [] : group.entries.filter((e) => e.varyValues !== entry.varyValues || e.varyNames.join() !== entry.varyNames.join());
    const entries = [...kept.slice(-(MAX_VARIANTS - 1)), entry];
    let bytes = 0;
    for (const e of entries) bytes += entryBytes(e.fields, e.body, e.varyValues);
    const stored = this.lru.set(key, { routeId: entry.routeId, fingerprint, entries, bytes }, bytes);
    this.publishSize();
    return stored;
  }

  /** Drops the entries under a key (an entry that turned out unusable for everyone). */
  delete(key: string): void {
    if (this.lru.delete(key)) this.publishSize();
  }

  /**
   * Joins the miss in flight for the key, if there is one with room: the waiter is called once,
   * when it lands (stored or not) or at the leader's timeout.
   */
  join(key: string, waiter: Waiter): boolean {
    const flight = this.flights.get(key);
    if (flight === undefined || flight.waiters.length >= MAX_WAITERS) return false;
    flight.waiters.push(waiter);
    return true;
  }

  /** This request's miss is the one others wait for; `land` must follow (the timer bounds the wait). */
  lead(key: string, timeoutMs: number): boolean {
    if (this.flights.has(key)) return false;
    const timer = setTimeout(() => this.release(key, 'timeout'), timeoutMs);
    timer.unref();
    this.flights.set(key, { waiters: [], timer });
    return true;
  }

  land(key: string): void {
    this.release(key, 'landed');
  }

  private release(key: string, outcome: FlightOutcome): void {
    const flight = this.flights.get(key);
    if (flight === undefined) return;
    this.flights.delete(key);
    clearTimeout(flight.timer);
    for (const waiter of flight.waiters) waiter(outcome);
  }

  /**
   * After a new runtime is in force: routes that are gone, or whose cache policy changed, lose
   * their entries (their keys could never be read again anyway); purges newer than the last seen
   * drop theirs. The first call only remembers the generations: nothing was stored before it.
   */
  retain(fingerprints: ReadonlyMap<string, string>, purges: CachePurges): void {
    let dropped = 0;
    const before = this.purges;
    this.purges = purges;
    if (before !== undefined && purges.all !== before.all) {
      this.countPurged(this.lru.deleteWhere(() => true), 'purge');
    } else if (before !== undefined) {
      const routes = changedKeys(before.routes, purges.routes);
      const paths = changedKeys(before.paths, purges.paths);
      if (routes.size > 0 || paths.size > 0) {
        let n = 0;
        this.lru.deleteWhere((_key, group) => {
          const hit = routes.has(group.routeId) || group.entries.some((e) => paths.has(e.path));
          if (hit) n += group.entries.length;
          return hit;
        });
        this.countPurged(n, 'purge');
      }
    }
    this.lru.deleteWhere((_key, group) => {
      const drop = fingerprints.get(group.routeId) !== group.fingerprint;
      if (drop) dropped += group.entries.length;
      return drop;
    });
    this.countPurged(dropped, 'policy');
  }

  private countPurged(n: number, reason: 'purge' | 'policy'): void {
    if (n > 0) this.metrics.cacheEvictions.inc({ reason }, n);
    this.publishSize();
  }

  private publishSize(): void {
    this.metrics.cacheBytes.set(this.lru.bytes);
    this.metrics.cacheEntries.set(this.lru.size);
  }

  close(): void {
    for (const key of [...this.flights.keys()]) this.release(key, 'timeout');
    this.l2?.close();
  }
}

function changedKeys(before: Readonly<Record<string, number>>, now: Readonly<Record<string, number>>): Set<string> {
  const out = new Set<string>();
  for (const k of Object.keys(now)) if (!Object.hasOwn(before, k) || before[k] !== now[k]) out.add(k);
  return out;
}
