import { Backoff } from '../core/backoff.ts';
import type { CatalogView, ServiceInstance } from '../core/types.ts';
import type { BlockingQuery, WatchHandle } from './blocking-query.ts';
import { ConsulRefusedError, type ConsulClient } from './client.ts';
import type { RefusalGate } from './refusal-gate.ts';
import { healthServiceSchema, healthStateCheckSchema, healthStateSchema, type HealthStateCheck } from './schemas.ts';

/**
 * Health for more routed services than the connection budget allows one blocking query each.
 *
 * One blocking query on `/v1/health/state/any` wakes on any check change in the datacenter; its
 * checks are fingerprinted per service (service checks) and per node (serfHealth, maintenance), and
 * only services whose fingerprint moved are re-read, a few at a time. Tag changes arrive through
 * the catalog watch (`setServices`). So one changed service costs two requests, whatever the
 * number of services, instead of fabio's or Traefik's re-read of everything.
 *
 * That answer holds every check in the datacenter (4 MB at 5,000 services), and Consul alone
 * takes tens of milliseconds to write it (a filter is no cheaper: Consul still reads every check).
 * Two more blocking queries ask for the critical and the warning checks, which Consul reads from
 * its index by status: under a millisecond and a small answer while the fleet is healthy. They
 * answer first, so a check going critical or back to passing is acted on without waiting for the
 * big answer. Registrations and deregistrations show only in the big one.
 *
 * What checks cannot show (an instance re-registered on a new port with identical checks, or an
 * instance without any service check) is caught by the periodic resync.
 */
export interface BulkHealthOptions {
  readonly client: ConsulClient;
  readonly waitMs: number;
  readonly resyncIntervalMs: number;
  readonly signal: AbortSignal;
  readonly makeQuery: <T>(
    name: string,
    path: string,
    query: Record<string, string>,
    parse: (body: unknown) => T,
    signal: AbortSignal,
    cadence?: { consumerCompares?: boolean; rawText?: boolean },
  ) => BlockingQuery<T>;
  readonly current: (service: string) => readonly ServiceInstance[] | undefined;
  readonly onHealth: (service: string, instances: readonly ServiceInstance[]) => void;
  readonly onFetchError: (service: string, error: unknown) => void;
  /** Admits fetches with the watches' first reads, and paces them while Consul refuses connections. */
  readonly gate?: RefusalGate;
  /**
   * Re-reads in flight at most: the reserved three plus the connections per-service watches would
   * hold, which bulk mode leaves free (the gate still admits at most 8 reads that cannot block at
   * once). Reading 5,000 services at start three at a time took most of the time to ready.
   */
  readonly maxFetches?: number;
}

export interface BulkStatus {
  readonly services: number;
  readonly pendingFetches: number;
  readonly fetches: number;
  readonly fetchErrors: number;
  readonly lastResyncAt: number | null;
}

/** With the catalog, KV and the three health queries: the eight connections the supervisor reserves. */
export const BULK_FETCH_CONCURRENCY = 3;
const FETCH_TIMEOUT_MS = 15_000;

export class BulkHealthSync {
  private readonly stop = new AbortController();
  private readonly signal: AbortSignal;
  private readonly stateQuery: BlockingQuery<CheckList>;
  private readonly failingQueries: readonly BlockingQuery<CheckList>[];
  private services = new Set<string>();
  private tags = new Map<string, string>();
  /** The checks of the last answer, each as its JSON text. */
  private checks: ReadonlySet<string> = new Set();
  private readonly dirty = new Set<string>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private readonly retryBackoff = new Map<string, Backoff>();
  private activeFetches = 0;
  private fetches = 0;
  private fetchErrors = 0;
  private lastResyncAt: number | null = null;
  private baselineSet = false;
  private resyncTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: BulkHealthOptions) {
    this.signal = AbortSignal.any([this.stop.signal, options.signal]);
    // Every check in the datacenter (10,000 at 5,000 services): compared here by ModifyIndex, not
    // hashed as a whole by the loop.
    this.stateQuery = options.makeQuery('health-state', '/v1/health/state/any', {}, splitChecks, this.signal, { consumerCompares: true, rawText: true });
    this.failingQueries = (['critical', 'warning'] as const).map((status) =>
      options.makeQuery(`health-${status}`, `/v1/health/state/${status}`, {}, splitChecks, this.signal, { consumerCompares: true, rawText: true }),
    );
  }

  start(): void {
    void this.watchChecks();
    for (const query of this.failingQueries) void this.watchFailing(query);
    this.resyncTimer = setInterval(() => this.resync(), this.options.resyncIntervalMs);
    this.resyncTimer.unref();
  }

  watches(): WatchHandle[] {
    return [this.stateQuery, ...this.failingQueries];
  }

  setServices(routed: readonly string[], catalog: CatalogView): void {
    const next = new Set(routed);
    for (const name of next) {
      const tags = (catalog[name] ?? []).join('\u0000');
      if (!this.services.has(name) || this.tags.get(name) !== tags) this.dirty.add(name);
      this.tags.set(name, tags);
    }
    for (const name of this.services) {
      if (!next.has(name)) {
        this.tags.delete(name);
        this.dirty.delete(name);
        this.options.gate?.forget(fetchKey(name));
        clearTimeout(this.retryTimers.get(name));
        this.retryTimers.delete(name);
      }
    }
    this.services = next;
    this.pump();
  }

  status(): BulkStatus {
    return {
      services: this.services.size,
      pendingFetches: this.dirty.size,
      fetches: this.fetches,
      fetchErrors: this.fetchErrors,
      lastResyncAt: this.lastResyncAt,
    };
  }

  close(): void {
    this.stop.abort();
    for (const name of this.services) this.options.gate?.forget(fetchKey(name));
    clearInterval(this.resyncTimer);
    for (const t of this.retryTimers.values()) clearTimeout(t);
    this.retryTimers.clear();
  }

  /**
   * Each answer is compared with the one before, check by check, as text: a check whose JSON is
   * not in the last answer (new, or its status, ModifyIndex or output moved) or one of the last
   * answer that is gone marks its service dirty (or, for a node check such as serfHealth or
   * maintenance, every service with an instance on that node). Only those checks are parsed: at
   * thousands of services the answer holds every check in the datacenter (megabytes), and
   * parsing it whole on every change cost more than all the rest of the change together.
   */
  private async watchChecks(): Promise<void> {
    for await (const { value } of this.stateQuery) {
      const previous = this.checks;
      const next = new Set(value);
      this.checks = next;
      if (!this.baselineSet) {
        // The first read is the baseline: every service is read once anyway (marked by
        // setServices), and reads only start now, so no change can fall between the two.
        this.baselineSet = true;
        this.dirty.clear();
        for (const name of this.services) this.dirty.add(name);
        this.pump();
        continue;
      }
      this.markChanged(previous, next);
    }
  }

  /** The fast lane: the checks in one failing status, a small answer while the fleet is healthy. */
  private async watchFailing(query: BlockingQuery<CheckList>): Promise<void> {
    let previous: ReadonlySet<string> | undefined;
    for await (const { value } of query) {
      const next = new Set(value);
      if (previous && this.baselineSet) this.markChanged(previous, next);
      previous = next;
    }
  }

  /**
   * Compares two answers check by check, as text: a check whose JSON is not in the other answer
   * (new, gone, or its status, ModifyIndex or output moved) marks its service dirty (or, for a
   * node check such as serfHealth or maintenance, every service with an instance on that node).
   * Only those checks are parsed: at thousands of services the answer holds every check in the
   * datacenter (megabytes), and parsing it whole on every change cost more than all the rest of
   * the change together.
   */
  private markChanged(previous: ReadonlySet<string>, next: ReadonlySet<string>): void {
    const changedNodes = new Set<string>();
    const mark = (text: string): void => {
      const c = readCheck(text);
      if (c.ServiceName) this.dirty.add(c.ServiceName);
      else changedNodes.add(c.Node);
    };
    for (const text of next) if (!previous.has(text)) mark(text);
    for (const text of previous) if (!next.has(text)) mark(text);
    if (changedNodes.size > 0) {
      for (const name of this.services) {
        if (this.options.current(name)?.some((i) => changedNodes.has(i.node))) this.dirty.add(name);
      }
    }
    // Dirty services that are not routed are no reason to fetch.
    for (const name of this.dirty) if (!this.services.has(name)) this.dirty.delete(name);
    this.pump();
  }

  private resync(): void {
    this.lastResyncAt = Date.now();
    for (const name of this.services) this.dirty.add(name);
    this.pump();
  }

  private pump(): void {
    if (!this.baselineSet) return;
    while (this.activeFetches < (this.options.maxFetches ?? BULK_FETCH_CONCURRENCY) && this.dirty.size > 0 && !this.signal.aborted) {
      const name = this.dirty.values().next().value as string;
      this.dirty.delete(name);
      this.activeFetches += 1;
      void this.fetch(name).finally(() => {
        this.activeFetches -= 1;
        this.pump();
      });
    }
  }

  private async fetch(name: string): Promise<void> {
    const { gate } = this.options;
    const admission = await gate?.admit(this.signal);
    try {
      if (this.signal.aborted) return;
      this.fetches += 1;
      const res = await this.options.client.get(
        `/v1/health/service/${encodeURIComponent(name)}`,
        {},
        { signal: this.signal, timeoutMs: FETCH_TIMEOUT_MS },
      );
      gate?.succeeded(fetchKey(name));
      admission?.done('ok');
      const instances = healthServiceSchema.parse(res.body);
      this.retryBackoff.delete(name);
      if (this.services.has(name)) this.options.onHealth(name, instances);
    } catch (err) {
      const stale = this.signal.aborted || !this.services.has(name);
      if (err instanceof ConsulRefusedError) {
        gate?.refused(fetchKey(name));
        admission?.done('refused');
        if (stale) gate?.forget(fetchKey(name));
      }
      if (stale) return;
      this.fetchErrors += 1;
      this.options.onFetchError(name, err);
      if (err instanceof ConsulRefusedError && gate) {
        // Queued again at once: the gate decides when Consul is asked again.
        this.dirty.add(name);
        return;
      }
      const backoff = this.retryBackoff.get(name) ?? new Backoff(250, 30_000);
      this.retryBackoff.set(name, backoff);
      clearTimeout(this.retryTimers.get(name));
      const timer = setTimeout(() => {
        this.retryTimers.delete(name);
        if (!this.services.has(name)) return;
        this.dirty.add(name);
        this.pump();
      }, backoff.next());
      timer.unref();
      this.retryTimers.set(name, timer);
    } finally {
      admission?.done('error');
    }
  }
}

/** The gate's name for the fetches of one service (watches are `health:<name>`). */
function fetchKey(name: string): string {
  return `fetch:${name}`;
}

/** The checks of one `/v1/health/state/any` answer, each as the text of its JSON object. */
type CheckList = readonly string[];

const OBJECT_START = '{"Node":';

/**
 * Splits Consul's answer into the text of each check without parsing it. Consul writes a check
 * as an object whose first field is `Node`; the sequence `{"Node":` cannot occur inside a JSON
 * string (its quote would be escaped there), so it marks exactly the starts of the objects.
 * Every object is validated when it is read (readCheck); an answer of another shape is parsed and
 * validated whole and re-serialised, so the comparison still works, only slower.
 */
export function splitChecks(text: unknown): CheckList {
  if (text === null) return [];
  if (typeof text !== 'string') throw new Error('health state answer is not text');
  const body = text.trimEnd();
  if (body === '[]') return [];
  if (!body.startsWith(`[${OBJECT_START}`) || !body.endsWith('}]')) {
    return healthStateSchema.parse(JSON.parse(body)).map((c) => JSON.stringify(c));
  }
  const out: string[] = [];
  let start = 1;
  for (;;) {
    const next = body.indexOf(`},${OBJECT_START}`, start);
    if (next === -1) {
      out.push(body.slice(start, body.length - 1));
      return out;
    }
    out.push(body.slice(start, next + 1));
    start = next + 2;
  }
}

/** One check's text, parsed and validated (only for the checks that changed). */
function readCheck(text: string): HealthStateCheck {
  return healthStateCheckSchema.parse(JSON.parse(text));
}
