import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import type { GatewayConfig } from '../config.ts';
import { createLogger, type Logger } from '../core/logger.ts';
import { createMetrics, type Metrics } from '../core/metrics.ts';
import { formatAddress } from '../core/net.ts';
import type { DataPlaneReport, ReportScope } from '../core/types.ts';
import { changedServices, type ServiceSnapshot, type Snapshot } from '../state/snapshot.ts';
import { mergeReports } from '../admin/reports.ts';
import type { WorkerView } from '../admin/views.ts';
import { ControlPlane, type ApplyResult, type DataPlaneLink } from '../control-plane.ts';
import { WORKER_SLOT_ENV, type FromWorker, type ToWorker } from './messages.ts';

/** How long the admin API waits for a worker's report or metrics before answering without it. */
const ASK_TIMEOUT_MS = 3_000;
/** After the drain timeout, how long workers get to exit before they are killed. */
const EXIT_GRACE_MS = 5_000;

interface Slot {
  readonly index: number;
  worker: Worker;
  /** The snapshot version the worker last received in full or by delta (what a delta applies to). */
  base: string | undefined;
  /** The version it runs. */
  applied: string | null;
  up: boolean;
  startedAt: number;
  restarts: number;
  exited: Promise<void>;
}

type Pending = { readonly want: number; readonly got: unknown[]; readonly done: (values: unknown[]) => void; readonly timer: NodeJS.Timeout };

/**
 * The gateway as a primary and N workers. The primary runs the control plane (one set of Consul
 * watches whatever N is) and the admin API; workers run only the data plane and get each
 * snapshot over IPC. A worker that dies is replaced at once; the others go on serving.
 */
export class ClusterPrimary implements DataPlaneLink {
  readonly logger: Logger;
  readonly metrics: Metrics;
  private readonly control: ControlPlane;
  private readonly slots: Slot[] = [];
  private sent: Snapshot | undefined;
  private closing = false;
  private nextAsk = 1;
  private readonly pending = new Map<number, Pending>();
  private port = 0;
  /** Requests workers had to cut when the drain timed out. */
  private unfinished = 0;

  constructor(
    readonly config: GatewayConfig,
    private readonly size: number,
  ) {
    this.logger = createLogger(config.logLevel, config.logFormat).child({ worker: 'primary' });
    this.metrics = createMetrics();
    this.control = new ControlPlane(config, this.logger, this.metrics, this);
  }

  async start(): Promise<void> {
    await this.control.start();
    cluster.setupPrimary({ serialization: 'advanced' });
    cluster.on('message', (worker: Worker, message: FromWorker) => this.onMessage(worker, message));
    for (let i = 0; i < this.size; i++) this.fork(i, 0);
    await Promise.race([Promise.all(this.slots.map((s) => this.upOf(s))), new Promise((r) => setTimeout(r, 30_000).unref())]);
    this.control.watch(this.port || this.config.listen.port);
    this.logger.info({ listen: formatAddress(this.config.listen.host, this.port), listenTls: this.config.listenTls.map((a) => formatAddress(a.host, a.port)), admin: this.control.adminAddress, consul: this.config.consul, workers: this.size }, 'gateway started');
  }

  // ---- DataPlaneLink --------------------------------------------------------------------------

  offer(snapshot: Snapshot): ApplyResult {
    const previous = this.sent;
    this.sent = snapshot;
    for (const slot of this.slots) if (slot.up) this.ship(slot, snapshot, previous);
    return { ok: true };
  }

  ready(): boolean {
    const version = this.control.current?.version;
    return version !== undefined && this.slots.length === this.size && this.slots.every((s) => s.up && s.applied === version);
  }

  async report(scope: ReportScope): Promise<DataPlaneReport | undefined> {
    const reports = (await this.ask((id) => ({ t: 'report', id, scope }))) as DataPlaneReport[];
    return mergeReports(reports);
  }

  workers(): readonly WorkerView[] {
    const version = this.control.current?.version ?? null;
    return this.slots.map((s) => ({
      id: s.index,
      pid: s.worker.process.pid ?? null,
      version: s.applied,
      current: s.up && s.applied !== null && s.applied === version,
      startedAt: new Date(s.startedAt).toISOString(),
      restarts: s.restarts,
    }));
  }

  /** The primary's metrics and every worker's, summed (gauges derived from the snapshot: the maximum). */
  async metricsText(): Promise<string> {
    const [own, workers] = await Promise.all([this.metrics.registry.getMetricsAsJSON(), this.ask((id) => ({ t: 'metrics', id }))]);
    return AggregatorRegistry.aggregate([own, ...(workers as typeof own[])]).metrics();
  }

  // ---- workers --------------------------------------------------------------------------------

  private fork(index: number, restarts: number): void {
    const worker = cluster.fork({ [WORKER_SLOT_ENV]: String(index) });
    const slot: Slot = {
      index,
      worker,
      base: undefined,
      applied: null,
      up: false,
      startedAt: Date.now(),
      restarts,
      exited: new Promise((resolve) => worker.once('exit', () => resolve())),
    };
    this.slots[index] = slot;
    this.metrics.workers.set(this.slots.filter((s) => s.up).length);
    worker.once('exit', (code, signal) => this.onExit(slot, code, signal));
    // A failed IPC send (the worker just died) must not end the primary.
    worker.on('error', (err) => this.logger.warn({ worker: index, err: err.message }, 'worker IPC error'));
  }

  private upOf(slot: Slot): Promise<void> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (slot.up || this.closing) resolve();
        else setTimeout(check, 20).unref();
      };
      check();
    });
  }

  private onExit(slot: Slot, code: number | null, signal: string | null): void {
    if (this.slots[slot.index] !== slot) return;
    slot.up = false;
    this.metrics.workers.set(this.slots.filter((s) => s.up).length);
    if (this.closing) return;
    this.metrics.workerRestarts.inc();
    this.logger.error({ worker: slot.index, pid: slot.worker.process.pid, code, signal }, 'worker exited; starting a replacement');
    this.fork(slot.index, slot.restarts + 1);
  }

  private onMessage(worker: Worker, message: FromWorker): void {
    const slot = this.slots.find((s) => s.worker === worker);
    if (!slot) return;
    switch (message.t) {
      case 'up':
        slot.up = true;
        this.port = message.port;
        this.metrics.workers.set(this.slots.filter((s) => s.up).length);
        if (this.sent) this.ship(slot, this.sent, undefined);
        return;
      case 'applied':
        slot.applied = message.version;
        this.control.applied(message.version);
        return;
      case 'rejected':
        this.logger.error({ worker: slot.index, version: message.version, error: message.error }, 'worker could not compile the snapshot; it keeps the one in force');
        this.control.applyFailed(message.version, message.error);
        return;
      case 'resync':
        if (this.sent) this.ship(slot, this.sent, undefined);
        return;
      case 'report':
      case 'metrics': {
        const pending = this.pending.get(message.id);
        if (!pending) return;
        pending.got.push(message.t === 'report' ? message.report : message.json);
        if (pending.got.length >= pending.want) this.settle(message.id);
        return;
      }
      case 'drained':
        if (message.unfinished > 0) this.unfinished += message.unfinished;
        return;
    }
  }

  /**
   * The whole snapshot, or only what changed since the one the worker has: the delta carries the
   * services whose snapshot is another object (incremental builds keep unchanged ones).
   */
  private ship(slot: Slot, next: Snapshot, previous: Snapshot | undefined): void {
    let message: ToWorker;
    if (previous && slot.base === previous.version && previous.routes === next.routes && previous.policies === next.policies && previous.routeGuards === next.routeGuards && previous.rollouts === next.rollouts) {
      const services: Record<string, ServiceSnapshot> = {};
      const changed = changedServices(previous, next);
      if (changed) for (const name of changed) services[name] = next.services[name] as ServiceSnapshot;
      else for (const name in next.services) if (next.services[name] !== previous.services[name]) services[name] = next.services[name] as ServiceSnapshot;
      message = { t: 'delta', version: next.version, base: previous.version, services, ...(next.problems !== previous.problems ? { problems: next.problems } : {}) };
    } else {
      message = { t: 'snapshot', snapshot: next };
    }
    slot.base = next.version;
    this.send(slot, message);
  }

  private send(slot: Slot, message: ToWorker): void {
    if (!slot.worker.isConnected()) return;
    try {
      slot.worker.send(message);
    } catch (err) {
      this.logger.warn({ worker: slot.index, err: (err as Error).message }, 'could not send to worker');
    }
  }

  /** Asks every running worker; answers with what arrived within ASK_TIMEOUT_MS. */
  private ask(make: (id: number) => ToWorker): Promise<unknown[]> {
    const live = this.slots.filter((s) => s.up && s.worker.isConnected());
    if (live.length === 0) return Promise.resolve([]);
    const id = this.nextAsk++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.settle(id), ASK_TIMEOUT_MS);
      this.pending.set(id, { want: live.length, got: [], done: resolve, timer });
      for (const slot of live) this.send(slot, make(id));
    });
  }

  private settle(id: number): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    pending.done(pending.got);
  }

  /** SIGTERM: every worker drains its requests, then the control plane stops watching. */
  async close(): Promise<{ unfinished: number }> {
    this.closing = true;
    this.control.beginClose();
    this.logger.info({ workers: this.slots.length, drainTimeoutMs: this.config.drainTimeout }, 'draining');
    for (const slot of this.slots) this.send(slot, { t: 'drain', timeoutMs: this.config.drainTimeout });
    const exits = Promise.all(this.slots.map((s) => s.exited));
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([exits.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), this.config.drainTimeout + EXIT_GRACE_MS)))]);
    clearTimeout(timer);
    if (late) {
      for (const slot of this.slots) if (slot.worker.process.exitCode === null) slot.worker.process.kill('SIGKILL');
      this.unfinished += 1;
    }
    await this.control.close();
    this.logger.info({ unfinished: this.unfinished }, 'gateway stopped');
    return { unfinished: this.unfinished };
  }
}
