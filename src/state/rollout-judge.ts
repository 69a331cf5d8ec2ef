import type { RolloutCriteria } from '../policy/rollout.ts';

/**
 * How a canary step is judged against the stable subset over one soak window, from what every
 * gateway of the fleet saw (summed before it gets here). Pure, so every criterion is a table test.
 * The order is the order of severity: an open circuit fails at once, too little traffic waits,
 * then the error rate, then latency. Flagger and Argo Rollouts compare each metric with a
 * threshold; here the threshold is relative to stable in the same window, so a slow backend day
 * does not fail a healthy canary.
 */

/** One subset's traffic in a window. `buckets` are cumulative counts per upper bound (ms), ascending. */
export interface SubsetFigures {
  readonly requests: number;
  /** Answers with a 5xx status, gateway errors included. */
  readonly errors: number;
  readonly buckets: readonly { readonly le: number; readonly count: number }[];
}

export type Verdict =
  | { readonly verdict: 'pass'; readonly figures: JudgedFigures }
  | { readonly verdict: 'wait'; readonly reason: string; readonly figures: JudgedFigures }
  | { readonly verdict: 'fail'; readonly criterion: 'circuit' | 'error-rate' | 'p95'; readonly reason: string; readonly figures: JudgedFigures };

export interface JudgedFigures {
  readonly canaryRequests: number;
  readonly stableRequests: number;
  /** Percent of requests that were 5xx. */
  readonly canaryErrorRate: number;
  readonly stableErrorRate: number;
  /** null when the subset had no request in the window. */
  readonly canaryP95Ms: number | null;
  readonly stableP95Ms: number | null;
  /** The largest canary p95 the criteria allow, or null when stable has none to compare with. */
  readonly allowedP95Ms: number | null;
}

export function judgeStep(criteria: RolloutCriteria, canary: SubsetFigures, stable: SubsetFigures, canaryCircuitOpen: boolean): Verdict {
  const canaryErrorRate = rate(canary);
  const stableErrorRate = rate(stable);
  const canaryP95Ms = quantile(canary.buckets, 0.95);
  const stableP95Ms = quantile(stable.buckets, 0.95);
  const allowedP95Ms = stableP95Ms === null ? null : allowedP95(criteria, stableP95Ms);
  const figures: JudgedFigures = { canaryRequests: canary.requests, stableRequests: stable.requests, canaryErrorRate, stableErrorRate, canaryP95Ms, stableP95Ms, allowedP95Ms };
  if (canaryCircuitOpen) return { verdict: 'fail', criterion: 'circuit', reason: 'the canary subset has an open circuit breaker', figures };
  if (canary.requests < criteria.minRequests) {
    return { verdict: 'wait', reason: `${canary.requests} canary requests in the window; at least ${criteria.minRequests} are needed to judge`, figures };
  }
  const increase = canaryErrorRate - stableErrorRate;
  if (increase > criteria.maxErrorRateIncrease) {
    return {
      verdict: 'fail',
      criterion: 'error-rate',
      reason: `canary error rate ${fixed(canaryErrorRate)}% is ${fixed(increase)} points above stable's ${fixed(stableErrorRate)}% (at most ${criteria.maxErrorRateIncrease} allowed)`,
      figures,
    };
  }
  // Without stable traffic there is nothing to compare latency with: the step is judged on errors.
  if (canaryP95Ms !== null && allowedP95Ms !== null && canaryP95Ms > allowedP95Ms) {
    return {
      verdict: 'fail',
      criterion: 'p95',
      reason: `canary p95 ${fixed(canaryP95Ms)} ms is above ${fixed(allowedP95Ms)} ms (stable ${fixed(stableP95Ms ?? 0)} ms plus the larger of ${describeIncrease(criteria)} and the ${criteria.p95SlackMs} ms slack)`,
      figures,
    };
  }
  return { verdict: 'pass', figures };
}

/** The largest canary p95 allowed: stable's plus the larger of the configured increase and the slack. */
export function allowedP95(criteria: RolloutCriteria, stableP95Ms: number): number {
  const increase = criteria.maxP95Increase.kind === 'percent' ? (stableP95Ms * criteria.maxP95Increase.value) / 100 : criteria.maxP95Increase.value;
  return stableP95Ms + Math.max(increase, criteria.p95SlackMs);
}

/**
 * The q-quantile of a cumulative histogram, interpolated linearly within the bucket it falls in
 * (Prometheus's histogram_quantile does the same). Above the last finite bound the last bound is
 * the answer, as Prometheus answers; null when there is no observation.
 */
export function quantile(buckets: SubsetFigures['buckets'], q: number): number | null {
  const total = buckets.at(-1)?.count ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const b of buckets) {
    if (b.count >= rank) {
      if (!Number.isFinite(b.le)) return lowerBound;
      const inBucket = b.count - lowerCount;
      return inBucket <= 0 ? b.le : lowerBound + ((b.le - lowerBound) * (rank - lowerCount)) / inBucket;
    }
    lowerBound = Number.isFinite(b.le) ? b.le : lowerBound;
    lowerCount = b.count;
  }
  return lowerBound;
}

function rate(f: SubsetFigures): number {
  return f.requests > 0 ? (Math.min(f.errors, f.requests) * 100) / f.requests : 0;
}

function describeIncrease(criteria: RolloutCriteria): string {
  return criteria.maxP95Increase.kind === 'percent' ? `${criteria.maxP95Increase.value}%` : `${criteria.maxP95Increase.value} ms`;
}

function fixed(n: number): string {
  return String(Math.round(n * 100) / 100);
}
