import { RollingCounts } from './circuit-breaker.ts';
import { monotonicEpochNow } from './outlier.ts';

/**
 * Envoy-style retry budget, one per route (each route has its own retry policy), kept across snapshots by the runtime: retries over
 * the last 10 s may not exceed `max(ratio × requests, minPerSecond × 10)`, so retries can add at
 * most `ratio` load to a struggling service while a quiet one can still retry a few.
 * https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/cluster/v3/circuit_breaker.proto#config-cluster-v3-circuitbreakers-thresholds-retrybudget
 * (Envoy budgets concurrent retries; a rate over 10 s needs no completion callback.)
 *
 * The window is a ring of ten 1 s buckets, the current one included (so it spans 9 to 10 s).
 * `configure(null)` means no budget: every retry is allowed (the retry policy still caps attempts).
 * Config type structurally equal to `RetriesPolicy['budget']` (policy/schema.ts).
 */

export interface RetryBudgetConfig {
  readonly ratio: number;
  readonly minPerSecond: number;
}

export interface RetryBudgetStatus {
  readonly enabled: boolean;
  /** First attempts in the window. */
  readonly requests: number;
  /** Retries allowed in the window. */
  readonly retries: number;
  /** The window's current limit on retries; null without a budget. */
  readonly limit: number | null;
}

export interface RetryBudgetOptions {
  readonly now?: () => number;
}

const WINDOW_SECONDS = 10;
const REQUESTS = 0;
const RETRIES = 1;

export class RetryBudget {
  private config: RetryBudgetConfig | null = null;
  private readonly counts = new RollingCounts(WINDOW_SECONDS, 2, 1000);
  private readonly now: () => number;

  constructor(config: RetryBudgetConfig | null = null, options: RetryBudgetOptions = {}) {
    this.now = options.now ?? monotonicEpochNow;
    this.configure(config);
  }

  /** Counts are kept across configurations. */
  configure(config: RetryBudgetConfig | null): void {
    this.config = config;
  }

  /** Every first attempt (not retries). */
  recordRequest(): void {
    this.counts.add(this.now(), REQUESTS);
  }

  /** Asks for one retry; a true answer is counted against the budget. */
  tryRetry(): boolean {
    const now = this.now();
    if (this.config !== null && this.counts.total(now, RETRIES) >= this.limit(now, this.config)) return false;
    this.counts.add(now, RETRIES);
    return true;
  }

  status(): RetryBudgetStatus {
    const now = this.now();
    return {
      enabled: this.config !== null,
      requests: this.counts.total(now, REQUESTS),
      retries: this.counts.total(now, RETRIES),
      limit: this.config === null ? null : this.limit(now, this.config),
    };
  }

  private limit(now: number, config: RetryBudgetConfig): number {
    return Math.max(config.ratio * this.counts.total(now, REQUESTS), config.minPerSecond * WINDOW_SECONDS);
  }
}
