import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { CatalogView, ConsulViews, KvEntry, Problem, ServiceInstance } from '../core/types.ts';
import { BlockingQuery, blockingTimeoutMs, type WatchHandle, type WatchStatus } from './blocking-query.ts';
import { BULK_FETCH_CONCURRENCY, BulkHealthSync, type BulkStatus } from './bulk-health.ts';
import { ConsulHttpError, ConsulRefusedError, type ConsulClient } from './client.ts';
import { own, unroutableServiceName } from '../core/own.ts';
import { FIRST_READS_AT_ONCE, REFUSAL_BACKOFF_BASE_MS, REFUSAL_BACKOFF_CAP_MS, RefusalGate, type RefusalState } from './refusal-gate.ts';
import { catalogServicesSchema, healthServiceSchema, kvListSchema, kvTextListSchema } from './schemas.ts';
import { describeError } from '../core/errors.ts';

/**
 * Runs the watches and keeps the newest view of each. It does not interpret views beyond "which
 * services are routed" (a predicate the gateway injects): snapshots are built elsewhere, after the
 * doorbell (`onChange`) rings. Rings are cheap and coalesced by the listener.
 */
export interface SupervisorOptions {
  readonly client: ConsulClient;
  readonly waitMs: number;
  readonly kvPrefix: string;
  /**
   * fabio's route key (`--fabio-kv-key`): the key and the keys under `<key>/` are read. Under
   * `kvPrefix` the gateway's own KV watch already reads them; elsewhere one more KV watch does.
   * Absent or null: not read.
   */
  readonly fabioKvKey?: string | null;
  /** The whole connection budget towards Consul (the client's pool size). */
  readonly maxConnections: number;
  readonly resyncIntervalMs: number;
  readonly isRouted: (tags: readonly string[]) => boolean;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly onChange: () => void;
}

/** Connections kept free of per-service watches: catalog, KV (and fabio's key), the three bulk health queries, three one-off fetches. */
export const RESERVED_CONNECTIONS = 8;
/** Leave bulk mode only well below the budget, so a service count near it does not flap. */
const PER_SERVICE_RETURN_RATIO = 0.8;
const WATCHDOG_PERIOD_MS = 5_000;
/** HTTP errors in a row before a never-read service stops holding the views back. */
const UNREADABLE_AFTER_ERRORS = 3;
const WATCHDOG_SLACK_MS = 10_000;

export type HealthMode = 'per-service' | 'bulk';

export interface SupervisorStatus {
  readonly mode: HealthMode;
  readonly healthWatchBudget: number;
  readonly routedServices: number;
  readonly openConnections: number;
  readonly watches: readonly WatchStatus[];
  readonly bulk: BulkStatus | null;
  /** Consul refusing connections (per-client connection limit) now; null when it accepts them. */
  readonly refusing: RefusalState | null;
}

interface RunningWatch {
  readonly query: BlockingQuery<ServiceInstance[]>;
  readonly stop: AbortController;
  /** `watch`, `poll:<ms>` or `pinned`: a change of mode restarts the watch. */
  readonly mode: string;
}

/** How a service's health is read when it is not the default blocking watch. */
export interface DiscoveryMode {
  readonly mode: 'watch' | 'poll' | 'pinned';
  readonly interval: number;
}

/** What the policies ask of discovery beyond urlprefix- tags. */
export interface DiscoveryDemand {
  /** Services routed by route documents, watched even without a urlprefix- tag. */
  readonly services: ReadonlySet<string>;
  readonly modes: ReadonlyMap<string, DiscoveryMode>;
}

export class ConsulSupervisor {
  private catalog: CatalogView | undefined;
  private kv: readonly KvEntry[] | undefined;
  private readonly health = new Map<string, readonly ServiceInstance[]>();
  /** Set or removed since the control plane last asked (`takeHealthChanges`). */
  private healthChanged = new Set<string>();
  private readonly healthWatches = new Map<string, RunningWatch>();
  private readonly closing = new AbortController();
  private readonly catalogQuery: BlockingQuery<CatalogView>;
  private readonly kvQuery: BlockingQuery<readonly KvEntry[]>;
  /** fabio's route keys, once read; its own watch only when the key is outside the KV prefix. */
  private fabio: readonly KvEntry[] | undefined;
  private readonly fabioQuery: BlockingQuery<readonly KvEntry[]> | undefined;
  /** HTTP errors (an ACL denial) on fabio's key before its first read; see noteFabioUnreadable. */
  private fabioUnreadable: { errors: number; error: string } | undefined;
  /** A read of fabio's key succeeded once: its entries stay in force through later errors. */
  private fabioRead = false;
  private kvIndexResets = 0;
  /** Consul's index of the KV view (0 right after the index went backwards). */
  private kvViewIndex = 0;
  /** Routed services Consul answered with errors before their first read (see noteUnreadable). */
  private readonly unreadable = new Map<string, { errors: number; error: string }>();
  private bulk: BulkHealthSync | undefined;
  private mode: HealthMode = 'per-service';
  private routed: readonly string[] = [];
  private routedSet: ReadonlySet<string> = new Set();
  private suspectEmptyCatalog = false;
  private demand: DiscoveryDemand = { services: new Set(), modes: new Map() };
  private demandKey = '';
  private watchdog: NodeJS.Timeout | undefined;
  private readonly loops = new Set<Promise<void>>();
  private readonly gate: RefusalGate;

  constructor(private readonly options: SupervisorOptions) {
    const { logger, metrics } = options;
    this.gate = new RefusalGate({
      maxAtOnce: FIRST_READS_AT_ONCE,
      baseMs: REFUSAL_BACKOFF_BASE_MS,
      capMs: REFUSAL_BACKOFF_CAP_MS,
      onRefusal: () => metrics.consulRefusals.inc(),
      onEpisodeStart: (key) =>
        logger.warn(
          { watch: key, openConnections: options.client.openConnections },
          'Consul refuses connections (per-client connection limit, limits.http_max_conns_per_client?); probing one request at a time',
        ),
      onEpisodeEnd: (episode) =>
        logger.info({ refusals: episode.count, refusingMs: Date.now() - episode.since }, 'Consul accepts connections again'),
    });
    this.catalogQuery = this.query('catalog', '/v1/catalog/services', {}, (b) => catalogServicesSchema.parse(b));
    this.kvQuery = this.query('kv', `/v1/kv/${options.kvPrefix}`, { recurse: '' }, (b) => kvListSchema.parse(b));
    const fabioKey = options.fabioKvKey;
    if (fabioKey && !fabioKey.startsWith(options.kvPrefix)) {
      // A recursive read of `fabio/config` also lists `fabio/configs`; fabioEntries keeps the key and its subtree.
      this.fabioQuery = this.query('fabio-kv', `/v1/kv/${fabioKey}`, { recurse: '' }, (b) => fabioEntries(kvTextListSchema.parse(b), fabioKey));
    }
  }

  get healthWatchBudget(): number {
    // The fabio watch parks in the reserve: in bulk mode a re-read may then wait a moment for a
    // connection (the client's pool holds the budget either way).
    return Math.max(0, this.options.maxConnections - RESERVED_CONNECTIONS);
  }

  start(): void {
    this.track(this.consume(this.catalogQuery, (catalog) => this.onCatalog(catalog)));
    this.track(
      (async () => {
        for await (const update of this.kvQuery) {
          // The loop hands on index 0 when Consul's index went backwards: the KV store was
          // rebuilt (lost its data) or tombstones were reaped. Policies use the count to keep
          // documents that vanished with it rather than drop their protection.
          if (update.index === 0 && this.kv !== undefined) this.kvIndexResets += 1;
          this.kv = update.value;
          this.kvViewIndex = update.index;
          const fabioKey = this.options.fabioKvKey;
          if (fabioKey && !this.fabioQuery) this.fabio = sameEntries(this.fabio, fabioEntries(update.value, fabioKey));
          this.options.onChange();
        }
      })(),
    );
    if (this.fabioQuery) {
      this.track(
        this.consume(this.fabioQuery, (entries) => {
          this.fabioUnreadable = undefined;
          this.fabioRead = true;
          this.fabio = entries;
          this.options.onChange();
        }),
      );
    }
    this.watchdog = setInterval(() => this.checkSilentWatches(), WATCHDOG_PERIOD_MS);
    this.watchdog.unref();
  }

  /**
   * The newest Consul index among the catalog and KV answers the views hold (0 while both are
   * unread). A blocking read that returns unchanged content still moves it: the views are then
   * known to match Consul at that index.
   */
  viewIndex(): number {
    return Math.max(this.catalogQuery.status().index, this.kvQuery.status().index);
  }

  /** Epoch ms since which the catalog or KV watch has failed (its last success, else `fallback`); undefined while both answer. */
  failingSince(fallback: number): number | undefined {
    let since: number | undefined;
    for (const q of [this.catalogQuery, this.kvQuery]) {
      const s = q.status();
      if (s.consecutiveErrors === 0) continue;
      const t = s.lastSuccessAt ?? fallback;
      since = since === undefined ? t : Math.min(since, t);
    }
    return since;
  }

  /** The KV view alone: policies are resolved from it before the health views are complete. */
  kvView(): readonly KvEntry[] | undefined {
    return this.kv;
  }

  /** Consul's X-Consul-Index of the KV view: the same on every gateway for the same KV state, so it orders views across a fleet. */
  get kvIndex(): number {
    return this.kvViewIndex;
  }

  /** How often the KV watch saw Consul's index go backwards since start. */
  get kvResets(): number {
    return this.kvIndexResets;
  }

  /**
   * Policies name services to watch and how. Cheap when nothing changed, so the gateway calls it
   * on every rebuild; a change re-plans the health watches.
   */
  setDemand(demand: DiscoveryDemand): void {
    const key = JSON.stringify([[...demand.services].sort(), [...demand.modes].sort()]);
    if (key === this.demandKey) return;
    this.demandKey = key;
    this.demand = demand;
    if (this.catalog) this.onCatalog(this.catalog);
  }

  /**
   * The views once every routed service has been read at least once (or Consul has refused to
   * answer for it, see `unreadable`); undefined before.
   */
  /**
   * The views to build from, or undefined until every routed service has been read. `health` is
   * the live map, not a copy (a copy cost a millisecond per change at 5,000 services): read it
   * before the next turn of the event loop, as the synchronous build does.
   */
  views(): ConsulViews | undefined {
    if (!this.catalog || !this.kv) return undefined;
    if (this.options.fabioKvKey && !this.fabio) return undefined;
    for (const name of this.routed) if (!this.health.has(name)) return undefined;
    return { catalog: this.catalog, kv: this.kv, health: this.health, ...(this.fabio ? { fabio: this.fabio } : {}) };
  }

  /** Services whose health entry was set or removed since the last call. */
  takeHealthChanges(): ReadonlySet<string> {
    const out = this.healthChanged;
    this.healthChanged = new Set();
    return out;
  }

  private setHealth(name: string, instances: readonly ServiceInstance[]): void {
    this.health.set(name, instances);
    this.healthChanged.add(name);
  }

  private forgetHealth(name: string): void {
    this.health.delete(name);
    this.healthChanged.add(name);
  }

  problems(): Problem[] {
    const out: Problem[] = [];
    if (this.fabioUnreadable && this.fabioUnreadable.errors >= UNREADABLE_AFTER_ERRORS) {
      const key = this.options.fabioKvKey ?? '';
      const meanwhile = this.fabioRead ? 'the lines read last stay in force' : 'no fabio routes until a read succeeds';
      out.push({ kind: 'fabio-kv', subject: key, message: `Consul does not answer for fabio's route key (${this.fabioUnreadable.error}); ${meanwhile}`, keptLastGood: this.fabioRead });
    }
    for (const [name, u] of this.unreadable) {
      if (u.errors < UNREADABLE_AFTER_ERRORS || !this.routedSet.has(name)) continue;
      out.push({ kind: 'service', subject: name, message: `Consul does not answer for the health of this service (${u.error}); it has no endpoints until a read succeeds` });
    }
    if (!this.suspectEmptyCatalog) return out;
    return [
      ...out,
      {
        kind: 'catalog',
        subject: 'catalog',
        message: 'Consul listed no services at all (a missing or insufficient ACL token reads as empty); last known services kept',
        keptLastGood: true,
      },
    ];
  }

  status(): SupervisorStatus {
    return {
      mode: this.mode,
      healthWatchBudget: this.healthWatchBudget,
      routedServices: this.routed.length,
      openConnections: this.options.client.openConnections,
      watches: this.allWatches().map((q) => q.status()),
      bulk: this.bulk?.status() ?? null,
      refusing: this.gate.status(),
    };
  }

  async close(): Promise<void> {
    clearInterval(this.watchdog);
    this.closing.abort();
    this.bulk?.close();
    for (const w of this.healthWatches.values()) w.stop.abort();
    this.gate.close();
    await Promise.allSettled([...this.loops]);
  }

  private onCatalog(catalog: CatalogView): void {
    const empty = Object.keys(catalog).length === 0;
    if (empty && this.catalog && Object.keys(this.catalog).length > 0) {
      // Every real datacenter lists at least the `consul` service; an empty answer is how an ACL
      // problem looks (docs/consul-notes.md, "Empty answers"), so draining everything on it would
      // be an outage.
      if (!this.suspectEmptyCatalog) {
        this.options.logger.warn('Consul catalog read returned no services; keeping the last known services');
        this.options.metrics.configRejected.inc({ kind: 'catalog' });
      }
      this.suspectEmptyCatalog = true;
      this.options.onChange();
      return;
    }
    this.suspectEmptyCatalog = false;
    this.catalog = catalog;
    // Names Consul registers but whose health cannot be read (`..`) or that cannot be routed
    // (`__proto__`) are left to the snapshot build, which reports them; watching them would
    // hold every snapshot back waiting for a read that never succeeds.
    const routed = Object.keys(catalog).filter(
      (name) => unroutableServiceName(name) === null && (this.options.isRouted(own(catalog, name) ?? []) || this.demand.services.has(name)),
    );
    // A pinned service keeps the endpoints read last even when its last instance leaves the
    // catalog (maintenance, an agent restart): dropping it here would drop its health view.
    for (const name of this.demand.services) {
      if (!Object.hasOwn(catalog, name) && this.demand.modes.get(name)?.mode === 'pinned' && this.health.has(name)) routed.push(name);
    }
    this.routed = routed;
    this.routedSet = new Set(this.routed);
    this.reconcileHealth();
    this.options.onChange();
  }

  private reconcileHealth(): void {
    const routed = this.routedSet;
    for (const name of [...this.health.keys()]) if (!routed.has(name)) this.forgetHealth(name);
    for (const name of [...this.unreadable.keys()]) if (!routed.has(name)) this.unreadable.delete(name);

    const budget = this.healthWatchBudget;
    const nextMode: HealthMode =
      routed.size > budget ? 'bulk' : routed.size <= budget * PER_SERVICE_RETURN_RATIO ? 'per-service' : this.mode;
    if (nextMode !== this.mode) {
      this.options.logger.info({ from: this.mode, to: nextMode, routed: routed.size, budget }, 'health watch mode changed');
      this.mode = nextMode;
    }

    if (this.mode === 'bulk') {
      for (const w of this.healthWatches.values()) w.stop.abort();
      this.healthWatches.clear();
      this.bulk ??= this.startBulk();
      this.bulk.setServices(this.routed, this.catalog ?? {});
    } else {
      this.bulk?.close();
      this.bulk = undefined;
      for (const [name, w] of this.healthWatches) {
        if (!routed.has(name) || w.mode !== this.modeKey(name)) {
          w.stop.abort();
          this.healthWatches.delete(name);
        }
      }
      for (const name of this.routed) if (!this.healthWatches.has(name)) this.startHealthWatch(name);
    }
    this.options.metrics.watches.set({ kind: 'health' }, this.healthWatches.size);
  }

  private modeKey(name: string): string {
    const m = this.demand.modes.get(name);
    return !m || m.mode === 'watch' ? 'watch' : m.mode === 'poll' ? `poll:${m.interval}` : 'pinned';
  }

  private startHealthWatch(name: string): void {
    const stop = new AbortController();
    const signal = AbortSignal.any([stop.signal, this.closing.signal]);
    const mode = this.demand.modes.get(name);
    // A pinned service already read keeps its endpoints and costs Consul nothing more.
    if (mode?.mode === 'pinned' && this.health.has(name)) return;
    const query = this.query(
      `health:${name}`,
      `/v1/health/service/${encodeURIComponent(name)}`,
      {},
      (b) => healthServiceSchema.parse(b),
      signal,
      mode?.mode === 'poll' ? { pollIntervalMs: mode.interval } : mode?.mode === 'pinned' ? { once: true } : {},
    );
    this.healthWatches.set(name, { query, stop, mode: this.modeKey(name) });
    this.track(
      this.consume(query, (instances) => {
        if (stop.signal.aborted) return;
        this.unreadable.delete(name);
        this.setHealth(name, instances);
        this.options.onChange();
      }),
    );
  }

  private startBulk(): BulkHealthSync {
    const bulk = new BulkHealthSync({
      client: this.options.client,
      waitMs: this.options.waitMs,
      resyncIntervalMs: this.options.resyncIntervalMs,
      maxFetches: BULK_FETCH_CONCURRENCY + this.healthWatchBudget,
      signal: this.closing.signal,
      makeQuery: (name, path, query, parse, signal, cadence) => this.query(name, path, query, parse, signal, cadence),
      current: (name) => this.health.get(name),
      onHealth: (name, instances) => {
        if (!this.routedSet.has(name)) return;
        if (this.demand.modes.get(name)?.mode === 'pinned' && this.health.has(name)) return;
        this.unreadable.delete(name);
        this.setHealth(name, instances);
        this.options.onChange();
      },
      onFetchError: (name, err) => this.onWatchError(`fetch:${name}`, err),
      gate: this.gate,
    });
    bulk.start();
    return bulk;
  }

  private query<T>(
    name: string,
    path: string,
    query: Record<string, string>,
    parse: (body: unknown) => T,
    signal: AbortSignal = this.closing.signal,
    cadence: { pollIntervalMs?: number; once?: boolean; consumerCompares?: boolean; rawText?: boolean } = {},
  ): BlockingQuery<T> {
    const { metrics } = this.options;
    return new BlockingQuery<T>(
      {
        name,
        path,
        query,
        parse,
        client: this.options.client,
        waitMs: this.options.waitMs,
        gate: this.gate,
        ...cadence,
        onRequest: () => metrics.watchRequests.inc({ watch: watchLabel(name) }),
        onSuccess: () => metrics.watchLastSuccess.set({ watch: watchLabel(name) }, Date.now() / 1000),
        onError: (n, err) => this.onWatchError(n, err),
      },
      signal,
    );
  }

  private onWatchError(name: string, err: unknown): void {
    this.options.metrics.watchErrors.inc({ watch: watchLabel(name) });
    this.noteUnreadable(name, err);
    if (name === 'fabio-kv') this.noteFabioUnreadable(err);
    // Refusals come in bursts; the gate logs the start and end of each episode instead.
    if (err instanceof ConsulRefusedError) this.options.logger.debug({ watch: name, err: describeError(err) }, 'Consul refused a watch request');
    else this.options.logger.warn({ watch: name, err: describeError(err) }, 'Consul watch failed');
  }

  /**
   * A service that Consul answers about with an HTTP error again and again, before it was ever
   * read, must not keep every other service's changes from being applied: after a few such
   * answers it counts as read with no instances (and is reported). Refusals and transport errors
   * do not count; they are Consul's state, not the service's, and are retried as they are.
   */
  private noteUnreadable(watch: string, err: unknown): void {
    const colon = watch.indexOf(':');
    const kind = watch.slice(0, colon);
    if ((kind !== 'health' && kind !== 'fetch') || !(err instanceof ConsulHttpError) || err.status === 429) return;
    const name = watch.slice(colon + 1);
    if (this.health.has(name) && !this.unreadable.has(name)) return;
    const u = this.unreadable.get(name) ?? { errors: 0, error: '' };
    u.errors += 1;
    u.error = describeError(err);
    this.unreadable.set(name, u);
    if (u.errors === UNREADABLE_AFTER_ERRORS && this.routedSet.has(name)) {
      this.setHealth(name, []);
      this.options.onChange();
    }
  }

  /**
   * fabio's key is read with the gateway's token, which may not be allowed to (an ACL denial is
   * a 403 on every read): after a few such answers it counts as read and empty, so the gateway
   * still starts and applies every other change, and the problem shows in `cgw status`.
   */
  private noteFabioUnreadable(err: unknown): void {
    if (!(err instanceof ConsulHttpError) || err.status === 429) return;
    const u = this.fabioUnreadable ?? { errors: 0, error: '' };
    u.errors += 1;
    u.error = describeError(err);
    this.fabioUnreadable = u;
    if (u.errors === UNREADABLE_AFTER_ERRORS && this.fabio === undefined) {
      this.fabio = [];
      this.options.onChange();
    }
  }

  private track(loop: Promise<void>): void {
    this.loops.add(loop);
    void loop.finally(() => this.loops.delete(loop));
  }

  private async consume<T>(query: BlockingQuery<T>, apply: (value: T) => void): Promise<void> {
    for await (const update of query) apply(update.value);
  }

  private allWatches(): WatchHandle[] {
    const watches: WatchHandle[] = [this.catalogQuery, this.kvQuery];
    if (this.fabioQuery) watches.push(this.fabioQuery);
    for (const w of this.healthWatches.values()) watches.push(w.query);
    if (this.bulk) watches.push(...this.bulk.watches());
    return watches;
  }

  private checkSilentWatches(): void {
    const limit = blockingTimeoutMs(this.options.waitMs) + WATCHDOG_SLACK_MS;
    for (const q of this.allWatches()) {
      if (q.silentForMs() > limit) {
        this.options.logger.warn({ watch: q.name }, 'watch silent for too long; restarting it');
        this.options.metrics.watchRestarts.inc({ watch: watchLabel(q.name) });
        q.interrupt();
      }
    }
  }
}

/**
 * Per-service health watches share one metric label so the series count stays bounded at
 * thousands of services; per-service detail is in the admin API's watch list.
 */
/** The keys of `key` and `key/...` in key order, as fabio joins them. */
function fabioEntries(kv: readonly KvEntry[], key: string): KvEntry[] {
  const under = `${key}/`;
  return kv.filter((e) => e.key === key || e.key.startsWith(under)).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** The entries read before when nothing in them changed, so the build sees the same view and skips the work. */
function sameEntries(before: readonly KvEntry[] | undefined, now: KvEntry[]): readonly KvEntry[] {
  if (before && before.length === now.length && before.every((e, i) => e.key === now[i]?.key && e.modifyIndex === now[i]?.modifyIndex && e.value === now[i]?.value)) return before;
  return now;
}

function watchLabel(name: string): string {
  const colon = name.indexOf(':');
  return colon === -1 ? name : name.slice(0, colon);
}
