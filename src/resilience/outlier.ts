/**
 * Passive outlier detection, one detector per service (Envoy's consecutive-5xx detector, cut down):
 * `consecutiveFailures` failures in a row eject an endpoint for `baseEjection × 2^(k-1)`, capped at
 * `maxEjection`, where k counts its ejections; pickers skip ejected endpoints until their time is up.
 * https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/outlier
 *
 * The detector outlives snapshots: the runtime keeps one per service name, `configure`s it with the
 * service's policy and keeps its endpoint set current (`setEndpoints`) on every build. Its
 * config type is declared here, structurally equal to `OutlierPolicy` (policy/schema.ts), because
 * the balancer room does not import policy.
 *
 * Semantics chosen:
 * - Ejection cap: at most `floor(endpoints × maxEjectedPercent / 100)` endpoints are ejected at
 *   once, so one endpoint at 50% is never ejected, two endpoints at 50% allow one. An endpoint that
 *   reaches the threshold while the cap is full stays in, and every further failure tries again.
 * - Decay: k (`ejections`) returns to 0 once an endpoint has been back for `maxEjection` without
 *   being ejected again; the next ejection then lasts `baseEjection` again.
 * - Outcomes recorded while an endpoint is ejected (requests already in flight, or picked in panic
 *   mode) neither extend nor repeat its ejection; it comes back with a clean failure count.
 * - Returns are lazy: `isEjected` compares with the clock, so `onReturn` fires the first time the
 *   detector is asked about the endpoint (or in `status`, `record`, `ejectedCount`) after its time.
 * - Disabling (`enabled: false` or `configure(null)`) returns every ejected endpoint at once.
 */

export interface OutlierConfig {
  readonly enabled: boolean;
  readonly consecutiveFailures: number;
  /** HTTP statuses counted as failures; `isFailureStatus` answers from it. */
  readonly statuses: readonly number[];
  /** ms */
  readonly baseEjection: number;
  /** ms */
  readonly maxEjection: number;
  readonly maxEjectedPercent: number;
}

export type Outcome = 'success' | 'failure';

export interface EjectionInfo {
  /** When the endpoint comes back, in the detector's clock (epoch ms by default). */
  readonly until: number;
  readonly durationMs: number;
  /** k: this ejection's number in the current streak (1 for the first). */
  readonly ejections: number;
}

export type ReturnReason = 'expired' | 'removed' | 'disabled';

export interface OutlierOptions {
  /** Milliseconds; the default is monotonic yet on the epoch scale, so `ejectedUntil` is a date. */
  readonly now?: () => number;
  /** Must not throw: it may run on the request path. */
  readonly onEject?: (endpointKey: string, info: EjectionInfo) => void;
  /** Must not throw: it may run on the request path (lazy return inside `isEjected`). */
  readonly onReturn?: (endpointKey: string, reason: ReturnReason) => void;
}

export interface OutlierEndpointStatus {
  readonly ejected: boolean;
  /** Epoch ms (with the default clock), null when not ejected. */
  readonly ejectedUntil: number | null;
  /** k after decay: ejections in the current streak, which sets the next ejection's length. */
  readonly ejections: number;
  readonly consecutiveFailures: number;
}

interface EndpointState {
  consecutiveFailures: number;
  /** k */
  ejections: number;
  /** 0 when not ejected. */
  ejectedUntil: number;
  /** When the last ejection ended (or was due to end); -Infinity before any. */
  returnedAt: number;
}

/** Monotonic milliseconds on the epoch scale: immune to wall-clock steps, still readable as a date. */
export const monotonicEpochNow = (): number => performance.timeOrigin + performance.now();

export class OutlierDetector {
  private config: OutlierConfig | null = null;
  private failureStatuses: ReadonlySet<number> = new Set();
  private readonly endpoints = new Map<string, EndpointState>();
  /** Ejected endpoints, including ones whose time is up but that were not asked about yet. */
  private ejected = 0;
  private readonly now: () => number;
  private readonly onEject: OutlierOptions['onEject'];
  private readonly onReturn: OutlierOptions['onReturn'];

  constructor(config: OutlierConfig | null = null, options: OutlierOptions = {}) {
    this.now = options.now ?? monotonicEpochNow;
    this.onEject = options.onEject;
    this.onReturn = options.onReturn;
    this.configure(config);
  }

  /** New policy; state (counts, ejections in progress) is kept unless detection is turned off. */
  configure(config: OutlierConfig | null): void {
    this.config = config !== null && config.enabled ? config : null;
    this.failureStatuses = new Set(this.config?.statuses ?? []);
    if (this.config === null) {
      for (const [key, state] of this.endpoints) {
        state.consecutiveFailures = 0;
        if (state.ejectedUntil !== 0) this.unEject(key, state, 'disabled');
      }
    }
  }

  get enabled(): boolean {
    return this.config !== null;
  }

  /** Whether an upstream response status counts as a failure under the current policy. */
  isFailureStatus(status: number): boolean {
    return this.failureStatuses.has(status);
  }

  /**
   * The current endpoint set (keys of the service's admitted endpoints); idempotent. State of
   * endpoints that left is forgotten (an ejected one returns with reason `removed`), so an endpoint
   * that comes back later starts clean.
   */
  setEndpoints(keys: Iterable<string>): void {
    const live = new Set(keys);
    for (const [key, state] of this.endpoints) {
      if (live.has(key)) continue;
      this.endpoints.delete(key);
      if (state.ejectedUntil !== 0) {
        this.ejected--;
        this.onReturn?.(key, 'removed');
      }
    }
    for (const key of live) {
      if (!this.endpoints.has(key)) this.endpoints.set(key, { consecutiveFailures: 0, ejections: 0, ejectedUntil: 0, returnedAt: -Infinity });
    }
  }

  /** Outcome of one request to an endpoint. Keys outside the endpoint set are ignored. */
  record(endpointKey: string, outcome: Outcome): void {
    const config = this.config;
    if (config === null) return;
    const state = this.endpoints.get(endpointKey);
    if (state === undefined) return;
    const now = this.now();
    if (state.ejectedUntil !== 0) {
      if (state.ejectedUntil > now) return;
      this.unEject(endpointKey, state, 'expired');
    }
    if (outcome === 'success') {
      state.consecutiveFailures = 0;
      return;
    }
    state.consecutiveFailures++;
    if (state.consecutiveFailures < config.consecutiveFailures) return;
    this.expire(now);
    if (this.ejected >= this.maxEjected(config)) return; // cap full: try again on the next failure
    this.decay(state, now, config);
    state.ejections++;
    const durationMs = Math.min(config.baseEjection * 2 ** (state.ejections - 1), config.maxEjection);
    state.ejectedUntil = now + durationMs;
    state.consecutiveFailures = 0;
    this.ejected++;
    this.onEject?.(endpointKey, { until: state.ejectedUntil, durationMs, ejections: state.ejections });
  }

  /** O(1) and allocation-free; the request path calls it for every candidate endpoint. */
  isEjected(endpointKey: string): boolean {
    if (this.ejected === 0) return false;
    const state = this.endpoints.get(endpointKey);
    if (state === undefined || state.ejectedUntil === 0) return false;
    if (state.ejectedUntil > this.now()) return true;
    this.unEject(endpointKey, state, 'expired');
    return false;
  }

  /**
   * False when no endpoint is ejected, so pickers can take their plain path. May be true for a
   * moment after the last ejection ended (returns are lazy); `isEjected` is then false anyway.
   */
  get hasEjected(): boolean {
    return this.ejected > 0;
  }

  /** Endpoints ejected now (returns those whose time is up first). */
  get ejectedCount(): number {
    this.expire(this.now());
    return this.ejected;
  }

  /** Per endpoint, for the admin API; plain JSON. */
  status(): Record<string, OutlierEndpointStatus> {
    const now = this.now();
    this.expire(now);
    const out: Record<string, OutlierEndpointStatus> = {};
    for (const [key, state] of this.endpoints) {
      if (this.config !== null) this.decay(state, now, this.config);
      const ejected = state.ejectedUntil !== 0;
      out[key] = {
        ejected,
        ejectedUntil: ejected ? state.ejectedUntil : null,
        ejections: state.ejections,
        consecutiveFailures: state.consecutiveFailures,
      };
    }
    return out;
  }

  private maxEjected(config: OutlierConfig): number {
    return Math.floor((this.endpoints.size * config.maxEjectedPercent) / 100);
  }

  /** Resets k once the endpoint has been back for maxEjection without another ejection. */
  private decay(state: EndpointState, now: number, config: OutlierConfig): void {
    if (state.ejections > 0 && state.ejectedUntil === 0 && now - state.returnedAt >= config.maxEjection) state.ejections = 0;
  }

  private expire(now: number): void {
    if (this.ejected === 0) return;
    for (const [key, state] of this.endpoints) {
      if (state.ejectedUntil !== 0 && state.ejectedUntil <= now) this.unEject(key, state, 'expired');
    }
  }

  private unEject(key: string, state: EndpointState, reason: ReturnReason): void {
    // An expired ejection ended when it was due, not when somebody noticed: decay counts from there.
    state.returnedAt = reason === 'expired' ? state.ejectedUntil : this.now();
    state.ejectedUntil = 0;
    state.consecutiveFailures = 0;
    this.ejected--;
    this.onReturn?.(key, reason);
  }
}
