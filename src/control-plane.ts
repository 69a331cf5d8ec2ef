import type { Server } from 'node:http';
import { consulTls, fabioKvKeyOf, type GatewayConfig } from './config.ts';
import { formatAddress, isLoopbackHost, listenOn } from './core/net.ts';
import type { DataPlaneReport, KvEntry, ReportScope } from './core/types.ts';
import type { Logger } from './core/logger.ts';
import type { Metrics } from './core/metrics.ts';
import { ConsulClient } from './consul/client.ts';
import { ConsulSupervisor } from './consul/supervisor.ts';
import { ConsulSession } from './consul/session.ts';
import { RolloutDriver } from './rollouts/driver.ts';
import { GuardKeeper } from './rollouts/guards.ts';
import { readAgentDatacenter } from './consul/datacenter.ts';
import { ConsulKvWriter } from './consul/kv-writer.ts';
import { runtimeKeys } from './core/kv-layout.ts';
import { HistoryRecorder } from './state/history-recorder.ts';
import { buildSnapshot, discoveryModes, servicesNamedByDocuments, type ListenerFacts, type Snapshot } from './state/snapshot.ts';
import { SelfRegistration, selfServiceId } from './consul/self-registration.ts';
import { CGW_VERSION, FLEET_CHECK_TTL_MS, type RegistrationStatus } from './core/fleet.ts';
import { StateFileKeeper } from './state/state-file-keeper.ts';

import { SnapshotStore } from './state/store.ts';
import { BuildHealth } from './state/build-health.ts';
import { isUrlprefixTag } from './state/tags.ts';
import { parseDocumentText, readPolicyDir, type RawDocument } from './policy/documents.ts';
import { resolvePolicies } from './policy/resolve.ts';
import { createAdminServer } from './admin/server.ts';
import { adminAccess } from './admin/access.ts';
import { AdminEvents } from './admin/events.ts';
import { createAdminControls } from './controls/admin-controls.ts';
import { ConsulControlStore } from './controls/consul-store.ts';
import type { WorkerView } from './admin/views.ts';

/** How long start waits to learn whether --consul is a Consul agent at all. */
const CONSUL_IDENTIFY_TIMEOUT_MS = 5_000;
/** A gateway that died without draining leaves the catalog this long after its check went critical. */
const DEREGISTER_CRITICAL_AFTER = '1m';
/** The state file is written at most this often (the newest snapshot at the end of the quiet time). */
const STATE_FILE_MIN_INTERVAL_MS = 5_000;
/** Dashboards (and other readers) of the admin event stream at once; more answer 503. */
const ADMIN_EVENT_CLIENTS_MAX = 64;
/** How often the event stream says `tick`, for figures that move without a new snapshot. */
const ADMIN_EVENT_TICK_MS = 5_000;
/** `cgw fleet --grace`'s default: the fleet page judges lag the same way. */
const FLEET_GRACE_MS = 5_000;

export type ApplyResult = { readonly ok: true } | { readonly ok: false; readonly error: string };

/**
 * Where snapshots go and what the admin API learns of the data plane: the data plane of this
 * process, or the workers (over IPC).
 */
export interface DataPlaneLink {
  /**
   * A new snapshot: compiled at once in this process (a failure keeps the one in force), or sent
   * to the workers, which report a failure later through `ControlPlane.applyFailed`.
   */
  offer(snapshot: Snapshot): ApplyResult;
  /** Every data plane runs the snapshot in force. */
  ready(): boolean;
  report(scope: ReportScope): Promise<DataPlaneReport | undefined>;
  workers(): readonly WorkerView[] | null;
  /** Prometheus exposition of every process. */
  metricsText(): Promise<string>;
}

/**
 * The control plane's composition root: Consul → snapshot. Watches, policy documents, the pure
 * build, the store of the snapshot in force and the admin API. It never proxies a request.
 */
export class ControlPlane {
  private readonly consul: ConsulClient;
  private readonly supervisor: ConsulSupervisor;
  private readonly store: SnapshotStore;
  private readonly admin: Server;
  private readonly build = new BuildHealth();
  private readonly session: ConsulSession;
  private readonly rollouts: RolloutDriver;
  private readonly guards: GuardKeeper;
  /** Writes `<runtime-prefix>history/` for `cgw history` and `cgw rollback` (off the request path). */
  private readonly historyKv: ConsulKvWriter;
  private readonly history: HistoryRecorder;
  /** The admin API's Consul writes and reads (dashboard controls, rollouts, fleet): a client of its own. */
  private readonly controlsConsul: ConsulClient;
  private readonly adminEvents: AdminEvents;
  /** The KV view the policies in force were resolved from. */
  private resolvedFrom: { kv: readonly KvEntry[]; kvResets: number } | undefined;
  private policyFiles: readonly RawDocument[] = [];
  private policyLoadErrors: readonly { path: string; error: string }[] = [];
  /** Services whose health moved since the snapshot in force was built (cleared once one is). */
  private healthChanged = new Set<string>();
  private rebuildScheduled = false;
  /** One object for the gateway's life: the build compares it by identity to reuse its routes. */
  private readonly listeners: ListenerFacts;
  private closing = false;
  /** For `$DC` in route tags: `--dc`, else the agent's own (read at start, retried until known). */
  private datacenter: string | null;
  private datacenterRetry: NodeJS.Timeout | undefined;
  /** This gateway's entry in Consul (`cgw fleet`); undefined with --no-register or before `watch`. */
  private registration: SelfRegistration | undefined;
  private registrationClient: ConsulClient | undefined;
  private deregistered: Promise<void> | undefined;
  /** The Consul index the snapshot in force reflects (catalog and KV answers). */
  private appliedIndex = 0;
  /** Since when a watch has handed on a change the snapshot in force does not hold yet. */
  private pendingSince: number | undefined;
  private readonly startedAt = Date.now();
  /** --state-file: written on each new version; its snapshot serves when Consul is not reached at start. */
  private readonly stateFile: StateFileKeeper | undefined;
  private stateFileSnapshot: Snapshot | undefined;
  /** The file's snapshot, once published, until a live one replaces it: never a base to build on. */
  private servedFromFile: Snapshot | undefined;
  private stateFileTimer: NodeJS.Timeout | undefined;
  /** The first call to Consul at start failed (refused, timed out, no leader). */
  private consulUnreachedAtStart = false;
  adminPort = 0;

  constructor(
    private readonly config: GatewayConfig,
    private readonly logger: Logger,
    private readonly metrics: Metrics,
    private readonly plane: DataPlaneLink,
  ) {
    this.datacenter = config.dc ?? null;
    this.listeners = Object.freeze({ https: config.listenTls.length > 0, clientCertificates: config.tlsClientAuth !== 'none' });
    this.consul = new ConsulClient({
      address: config.consul,
      token: config.token,
      dc: config.dc,
      consistency: config.consistency,
      maxConnections: config.consulMaxConns,
      tls: consulTls(config),
    });
    this.supervisor = new ConsulSupervisor({
      client: this.consul,
      waitMs: config.wait,
      kvPrefix: config.kvPrefix,
      fabioKvKey: fabioKvKeyOf(config),
      maxConnections: config.consulMaxConns,
      resyncIntervalMs: config.resyncInterval,
      isRouted: (tags) => tags.some(isUrlprefixTag),
      logger,
      metrics,
      onChange: () => this.ring(),
    });
    this.session = new ConsulSession(this.consul, `cgw ${config.gatewayId}`, logger, (operation) => metrics.rolloutDriverErrors.inc({ operation }));
    this.rollouts = new RolloutDriver({
      consul: this.consul,
      session: this.session,
      gatewayId: config.gatewayId,
      kvPrefix: config.kvPrefix,
      runtimePrefix: config.kvRuntimePrefix,
      logger: logger.child({ component: 'rollouts' }),
      metrics,
      kv: () => this.supervisor.kvView(),
      figures: async () => (await plane.report({ kind: 'summary' }))?.rollouts,
    });
    this.guards = new GuardKeeper({
      consul: this.consul,
      gatewayId: config.gatewayId,
      kvPrefix: config.kvPrefix,
      logger: logger.child({ component: 'guards' }),
      metrics,
      kv: () => this.supervisor.kvView(),
      snapshot: () => this.store.current?.snapshot,
      tallies: async () => (await plane.report({ kind: 'figures' }))?.routeTallies,
    });
    this.historyKv = new ConsulKvWriter({ address: config.consul, token: config.token, dc: config.dc, tls: consulTls(config) });
    this.history = new HistoryRecorder({
      kv: this.historyKv,
      historyPrefix: runtimeKeys.history(config.kvRuntimePrefix),
      kvPrefix: config.kvPrefix,
      gatewayId: config.gatewayId,
      logger,
      count: (outcome) => metrics.historyWrites.inc({ outcome }),
    });
    this.store = new SnapshotStore(logger, metrics);
    this.store.onPublish((snapshot) => this.countDocuments(snapshot));
    if (config.stateFile) {
      this.stateFile = new StateFileKeeper({
        path: config.stateFile,
        owner: { kvPrefix: config.kvPrefix, datacenter: config.dc ?? null },
        datacenter: () => this.datacenter,
        consulAddress: config.consul,
        gatewayVersion: CGW_VERSION,
        minIntervalMs: STATE_FILE_MIN_INTERVAL_MS,
        logger,
        metrics,
      });
      const keeper = this.stateFile;
      this.store.onPublish((snapshot) => keeper.published(snapshot));
    }
    this.controlsConsul = new ConsulClient({ address: config.consul, token: config.token, dc: config.dc, maxConnections: 2, tls: consulTls(config) });
    this.adminEvents = new AdminEvents({
      maxClients: ADMIN_EVENT_CLIENTS_MAX,
      tickMs: ADMIN_EVENT_TICK_MS,
      version: () => this.store.current?.snapshot.version ?? null,
      onClients: (n) => metrics.adminEventClients.set(n),
      onRefused: () => metrics.adminEventClientsRefused.inc(),
    });
    this.store.onPublish((snapshot) => this.adminEvents.snapshot(snapshot.version));
    const controls = createAdminControls({
      store: new ConsulControlStore(this.controlsConsul),
      kvPrefix: config.kvPrefix,
      runtimePrefix: config.kvRuntimePrefix,
      fleetService: config.registerService,
      fleetGraceMs: FLEET_GRACE_MS,
    });
    this.admin = createAdminServer(
      {
        startedAt: Date.now(),
        published: () => this.store.current,
        ready: () => this.ready,
        dataPlane: (scope) => plane.report(scope),
        workers: () => plane.workers(),
        discovery: () => this.supervisor.status(),
        discoveryProblems: () => [...this.supervisor.problems(), ...this.build.problems(), ...this.rollouts.problems(), ...this.guards.problems(), ...this.history.problems(), ...(this.stateFile?.problems() ?? [])],
        buildFailure: () => this.build.view(),
        registration: () => this.registrationStatus(),
        stateFile: () => this.stateFile?.view() ?? null,
        settings: {
          consul: config.consul,
          dc: config.dc ?? null,
          kvPrefix: config.kvPrefix,
          fabioKvKey: fabioKvKeyOf(config),
          consistency: config.consistency,
          waitSeconds: config.wait / 1000,
          consulMaxConns: config.consulMaxConns,
          allowWarning: config.allowWarning,
          picker: config.picker,
        },
      },
      { text: () => plane.metricsText(), contentType: metrics.registry.contentType },
      (err) => {
        metrics.internalErrors.inc({ component: 'admin' });
        logger.error({ err }, 'admin API request failed');
      },
      adminAccess(config.adminToken, isLoopbackHost(config.admin.host)),
      {
        controls,
        events: this.adminEvents,
        onWrite: (w) => {
          metrics.adminWrites.inc({ action: w.action, outcome: w.outcome });
          // Who (the client's address) and what: every write through the admin API is on record.
          logger[w.outcome === 'ok' ? 'info' : 'warn']({ admin: { action: w.action, service: w.service, outcome: w.outcome, status: w.status, remote: w.remote }, reason: w.message }, `admin write ${w.action} ${w.service}: ${w.outcome}`);
        },
      },
    );
    metrics.hooks.consulApplyLagSeconds = () => this.applyLagSeconds();
  }

  /** Ready once the first snapshot is in force in every data plane (`/-/readyz` answers 200). */
  get ready(): boolean {
    return this.store.current !== undefined && this.plane.ready() && !this.closing;
  }

  /** The snapshot in force, for data planes that join later (a replaced worker). */
  get current(): Snapshot | undefined {
    return this.store.current?.snapshot;
  }

  /** Reads policy files, checks the Consul address, opens the admin listener. Watching starts with `watch()`. */
  async start(): Promise<void> {
    if (this.config.policies) this.loadPolicyFiles(this.config.policies);
    this.stateFileSnapshot = this.stateFile?.load();
    const consul = await this.consul.identify(CONSUL_IDENTIFY_TIMEOUT_MS);
    this.consulUnreachedAtStart = consul.kind === 'unreachable';
    if (consul.kind === 'not-consul') throw new Error(`${this.config.consul} is not a Consul agent (${consul.error}); check --consul or CONSUL_HTTP_ADDR`);
    if (consul.kind === 'unreachable') this.logger.warn({ consul: this.config.consul, err: consul.error }, 'Consul does not answer yet; the watches keep trying');
    if (this.datacenter === null) await this.learnDatacenter(1_000);
    this.adminPort = await listenOn(this.admin, this.config.admin.host, this.config.admin.port);
  }

  /** Starts the watches and, unless --no-register, this gateway's registration (`proxyPort`: the port it listens on). */
  watch(proxyPort: number): void {
    this.supervisor.start();
    this.armStateFile();
    this.rollouts.start();
    this.guards.start();
    if (!this.config.register || this.closing) return;
    // One connection of its own: a check pass must not queue behind parked blocking queries.
    this.registrationClient = new ConsulClient({ address: this.config.consul, token: this.config.token, maxConnections: 1, tls: consulTls(this.config) });
    this.registration = new SelfRegistration({
      client: this.registrationClient,
      service: this.config.registerService,
      gatewayId: this.config.gatewayId,
      address: this.config.registerAddress,
      port: proxyPort,
      admin: this.adminAddress,
      ttlMs: FLEET_CHECK_TTL_MS,
      deregisterCriticalAfter: DEREGISTER_CRITICAL_AFTER,
      facts: () => {
        const published = this.store.current;
        return published && { snapshot: published.snapshot.version, snapshotSince: published.appliedAt, appliedIndex: this.appliedIndex, ready: this.ready };
      },
      logger: this.logger,
      metrics: this.metrics,
    });
    this.registration.start();
  }

  /**
   * `cgw_consul_apply_lag_seconds`: how long Consul may have had a change this gateway has not
   * applied. A change handed on but not in force yet (waiting for health reads, a build or a
   * compilation that fails) counts from when it arrived; a failing catalog or KV watch
   * counts from its last success, since any change after it is unseen.
   */
  private applyLagSeconds(now = Date.now()): number {
    const since = Math.min(this.pendingSince ?? now, this.supervisor.failingSince(this.startedAt) ?? now);
    return Math.max(0, now - since) / 1000;
  }

  private registrationStatus(): RegistrationStatus {
    if (this.registration) return this.registration.status();
    return {
      state: this.config.register ? 'pending' : 'disabled',
      service: this.config.registerService,
      serviceId: this.config.register ? selfServiceId(this.config.gatewayId) : '',
      address: this.config.registerAddress,
      failures: 0,
      consecutiveFailures: 0,
      lastError: null,
      lastSuccessAt: null,
      meta: null,
    };
  }

  get adminAddress(): string {
    return formatAddress(this.config.admin.host, this.adminPort);
  }

  /** A data plane could not compile the snapshot it was sent (a worker's NACK). */
  applyFailed(version: string, error: string): void {
    if (this.stateFile?.inForce && version === this.store.current?.snapshot.version) this.stateFile.refuseUncompilable(error);
    this.buildFailed('runtime', new Error(`snapshot ${version}: ${error}`));
  }

  /**
   * The state file's snapshot serves when Consul was not reached at start, or when the first
   * sync does not complete within --state-file-wait. Offered like any snapshot: one the data
   * plane cannot compile is refused whole.
   */
  private armStateFile(): void {
    if (!this.stateFileSnapshot) return;
    if (this.consulUnreachedAtStart) return this.serveStateFile();
    this.stateFileTimer = setTimeout(() => this.serveStateFile(), this.config.stateFileWait);
    this.stateFileTimer.unref();
  }

  private serveStateFile(): void {
    const snapshot = this.stateFileSnapshot;
    this.stateFileSnapshot = undefined;
    if (!snapshot || !this.stateFile || this.closing || this.store.current) return;
    const outcome = this.plane.offer(snapshot);
    if (!outcome.ok) return this.stateFile.refuseUncompilable(outcome.error);
    this.stateFile.serving();
    this.servedFromFile = snapshot;
    this.store.publish(snapshot);
  }

  /** A data plane runs the snapshot in force again. */
  applied(version: string): void {
    if (version === this.store.current?.snapshot.version) this.build.succeeded();
    this.registration?.notify();
  }

  /** Draining: rollouts this gateway drives go to another gateway now, not after the session TTL. */
  beginClose(): void {
    this.closing = true;
    this.guards.close();
    void this.rollouts.close().then(() => this.session.destroy());
    this.deregistered ??= this.registration?.deregister();
  }

  /**
   * One read of the agent's datacenter; on failure another later (capped doubling), so tags with
   * `$DC` route as soon as it is known. Never on the request path, and watching does not wait.
   */
  private async learnDatacenter(retryMs: number): Promise<void> {
    const read = await readAgentDatacenter(this.consul, CONSUL_IDENTIFY_TIMEOUT_MS);
    if (this.closing) return;
    if (read.ok) {
      this.datacenter = read.datacenter;
      this.logger.info({ datacenter: read.datacenter }, 'Consul datacenter known ($DC in route tags)');
      this.ring();
      return;
    }
    this.logger.warn({ err: read.error, retryInMs: retryMs }, 'datacenter of the Consul agent unknown; route tags with $DC wait for it');
    this.datacenterRetry = setTimeout(() => void this.learnDatacenter(Math.min(retryMs * 2, 60_000)), retryMs);
    this.datacenterRetry.unref();
  }

  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.datacenterRetry);
    clearTimeout(this.stateFileTimer);
    await this.stateFile?.close();
    this.guards.close();
    await this.rollouts.close();
    await this.session.destroy();
    await (this.deregistered ??= this.registration?.deregister());
    this.registration?.close();
    await this.registrationClient?.close();
    await this.supervisor.close();
    await this.history.close();
    await this.historyKv.close();
    this.adminEvents.close();
    await this.controlsConsul.close();
    await new Promise<void>((resolve) => {
      this.admin.close(() => resolve());
      this.admin.closeAllConnections();
    });
    await this.consul.close();
  }

  private loadPolicyFiles(dir: string): void {
    // Read once at start; KV documents are the live channel (the README says so).
    const { documents, errors } = readPolicyDir(dir);
    this.policyFiles = documents;
    this.policyLoadErrors = errors;
    // Validated here too, so the start-up line counts what will really be refused.
    const invalid = documents.flatMap((d) => {
      const parsed = parseDocumentText(d.text, d.kind);
      return parsed.ok ? [] : [{ path: d.origin.kind === 'file' ? d.origin.path : d.id, error: parsed.error }];
    });
    for (const e of [...errors, ...invalid]) this.logger.warn({ file: e.path, error: e.error }, `policy file refused: ${e.error}`);
    this.logger[invalid.length + errors.length > 0 ? 'warn' : 'info'](
      { dir, files: documents.length + errors.length, valid: documents.length - invalid.length, invalid: invalid.length + errors.length },
      'policy files loaded',
    );
  }

  /** Doorbell: many watch updates in one tick produce one rebuild. */
  private ring(): void {
    this.pendingSince ??= Date.now();
    if (this.rebuildScheduled || this.closing) return;
    this.rebuildScheduled = true;
    setImmediate(() => {
      this.rebuildScheduled = false;
      this.rebuild();
    });
  }

  private rebuild(): void {
    const kv = this.supervisor.kvView();
    if (!kv) return;
    // The state file's snapshot is not a base to build on: the first live build starts afresh.
    const inForce = this.store.current?.snapshot;
    const previous = inForce === this.servedFromFile ? undefined : inForce;
    let snapshot: Snapshot;
    let resolved: { kv: readonly KvEntry[]; kvResets: number } | undefined;
    try {
      // Documents come from files read at start and the KV view: the same KV view, the same set
      // (so a health change does not resolve, and nothing downstream recompiles, the policies).
      const kvResets = this.supervisor.kvResets;
      const policies =
        previous && this.resolvedFrom?.kv === kv && this.resolvedFrom.kvResets === kvResets
          ? previous.policies
          : resolvePolicies(this.policyFiles, kv, this.config.kvPrefix, previous?.policies, this.policyLoadErrors, kvResets);
      resolved = { kv, kvResets };
      // Route documents and mirrors can name services to watch and policies can change how; the
      // supervisor re-plans its watches and rings again once the new services have been read.
      this.supervisor.setDemand({ services: servicesNamedByDocuments(policies), modes: discoveryModes(policies) });
      for (const name of this.supervisor.takeHealthChanges()) this.healthChanged.add(name);
      const views = this.supervisor.views();
      if (!views) return;
      snapshot = buildSnapshot(views, { allowWarning: this.config.allowWarning, kvPrefix: this.config.kvPrefix, datacenter: this.datacenter, listeners: this.listeners }, previous, policies, this.healthChanged);
    } catch (err) {
      this.buildFailed('snapshot', err);
      return;
    }
    if (previous?.version === snapshot.version) {
      this.resolvedFrom = resolved;
      this.healthChanged = new Set();
      this.build.succeeded();
      this.history.observe(kv, this.supervisor.kvIndex);
      this.caughtUp();
      return;
    }
    // Compiled before it is published: a snapshot the data plane cannot run is never half in force.
    const outcome = this.plane.offer(snapshot);
    if (!outcome.ok) {
      this.buildFailed('runtime', new Error(outcome.error));
      return;
    }
    const first = previous === undefined;
    this.stateFileSnapshot = undefined;
    this.servedFromFile = undefined;
    // Before publishing: the keeper writes only live snapshots.
    this.stateFile?.liveInForce();
    if (!this.store.publish(snapshot)) this.store.adopt(snapshot);
    this.healthChanged = new Set();
    this.resolvedFrom = resolved;
    this.build.succeeded();
    // Applied: the configuration keys of this KV view are the version in force (a new one is recorded).
    this.history.observe(kv, this.supervisor.kvIndex);
    this.caughtUp();
    if (first) this.logger.info({ version: snapshot.version }, 'first snapshot built');
  }

  /** The snapshot in force holds every change handed on so far. */
  private caughtUp(): void {
    this.pendingSince = undefined;
    this.appliedIndex = this.supervisor.viewIndex() || this.appliedIndex;
    this.registration?.notify();
  }

  /** A bug must not take the data plane down: the last good runtime keeps serving, and it shows. */
  private buildFailed(phase: 'snapshot' | 'runtime', err: unknown): void {
    this.build.failed(phase, err);
    this.metrics.snapshotBuildFailures.inc();
    this.metrics.internalErrors.inc({ component: 'snapshot' });
    this.logger.error({ err, phase }, 'configuration build failed; Consul changes are not applied, the last good configuration stays in force');
  }

  private countDocuments(snapshot: Snapshot): void {
    this.metrics.policyDocuments.reset();
    for (const d of snapshot.policies.documents) this.metrics.policyDocuments.inc({ kind: d.kind, origin: d.origin.kind });
    this.metrics.consumers.set(Object.keys(snapshot.policies.consumers).length);
    // Canary shares and rollout steps for dashboards: set from the snapshot in force, by the process
    // that runs the control plane only, so a worker never adds a second copy.
    this.metrics.canaryWeight.reset();
    for (const [name, service] of Object.entries(snapshot.services)) {
      for (const subset of service.canary?.subsets ?? []) this.metrics.canaryWeight.set({ service: name, subset: subset.tag }, subset.effectiveWeight);
    }
    this.metrics.rolloutStep.reset();
    this.metrics.rolloutCanaryWeight.reset();
    for (const rollout of Object.values(snapshot.rollouts)) {
      this.metrics.rolloutStep.set({ service: rollout.service, state: rollout.state }, rollout.step);
      this.metrics.rolloutCanaryWeight.set({ service: rollout.service }, rollout.weight);
    }
  }
}
