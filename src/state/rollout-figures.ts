import { z } from 'zod';
import type { ParseResult } from '../policy/canary.ts';
import type { SubsetFigures } from './rollout-judge.ts';
import { parseJsonValue } from '../policy/json-value.ts';

/**
 * What each gateway saw of a service's subsets during a rollout's current window, and how the
 * leader adds them up. Every gateway publishes one record per service under rollout (a bounded
 * write rate to KV); the window is the rollout's `stepStartedAt`, so a record of an earlier step
 * (or from a gateway that has not seen the step move yet) is never added to the current one.
 */

/** Upper bounds of the latency buckets, ms; the last is +Inf (JSON has no Infinity: implied). */
export const FIGURE_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000] as const;
const MAX_SUBSETS = 16;
const MAX_RECORD_BYTES = 16 * 1024;
const COUNT = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

const subsetSchema = z
  .object({
    requests: COUNT,
    errors: COUNT,
    /** Cumulative counts per bound of FIGURE_BUCKETS_MS, then +Inf (equal to requests). */
    buckets: z.array(COUNT).length(FIGURE_BUCKETS_MS.length + 1),
  })
  .strict()
  .refine((s) => s.errors <= s.requests, 'errors cannot exceed requests')
  .refine((s) => s.buckets.every((c, i) => i === 0 || c >= (s.buckets[i - 1] as number)), 'bucket counts are cumulative')
  .refine((s) => s.buckets.at(-1) === s.requests, 'the last bucket counts every request');

export const figuresRecordSchema = z
  .object({
    gateway: z.string().min(1).max(256),
    /** The rollout window these counts belong to: its `stepStartedAt`. */
    window: z.string().min(1).max(40),
    at: z.string().max(40),
    /** By canary tag. */
    subsets: z.record(z.string().min(1).max(128), subsetSchema).refine((r) => Object.keys(r).length <= MAX_SUBSETS, `at most ${MAX_SUBSETS} subsets`),
    /** This gateway's circuit breaker for the canary's endpoints is open. */
    canaryCircuitOpen: z.boolean(),
  })
  .strict();
export type FiguresRecord = z.output<typeof figuresRecordSchema>;

export function parseFiguresRecord(text: string | null): ParseResult<FiguresRecord> {
  return parseJsonValue(text, figuresRecordSchema, MAX_RECORD_BYTES);
}

/**
 * One gateway's counts for one service's subsets in the current window. Kept per subset as plain
 * arrays: an observation is a few additions, and a record is a copy.
 */
export class SubsetRecorder {
  private readonly subsets = new Map<string, { requests: number; errors: number; buckets: number[] }>();

  constructor(
    readonly window: string,
    /** Keys counted at most (subsets of a rollout; routes for guards). */
    private readonly maxKeys: number = MAX_SUBSETS,
  ) {}

  observe(subset: string, status: number, ms: number): void {
    let s = this.subsets.get(subset);
    if (!s) {
      if (this.subsets.size >= this.maxKeys) return;
      s = { requests: 0, errors: 0, buckets: new Array<number>(FIGURE_BUCKETS_MS.length + 1).fill(0) };
      this.subsets.set(subset, s);
    }
    s.requests += 1;
    if (status >= 500) s.errors += 1;
    // Counts are stored per bucket and made cumulative in the record.
    let i = 0;
    while (i < FIGURE_BUCKETS_MS.length && ms > (FIGURE_BUCKETS_MS[i] as number)) i++;
    s.buckets[i] = (s.buckets[i] as number) + 1;
  }

  record(gateway: string, now: Date, canaryCircuitOpen: boolean): FiguresRecord {
    const subsets = Object.create(null) as Record<string, FiguresRecord['subsets'][string]>;
    for (const [tag, s] of this.subsets) {
      let running = 0;
      subsets[tag] = { requests: s.requests, errors: s.errors, buckets: s.buckets.map((c) => (running += c)) };
    }
    return { gateway, window: this.window, at: now.toISOString(), subsets, canaryCircuitOpen };
  }
}

/**
 * The fleet's figures for one subset in `window`: records of other windows are left out, and a
 * gateway that published twice counts once (its latest record).
 */
export function fleetFigures(records: readonly FiguresRecord[], window: string, subset: string): SubsetFigures & { readonly gateways: number } {
  const latest = new Map<string, FiguresRecord>();
  for (const r of records) {
    if (r.window !== window) continue;
    const seen = latest.get(r.gateway);
    if (!seen || seen.at < r.at) latest.set(r.gateway, r);
  }
  let requests = 0;
  let errors = 0;
  const counts = new Array<number>(FIGURE_BUCKETS_MS.length + 1).fill(0);
  for (const r of latest.values()) {
    const s = Object.hasOwn(r.subsets, subset) ? r.subsets[subset] : undefined;
    if (!s) continue;
    requests += s.requests;
    errors += s.errors;
    s.buckets.forEach((c, i) => (counts[i] = (counts[i] as number) + c));
  }
  const buckets = counts.map((count, i) => ({ le: i < FIGURE_BUCKETS_MS.length ? (FIGURE_BUCKETS_MS[i] as number) : Infinity, count }));
  return { requests, errors, buckets, gateways: latest.size };
}

/** An open circuit on the canary at any gateway of the window counts. */
export function anyCircuitOpen(records: readonly FiguresRecord[], window: string): boolean {
  return records.some((r) => r.window === window && r.canaryCircuitOpen);
}
