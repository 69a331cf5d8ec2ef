import type { SubsetCounts } from '../core/types.ts';
import { FIGURE_BUCKETS_MS } from './rollout-figures.ts';
import type { SubsetFigures } from './rollout-judge.ts';

/**
 * What a set of routes served between two samples of the data planes' per-route counts (counts
 * since start, so the difference is the window). A worker that was replaced starts from zero, so
 * a count may go down: each difference is floored at 0 rather than read as negative traffic.
 * `routes` null: every route.
 */
export function figuresBetween(from: Readonly<Record<string, SubsetCounts>>, to: Readonly<Record<string, SubsetCounts>>, routes: ReadonlySet<string> | null): SubsetFigures {
  let requests = 0;
  let errors = 0;
  const counts = new Array<number>(FIGURE_BUCKETS_MS.length + 1).fill(0);
  for (const [route, t] of Object.entries(to)) {
    if (routes !== null && !routes.has(route)) continue;
    const f = Object.hasOwn(from, route) ? from[route] : undefined;
    requests += Math.max(0, t.requests - (f?.requests ?? 0));
    errors += Math.max(0, t.errors - (f?.errors ?? 0));
    t.buckets.forEach((c, i) => {
      if (i < counts.length) counts[i] = (counts[i] as number) + Math.max(0, c - (f?.buckets[i] ?? 0));
    });
  }
  return { requests, errors: Math.min(errors, requests), buckets: counts.map((count, i) => ({ le: i < FIGURE_BUCKETS_MS.length ? (FIGURE_BUCKETS_MS[i] as number) : Infinity, count })) };
}
