import { monotonicEpochNow } from './outlier.ts';

/**
 * A service-level circuit breaker (closed → open → half-open → closed), one per service, kept
 * across snapshots by the runtime and `configure`d from the service's policy. Its config type is
 * declared here, structurally equal to `CircuitBreakerPolicy` (policy/schema.ts), because the
 * balancer room does not import policy.
 *
 * Semantics chosen:
 * - Closed: outcomes go into a rolling window of 10 buckets of `window / 10` ms, so the window
 *   judged spans between 90% and 100% of `window`. After each outcome, when the window holds at
 *   least `minRequests` requests and failures / requests ≥ `failureRatio`, the breaker opens.
 * - Open: `tryAcquire` fails fast with the time left, for `openFor` ms.
 * - Half-open (entered lazily, by the first look after `openFor`): at most `halfOpenProbes`
 *   probes are admitted per half-open round (probes in flight + probes that succeeded); a probe
 *   released without an outcome gives its slot back. When `halfOpenProbes` probes have succeeded
 *   the breaker closes with an empty window; one probe failure reopens it for the same `openFor`
 *   (no growth: the outlier detector already backs off per endpoint). Other requests are refused
 *   while half-open, with `retryAfterMs = openFor` (the wait if the probes fail).
 * - Outcomes of requests admitted in another state (non-probes finishing after the breaker opened,
 *   probes of an earlier round) do not move the state. A probe carries the number of the half-open
 *   round that admitted it, so a late probe of round n neither counts as a success nor frees a slot
 *   in round n + 1.
 * - Disabled (`configure(null)` or `enabled: false`): always allowed, nothing recorded, closed.
 *   Reconfiguring keeps the state; a changed `window` empties the window (bucket size changed).
 *
 * Every allowed request must end in exactly one `record` or `release` with the `probe` number it
 * was given, or a half-open breaker waits for its probe forever.
 */

export interface CircuitBreakerConfig {
  readonly enabled: boolean;
  /** ms */
  readonly window: number;
  readonly minRequests: number;
  readonly failureRatio: number;
  /** ms */
  readonly openFor: number;
  readonly halfOpenProbes: number;
  /** HTTP statuses counted as failures; `isFailureStatus` answers from it. */
  readonly statuses: readonly number[];
}

export type BreakerState = 'closed' | 'open' | 'half_open';
export type BreakerOutcome = 'success' | 'failure';

/** `probe`: 0 for a request that is not a probe, n > 0 for a probe admitted by half-open round n. */
export type Acquired = { readonly allowed: true; readonly probe: number } | { readonly allowed: false; readonly retryAfterMs: number };

export interface CircuitBreakerStatus {
  readonly enabled: boolean;
  readonly state: BreakerState;
  /** In the rolling window (closed state). */
  readonly failures: number;
  readonly requests: number;
  /** When the breaker last opened, epoch ms with the default clock; null while closed. */
  readonly openedAt: number | null;
  /** ms until an open breaker lets probes through; 0 otherwise. */
  readonly retryAfterMs: number;
  readonly probesInFlight: number;
  readonly probesSucceeded: number;
}

export interface CircuitBreakerOptions {
  readonly now?: () => number;
}

export type StateChangeListener = (state: BreakerState, previous: BreakerState) => void;

/** `probe` value of a request that is not a probe. */
export const NOT_A_PROBE = 0;

// Shared, frozen: the allowed path does not allocate (probes share one constant per round).
const ALLOWED: Acquired = Object.freeze({ allowed: true, probe: NOT_A_PROBE });

/**
 * Counts in a ring of fixed-width time buckets, with running totals: adding and reading are O(1)
 * amortised (each bucket is cleared once when time moves past it) and allocation-free.
 */
export class RollingCounts {
  private readonly counts: Float64Array;
  private readonly totals: Float64Array;
  /** Bucket number (time / width) of the newest bucket written. */
  private head = -Infinity;

  constructor(
    private readonly buckets: number,
    private readonly channels: number,
    private readonly bucketMs: number,
  ) {
    this.counts = new Float64Array(buckets * channels);
    this.totals = new Float64Array(channels);
  }

  add(now: number, channel: number, n = 1): void {
    const id = this.advance(now);
    const slot = (id % this.buckets) * this.channels + channel;
    this.counts[slot] = (this.counts[slot] ?? 0) + n;
    this.totals[channel] = (this.totals[channel] ?? 0) + n;
  }

  /** Sum over the last `buckets` buckets, the current one included. */
  total(now: number, channel: number): number {
    this.advance(now);
    return this.totals[channel] ?? 0;
  }

  reset(): void {
    this.counts.fill(0);
    this.totals.fill(0);
    this.head = -Infinity;
  }

  private advance(now: number): number {
    const id = Math.floor(now / this.bucketMs);
    if (id <= this.head) return this.head; // a clock that steps back writes into the newest bucket
    if (id - this.head >= this.buckets) {
      this.counts.fill(0);
      this.totals.fill(0);
    } else {
      for (let b = this.head + 1; b <= id; b++) {
        const base = (b % this.buckets) * this.channels;
        for (let c = 0; c < this.channels; c++) {
          this.totals[c] = (this.totals[c] ?? 0) - (this.counts[base + c] ?? 0);
          this.counts[base + c] = 0;
        }
      }
    }
    this.head = id;
    return id;
  }
}

const BUCKETS = 10;
const REQUESTS = 0;
const FAILURES = 1;

export class CircuitBreaker {
  private config: CircuitBreakerConfig | null = null;
  private failureStatuses: ReadonlySet<number> = new Set();
  private window: RollingCounts | null = null;
  private current: BreakerState = 'closed';
  private openedAt = 0;
  private probesInFlight = 0;
  private probesSucceeded = 0;
  /** Number of the current (or last) half-open round; 0 before the first. */
  private round = 0;
  /** The permit handed to every probe of the current round. */
  private probePermit: Acquired = ALLOWED;
  private readonly listeners = new Set<StateChangeListener>();
  private readonly now: () => number;

  constructor(config: CircuitBreakerConfig | null = null, options: CircuitBreakerOptions = {}) {
    this.now = options.now ?? monotonicEpochNow;
    this.configure(config);
  }

  configure(config: CircuitBreakerConfig | null): void {
    const next = config !== null && config.enabled ? config : null;
    this.failureStatuses = new Set(next?.statuses ?? []);
    if (next === null) {
      this.config = null;
      this.window = null;
      this.transition('closed');
      return;
    }
    if (this.window === null || this.config?.window !== next.window) this.window = new RollingCounts(BUCKETS, 2, next.window / BUCKETS);
    this.config = next;
  }

  get enabled(): boolean {
    return this.config !== null;
  }

  /** Whether an upstream response status counts as a failure under the current policy. */
  isFailureStatus(status: number): boolean {
    return this.failureStatuses.has(status);
  }

  /** Registers a listener (metrics, logs); returns its removal. Listeners must not throw. */
  onStateChange(listener: StateChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get state(): BreakerState {
    this.refresh(this.now());
    return this.current;
  }

  /** ms until an open breaker admits probes; 0 when not open. */
  get retryAfterMs(): number {
    const now = this.now();
    this.refresh(now);
    return this.current === 'open' && this.config !== null ? Math.max(0, this.openedAt + this.config.openFor - now) : 0;
  }

  /** Before sending a request. Allowed results are shared constants (no allocation). */
  tryAcquire(): Acquired {
    const config = this.config;
    if (config === null || this.current === 'closed') return ALLOWED;
    const now = this.now();
    this.refresh(now); // open → half_open when openFor is over; never to closed
    if (this.current === 'open') return { allowed: false, retryAfterMs: Math.max(0, this.openedAt + config.openFor - now) };
    if (this.probesInFlight + this.probesSucceeded >= config.halfOpenProbes) return { allowed: false, retryAfterMs: config.openFor };
    this.probesInFlight++;
    return this.probePermit;
  }

  /** The outcome of an allowed request; `probe` as `tryAcquire` said. */
  record(outcome: BreakerOutcome, probe: number): void {
    const config = this.config;
    if (config === null || this.window === null) return;
    const now = this.now();
    if (probe !== NOT_A_PROBE) {
      if (!this.isCurrentProbe(probe)) return;
      this.probesInFlight = Math.max(0, this.probesInFlight - 1);
      if (outcome === 'failure') {
        this.open(now);
      } else if (++this.probesSucceeded >= config.halfOpenProbes) {
        this.window.reset();
        this.transition('closed');
      }
      return;
    }
    if (this.current !== 'closed') return;
    this.window.add(now, REQUESTS);
    if (outcome === 'failure') this.window.add(now, FAILURES);
    const requests = this.window.total(now, REQUESTS);
    if (requests >= config.minRequests && this.window.total(now, FAILURES) >= config.failureRatio * requests) this.open(now);
  }

  /** An allowed request that ended without an outcome worth counting (the client went away). */
  release(probe: number): void {
    if (probe !== NOT_A_PROBE && this.isCurrentProbe(probe)) this.probesInFlight = Math.max(0, this.probesInFlight - 1);
  }

  status(): CircuitBreakerStatus {
    const now = this.now();
    this.refresh(now);
    const config = this.config;
    return {
      enabled: config !== null,
      state: this.current,
      failures: this.window?.total(now, FAILURES) ?? 0,
      requests: this.window?.total(now, REQUESTS) ?? 0,
      openedAt: this.current === 'closed' ? null : this.openedAt,
      retryAfterMs: this.current === 'open' && config !== null ? Math.max(0, this.openedAt + config.openFor - now) : 0,
      probesInFlight: this.probesInFlight,
      probesSucceeded: this.probesSucceeded,
    };
  }

  /** A probe counts only in the half-open round that admitted it. */
  private isCurrentProbe(probe: number): boolean {
    return this.current === 'half_open' && probe === this.round;
  }

  private refresh(now: number): void {
    if (this.current === 'open' && this.config !== null && now >= this.openedAt + this.config.openFor) this.transition('half_open');
  }

  private open(now: number): void {
    this.openedAt = now;
    this.transition('open');
  }

  private transition(next: BreakerState): void {
    const previous = this.current;
    this.probesInFlight = 0;
    this.probesSucceeded = 0;
    if (next === 'closed') this.window?.reset();
    if (next === previous) return;
    if (next === 'half_open') this.probePermit = Object.freeze({ allowed: true, probe: ++this.round });
    this.current = next;
    for (const listener of this.listeners) listener(next, previous);
  }
}
