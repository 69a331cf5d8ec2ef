import { Backoff } from '../core/backoff.ts';
import { describeError } from '../core/errors.ts';
import { CGW_VERSION, FLEET_META, type RegistrationStatus } from '../core/fleet.ts';
import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { ConsulClient } from './client.ts';

/**
 * The gateway's own entry in Consul's catalog (service `cgw` by default), so `cgw fleet` can list
 * every gateway with the snapshot it runs. Agent API (Consul docs, "Service - Agent HTTP API" and
 * "Check - Agent HTTP API"), measured on Consul 1.8.7:
 *
 * - `PUT /v1/agent/service/register` with the same definition is idempotent; changing Meta moves the
 *   catalog index (every blocking query on `/v1/catalog/services` wakes), so it is written only
 *   when the meta changed, at most once per `minRegisterIntervalMs`. `/v1/catalog/services` lists
 *   names and tags only, so the gateways' own catalog watches see the same text and hand nothing on.
 * - A TTL check registered with `Status: passing` stays passing across re-registration (the
 *   default is critical). `PUT /v1/agent/check/pass/<id>` with an unchanged status and output
 *   writes nothing to the servers, so passing every TTL/3 costs the cluster nothing; no `note`
 *   is sent (a changing output would be synced).
 * - `DeregisterCriticalServiceAfter` lets Consul remove a gateway that died without draining
 *   (the reaper runs every 30 s, so it takes that long again at most).
 *
 * Failures (agent down, ACL denial) are logged once per episode, counted, retried with backoff and
 * shown by `cgw status`; they never touch serving.
 */

export interface SelfFacts {
  readonly snapshot: string;
  /** Epoch ms since when this gateway runs `snapshot`. */
  readonly snapshotSince: number;
  readonly appliedIndex: number;
  /** Every data plane runs the snapshot in force: the check passes; otherwise it warns. */
  readonly ready: boolean;
}

export interface SelfRegistrationOptions {
  /** A client of its own (one connection): parked blocking queries must not delay a check pass past its TTL. */
  readonly client: ConsulClient;
  readonly service: string;
  readonly gatewayId: string;
  readonly address: string;
  readonly port: number;
  readonly admin: string;
  /** undefined until the first snapshot is in force (nothing is registered before). */
  readonly facts: () => SelfFacts | undefined;
  readonly ttlMs: number;
  readonly deregisterCriticalAfter: string;
  readonly minRegisterIntervalMs?: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

/** An agent call answers in milliseconds; this bounds a hung one well inside the TTL. */
const CALL_TIMEOUT_MS = 3_000;
const DEREGISTER_TIMEOUT_MS = 3_000;

/** `cgw-<gateway id>`: the Consul service ID, stable across restarts of the same gateway. */
export function selfServiceId(gatewayId: string): string {
  return `cgw-${gatewayId}`;
}

/** Meta values the gateway publishes; strings, as Consul stores them. */
export function selfMeta(o: Pick<SelfRegistrationOptions, 'gatewayId' | 'admin'>, facts: SelfFacts): Record<string, string> {
  return {
    [FLEET_META.version]: CGW_VERSION,
    [FLEET_META.gatewayId]: o.gatewayId,
    [FLEET_META.snapshot]: facts.snapshot,
    [FLEET_META.snapshotSince]: String(facts.snapshotSince),
    [FLEET_META.appliedIndex]: String(facts.appliedIndex),
    [FLEET_META.admin]: o.admin,
  };
}

type Operation = 'register' | 'pass' | 'deregister';

export class SelfRegistration {
  readonly serviceId: string;
  private readonly checkId: string;
  private readonly passIntervalMs: number;
  private readonly minRegisterIntervalMs: number;
  private readonly backoff = new Backoff(1_000, 30_000);
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** A change arrived while a call was in flight: run again at once after it. */
  private again = false;
  private stopped = false;
  private state: RegistrationStatus['state'] = 'pending';
  /** What the agent holds, as last written; undefined: (re-)register on the next tick. */
  private registeredMeta: string | undefined;
  private registeredCheck: 'passing' | 'warning' | undefined;
  private lastRegisterAt = 0;
  private meta: Record<string, string> | null = null;
  private failures = 0;
  private consecutiveFailures = 0;
  private lastError: string | null = null;
  private lastSuccessAt: number | null = null;

  constructor(private readonly options: SelfRegistrationOptions) {
    this.serviceId = selfServiceId(options.gatewayId);
    this.checkId = `service:${this.serviceId}`;
    this.passIntervalMs = Math.max(500, Math.floor(options.ttlMs / 3));
    this.minRegisterIntervalMs = options.minRegisterIntervalMs ?? 1_000;
  }

  start(): void {
    this.schedule(0);
  }

  /** The snapshot or readiness changed: write it soon (bounded by the minimum interval). */
  notify(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    // While backing off after a failure, the backoff decides.
    if (this.consecutiveFailures === 0) this.schedule(0);
  }

  status(): RegistrationStatus {
    return {
      state: this.state,
      service: this.options.service,
      serviceId: this.serviceId,
      address: `${this.options.address}:${this.options.port}`,
      failures: this.failures,
      consecutiveFailures: this.consecutiveFailures,
      lastError: this.lastError,
      lastSuccessAt: this.lastSuccessAt,
      meta: this.meta,
    };
  }

  /** Drain: leave the catalog first, so `cgw fleet` stops listing a gateway that is going away. */
  async deregister(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    if (this.registeredMeta === undefined && this.state !== 'failing') {
      this.state = 'deregistered';
      return;
    }
    try {
      await this.options.client.put(`/v1/agent/service/deregister/${encodeURIComponent(this.serviceId)}`, undefined, { timeoutMs: DEREGISTER_TIMEOUT_MS });
      this.state = 'deregistered';
      this.options.logger.info({ serviceId: this.serviceId }, 'deregistered from Consul');
    } catch (err) {
      this.failed('deregister', err);
    }
  }

  /** Stops the loop without deregistering (a drain deregisters first). */
  close(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.abort.abort();
  }

  private schedule(ms: number): void {
    clearTimeout(this.timer);
    if (this.stopped) return;
    this.timer = setTimeout(() => this.run(), ms);
    this.timer.unref();
  }

  private run(): void {
    if (this.running || this.stopped) return;
    this.running = this.tick()
      .catch((err: unknown) => {
        // A bug here must not end the heartbeat: it counts as a failure and is retried.
        this.failed('register', err);
        this.registeredMeta = undefined;
        this.schedule(this.backoff.next());
      })
      .finally(() => {
        this.running = undefined;
        if (this.again && !this.stopped && this.consecutiveFailures === 0) {
          this.again = false;
          this.schedule(0);
        }
      });
  }

  private async tick(): Promise<void> {
    const facts = this.options.facts();
    if (!facts) {
      this.schedule(this.passIntervalMs);
      return;
    }
    const meta = selfMeta(this.options, facts);
    const metaKey = JSON.stringify(meta);
    const check = facts.ready ? 'passing' : 'warning';
    const now = Date.now();
    if (this.registeredMeta === metaKey && this.registeredCheck === check) {
      await this.call('pass', () => this.options.client.put(`/v1/agent/check/${check === 'passing' ? 'pass' : 'warn'}/${encodeURIComponent(this.checkId)}`, undefined, this.callOptions()));
      return;
    }
    const wait = this.lastRegisterAt + this.minRegisterIntervalMs - now;
    if (this.registeredMeta !== undefined && wait > 0) {
      // Meta changes in bursts (a rollout step, churn) are written once per interval; the check
      // keeps passing meanwhile, at its own pace (a burst of changes is not a burst of passes).
      const passDue = (this.lastSuccessAt ?? 0) + this.passIntervalMs - now;
      if (passDue > 0) {
        this.schedule(Math.min(wait, passDue));
        return;
      }
      const passed = await this.call('pass', () => this.options.client.put(`/v1/agent/check/${this.registeredCheck === 'warning' ? 'warn' : 'pass'}/${encodeURIComponent(this.checkId)}`, undefined, this.callOptions()));
      if (passed) this.schedule(Math.min(wait, this.passIntervalMs));
      return;
    }
    this.lastRegisterAt = now;
    const ok = await this.call('register', () => this.options.client.put('/v1/agent/service/register', this.definition(meta, check), this.callOptions()));
    if (ok) {
      if (this.registeredMeta === undefined) this.options.logger.info({ service: this.options.service, serviceId: this.serviceId }, 'registered in Consul');
      this.registeredMeta = metaKey;
      this.registeredCheck = check;
      this.meta = meta;
    }
  }

  private callOptions(): { timeoutMs: number; signal: AbortSignal } {
    return { timeoutMs: CALL_TIMEOUT_MS, signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(CALL_TIMEOUT_MS)]) };
  }

  private definition(meta: Record<string, string>, check: 'passing' | 'warning') {
    return {
      ID: this.serviceId,
      Name: this.options.service,
      Address: this.options.address,
      Port: this.options.port,
      Tags: [],
      Meta: meta,
      Check: {
        CheckID: this.checkId,
        Name: 'cgw gateway heartbeat',
        Notes: `passed every ${this.passIntervalMs / 1000}s by the gateway while it runs; critical when it stops (a stopped or frozen process)`,
        TTL: `${this.options.ttlMs / 1000}s`,
        Status: check,
        DeregisterCriticalServiceAfter: this.options.deregisterCriticalAfter,
      },
    };
  }

  private async call(operation: Operation, send: () => Promise<void>): Promise<boolean> {
    try {
      await send();
    } catch (err) {
      if (this.stopped) return false;
      this.failed(operation, err);
      // Whatever the agent lost (a restart forgets services registered over HTTP), registering again restores it.
      this.registeredMeta = undefined;
      this.schedule(this.backoff.next());
      return false;
    }
    if (this.consecutiveFailures > 0) this.options.logger.info({ serviceId: this.serviceId, failures: this.consecutiveFailures }, 'Consul registration works again');
    this.consecutiveFailures = 0;
    this.lastError = null;
    this.lastSuccessAt = Date.now();
    this.backoff.reset();
    this.state = 'registered';
    this.schedule(this.passIntervalMs);
    return true;
  }

  private failed(operation: Operation, err: unknown): void {
    this.failures += 1;
    this.consecutiveFailures += 1;
    this.lastError = `${operation}: ${describeError(err)}`;
    this.state = 'failing';
    this.options.metrics.selfRegistrationFailures.inc({ operation });
    const fields = { serviceId: this.serviceId, operation, err: describeError(err) };
    if (this.consecutiveFailures === 1) this.options.logger.warn(fields, 'Consul registration of this gateway failed; retrying with backoff (serving is not affected)');
    else this.options.logger.debug(fields, 'Consul registration still failing');
  }
}
