import { Backoff } from '../core/backoff.ts';
import type { CatalogView, ServiceInstance } from '../core/types.ts';
import type { BlockingQuery, WatchHandle } from './blocking-query.ts';
import { ConsulRefusedError, type ConsulClient } from './client.ts';
import type { RefusalGate } from './refusal-gate.ts';
import { healthServiceSchema, healthStateSchema, type HealthStateCheck } from './schemas.ts';

/**
 * Health for more routed services than the connection budget allows one blocking query each.
 *
 * One blocking query on `/v1/health/state/any` wakes on any check change in the datacenter; its
 * checks are fingerprinted per service (service checks) and per node (serfHealth, maintenance), and
 * only services whose fingerprint moved are re-read, a few at a time. Tag changes arrive through
 * the catalog watch (`setServices`). So one changed service costs two requests, whatever the
 * number of services, instead of fabio's or Traefik's re-read of everything.
 *
 * What checks cannot show (an instance re-registered on a new port with identical checks, or an
 * instance without any service check) is caught by the periodic resync.
 */
export interface BulkHealthOptions {
  readonly client: ConsulClient;
  readonly waitMs: number;
  readonly resyncIntervalMs: number;
  readonly signal: AbortSignal;
  readonly makeQuery: <T>(name: string, path: string, parse: (body: unknown) => T, signal: AbortSignal, cadence?: { consumerCompares?: boolean }) => BlockingQuery<T>;
  readonly current: (service: string) => readonly ServiceInstance[] | undefined;
  readonly onHealth: (service: string, instances: readonly ServiceInstance[]) => void;
  readonly onFetchError: (service: string, error: unknown) => void;
  /** Admits fetches with the watches' first reads, and paces them while Consul refuses connections. */
  readonly gate?: RefusalGate;
}

export interface BulkStatus {
  readonly services: number;
  readonly pendingFetches: number;
  readonly fetches: number;
  readonly fetchErrors: number;
  readonly lastResyncAt: number | null;
}

export const BULK_FETCH_CONCURRENCY = 4;
const FETCH_TIMEOUT_MS = 15_000;

export class BulkHealthSync {
  private readonly stop = new AbortController();
  private readonly signal: AbortSignal;
  private readonly stateQuery: BlockingQuery<HealthStateCheck[]>;
  private services = new Set<string>();
  private tags = new Map<string, string>();
  /** `node/checkId` → what the check said last: its ModifyIndex, status and owner. */
  private checks = new Map<string, KnownCheck>();
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
    this.stateQuery = options.makeQuery('health-state', '/v1/health/state/any', (b) => healthStateSchema.parse(b), this.signal, { consumerCompares: true });
  }

  start(): void {
    void this.watchChecks();
    this.resyncTimer = setInterval(() => this.resync(), this.options.resyncIntervalMs);
    this.resyncTimer.unref();
  }

  watches(): WatchHandle[] {
    return [this.stateQuery];
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
   * Each answer is compared with the one before, check by check: a check with another
   * ModifyIndex or status, a new one or one that is gone marks its service dirty (or, for a node
   * check such as serfHealth or maintenance, every service with an instance on that node). The
   * work is one map lookup per check; nothing is sorted, joined or hashed.
   */
  private async watchChecks(): Promise<void> {
    for await (const { value } of this.stateQuery) {
      const next = new Map<string, KnownCheck>();
      const changedNodes = new Set<string>();
      const mark = (c: KnownCheck): void => {
        if (c.service) this.dirty.add(c.service);
        else changedNodes.add(c.node);
      };
      let kept = 0;
      for (const c of value) {
        const key = `${c.Node}/${c.CheckID}`;
        const now: KnownCheck = { node: c.Node, service: c.ServiceName, status: c.Status, index: c.ModifyIndex };
        next.set(key, now);
        const before = this.checks.get(key);
        if (before === undefined) {
          if (this.baselineSet) mark(now);
          continue;
        }
        kept += 1;
        if (before.index !== now.index || before.status !== now.status || before.service !== now.service) {
          mark(now);
          if (before.service !== now.service) mark(before);
        }
      }
      // Checks that are gone (an instance deregistered): only looked for when some are.
      if (kept < this.checks.size) for (const [key, c] of this.checks) if (!next.has(key)) mark(c);
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
      if (changedNodes.size > 0) {
        for (const name of this.services) {
          if (this.options.current(name)?.some((i) => changedNodes.has(i.node))) this.dirty.add(name);
        }
      }
      // Dirty services that are not routed are no reason to fetch.
      for (const name of this.dirty) if (!this.services.has(name)) this.dirty.delete(name);
      this.pump();
    }
  }

  private resync(): void {
    this.lastResyncAt = Date.now();
    for (const name of this.services) this.dirty.add(name);
    this.pump();
  }

  private pump(): void {
    if (!this.baselineSet) return;
    while (this.activeFetches < BULK_FETCH_CONCURRENCY && this.dirty.size > 0 && !this.signal.aborted) {
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

interface KnownCheck {
  readonly node: string;
  /** '' for node checks (serfHealth, maintenance). */
  readonly service: string;
  readonly status: string;
  readonly index: number;
}
