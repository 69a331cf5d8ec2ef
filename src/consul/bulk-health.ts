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
  readonly makeQuery: <T>(name: string, path: string, parse: (body: unknown) => T, signal: AbortSignal) => BlockingQuery<T>;
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
  private serviceFingerprints = new Map<string, string>();
  private nodeFingerprints = new Map<string, string>();
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
    this.stateQuery = options.makeQuery('health-state', '/v1/health/state/any', (b) => healthStateSchema.parse(b), this.signal);
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

  private async watchChecks(): Promise<void> {
    for await (const { value: checks } of this.stateQuery) {
      const byService = new Map<string, string[]>();
      const byNode = new Map<string, string[]>();
      for (const c of checks) {
        const line = `${c.Node}/${c.CheckID}/${c.Status}/${c.ModifyIndex}`;
        const bucket = c.ServiceName ? byService : byNode;
        const key = c.ServiceName || c.Node;
        const list = bucket.get(key);
        if (list) list.push(line);
        else bucket.set(key, [line]);
      }
      const serviceFps = fingerprints(byService);
      const nodeFps = fingerprints(byNode);
      if (!this.baselineSet) {
        // The first read is the baseline: every service is read once anyway (marked by
        // setServices), and reads only start now, so no change can fall between the two.
        this.baselineSet = true;
        this.serviceFingerprints = serviceFps;
        this.nodeFingerprints = nodeFps;
        this.pump();
        continue;
      }
      for (const name of this.services) {
        if (serviceFps.get(name) !== this.serviceFingerprints.get(name)) this.dirty.add(name);
      }
      const changedNodes = new Set<string>();
      for (const node of new Set([...nodeFps.keys(), ...this.nodeFingerprints.keys()])) {
        if (nodeFps.get(node) !== this.nodeFingerprints.get(node)) changedNodes.add(node);
      }
      if (changedNodes.size > 0) {
        for (const name of this.services) {
          if (this.options.current(name)?.some((i) => changedNodes.has(i.node))) this.dirty.add(name);
        }
      }
      this.serviceFingerprints = serviceFps;
      this.nodeFingerprints = nodeFps;
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

function fingerprints(groups: Map<string, string[]>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [key, lines] of groups) out.set(key, lines.sort().join('|'));
  return out;
}
