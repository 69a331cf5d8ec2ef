import { z } from 'zod';
import { ROLLOUT_DEFAULTS } from '../core/choices.ts';
import { parseDuration } from '../core/duration.ts';
import { canaryTag, formatZodIssues, type ParseResult } from './canary.ts';
import { parseJsonValue } from './json-value.ts';

/**
 * A rollout, stored at `<prefix>rollouts/<service>` and written with check-and-set: the steps the
 * canary subset's weight goes through, how long each step soaks, the criteria a step must meet
 * against the stable subset, where it stands, and every decision taken. It is data in Consul, so
 * it outlives the gateway that drives it and every gateway sees it. Values are plain JSON (times
 * in ms, instants as ISO text) so any tool can read them; this schema is the only judge of them.
 */

export const ROLLOUT_STATES = ['progressing', 'paused', 'promoted', 'rolled-back', 'aborted'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

/** A rollout in these states has ended: a new one of the same service may start. */
export function rolloutEnded(state: RolloutState): boolean {
  return state === 'promoted' || state === 'rolled-back' || state === 'aborted';
}

/** Entries kept in a rollout's history; older ones are dropped (the log and metrics keep them). */
export const MAX_HISTORY = 200;
const MAX_STEPS = 20;
const MAX_CONSUMERS = 100;
const MAX_ROLLOUT_BYTES = 256 * 1024;
const DAY_MS = 86_400_000;

const stepsSchema = z
  .array(z.number().int('steps are whole percentages').min(1, 'a step is at least 1').max(100, 'a step is at most 100'))
  .min(1, 'at least one step is required')
  .max(MAX_STEPS, `at most ${MAX_STEPS} steps`)
  .refine((s) => s.every((v, i) => i === 0 || v > (s[i - 1] as number)), 'steps must increase')
  .refine((s) => s.at(-1) === 100, 'the last step must be 100 (the canary takes all traffic when promoted)');

/** `--max-p95-increase 10%` (relative to stable) or `50ms` (absolute). */
export const p95IncreaseSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('percent'), value: z.number().min(0).max(10_000) }).strict(),
  z.object({ kind: z.literal('ms'), value: z.number().min(0).max(DAY_MS) }).strict(),
]);
export type P95Increase = z.output<typeof p95IncreaseSchema>;

export const criteriaSchema = z
  .object({
    /** Canary error rate may exceed stable's by at most this many percentage points. */
    maxErrorRateIncrease: z.number().min(0).max(100),
    maxP95Increase: p95IncreaseSchema,
    /** The p95 criterion never fails a canary within this many ms of stable (noise on fast services). */
    p95SlackMs: z.number().min(0).max(DAY_MS),
    /** Canary requests a soak window must see before it can be judged. */
    minRequests: z.number().int().min(1).max(1_000_000_000),
  })
  .strict();
export type RolloutCriteria = z.output<typeof criteriaSchema>;

const decisionSchema = z
  .object({
    at: z.string().max(40),
    /** What happened: started, advanced, promoted, rolled-back, paused, resumed, aborted, waiting. */
    event: z.string().min(1).max(40),
    step: z.number().int().min(0).max(MAX_STEPS),
    weight: z.number().min(0).max(100),
    reason: z.string().max(2000).optional(),
    /** The figures the decision was taken on, by subset. */
    figures: z.record(z.string().max(64), z.number()).optional(),
    /** Which gateway took it. */
    by: z.string().max(256).optional(),
  })
  .strict();
export type RolloutDecision = z.output<typeof decisionSchema>;

export const rolloutSchema = z
  .object({
    service: z.string().min(1).max(256),
    canary: canaryTag,
    stable: canaryTag,
    steps: stepsSchema,
    soakMs: z.number().int().min(1_000, 'soak is at least 1s').max(7 * DAY_MS, 'soak is at most 168h'),
    criteria: criteriaSchema,
    /** API-key consumers or JWT subjects that get the canary before any share of general traffic. */
    consumers: z.array(z.string().min(1).max(256)).max(MAX_CONSUMERS),
    state: z.enum(ROLLOUT_STATES),
    /** Index into `steps` of the step in force. */
    step: z.number().int().min(0).max(MAX_STEPS - 1),
    stepStartedAt: z.string().max(40),
    startedAt: z.string().max(40),
    history: z.array(decisionSchema).max(MAX_HISTORY),
  })
  .strict()
  .refine((r) => r.canary !== r.stable, { message: 'canary and stable must be different tags', path: ['canary'] })
  .refine((r) => r.step < r.steps.length, { message: 'step is past the last step', path: ['step'] });

export type Rollout = z.output<typeof rolloutSchema>;

export function parseRolloutValue(text: string | null): ParseResult<Rollout> {
  return parseJsonValue(text, rolloutSchema, MAX_ROLLOUT_BYTES, 'not JSON (rollouts are written by `cgw rollout start`)');
}

/** The flags of `cgw rollout start`, as typed. */
export interface RolloutFlags {
  readonly canary: string;
  readonly stable: string;
  readonly steps?: string;
  readonly soak?: string;
  readonly maxErrorRateIncrease?: string;
  readonly maxP95Increase?: string;
  readonly p95Slack?: string;
  readonly minRequests?: string;
  readonly consumers?: string;
}


/**
 * A new rollout from the flags, at its first step. Each flag is read as typed and its refusal
 * names it; the result is checked by the same schema as the values the gateways read.
 */
export function newRollout(service: string, flags: RolloutFlags, now: Date, by?: string): ParseResult<Rollout> {
  const steps = (flags.steps ?? ROLLOUT_DEFAULTS.steps).split(',').map((s) => s.trim());
  if (steps.some((s) => !/^\d{1,3}$/.test(s))) return { ok: false, error: `--steps: "${flags.steps ?? ''}" is not a list of whole percentages such as 5,25,50,100` };
  const soakMs = parseDuration(flags.soak ?? ROLLOUT_DEFAULTS.soak);
  if (soakMs === undefined) return { ok: false, error: `--soak: "${flags.soak ?? ''}" is not a duration (e.g. 30s, 5m)` };
  const slackMs = parseDuration(flags.p95Slack ?? ROLLOUT_DEFAULTS.p95Slack);
  if (slackMs === undefined) return { ok: false, error: `--p95-slack: "${flags.p95Slack ?? ''}" is not a duration (e.g. 20ms)` };
  const errorRate = plainNumber(flags.maxErrorRateIncrease ?? ROLLOUT_DEFAULTS.maxErrorRateIncrease);
  if (errorRate === undefined) return { ok: false, error: `--max-error-rate-increase: "${flags.maxErrorRateIncrease ?? ''}" is not a number of percentage points (e.g. 0.5)` };
  const p95 = parseP95Increase(flags.maxP95Increase ?? ROLLOUT_DEFAULTS.maxP95Increase);
  if (p95 === undefined) return { ok: false, error: `--max-p95-increase: "${flags.maxP95Increase ?? ''}" is neither a percentage (10%) nor a duration (50ms)` };
  const minRequests = plainNumber(flags.minRequests ?? ROLLOUT_DEFAULTS.minRequests);
  if (minRequests === undefined || !Number.isInteger(minRequests)) return { ok: false, error: `--min-requests: "${flags.minRequests ?? ''}" is not a whole number` };
  const consumers = flags.consumers === undefined ? [] : flags.consumers.split(',').map((c) => c.trim()).filter((c) => c !== '');
  const at = now.toISOString();
  const candidate = {
    service,
    canary: flags.canary,
    stable: flags.stable,
    steps: steps.map(Number),
    soakMs,
    criteria: { maxErrorRateIncrease: errorRate, maxP95Increase: p95, p95SlackMs: slackMs, minRequests },
    consumers: [...new Set(consumers)],
    state: 'progressing',
    step: 0,
    stepStartedAt: at,
    startedAt: at,
    history: [{ at, event: 'started', step: 0, weight: Number(steps[0]), ...(by ? { by } : {}) }],
  };
  const parsed = rolloutSchema.safeParse(candidate);
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, error: formatZodIssues(parsed.error) };
}

export function parseP95Increase(text: string): P95Increase | undefined {
  const trimmed = text.trim();
  if (trimmed.endsWith('%')) {
    const value = plainNumber(trimmed.slice(0, -1));
    return value === undefined ? undefined : { kind: 'percent', value };
  }
  const ms = parseDuration(trimmed);
  return ms === undefined ? undefined : { kind: 'ms', value: ms };
}

/** Whole or decimal, no sign, exponent or unit: how people write these on a command line. */
function plainNumber(text: string): number | undefined {
  return /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) : undefined;
}

/** `--guard` and the criteria flags of `cgw policy push`, read like a rollout's. */
export function guardCriteria(window: string, flags: Pick<RolloutFlags, 'maxErrorRateIncrease' | 'maxP95Increase' | 'p95Slack' | 'minRequests'>): ParseResult<{ windowMs: number; criteria: RolloutCriteria }> {
  const windowMs = parseDuration(window);
  if (windowMs === undefined || windowMs < 1_000 || windowMs > 3_600_000) return { ok: false, error: `--guard: "${window}" is not a duration between 1s and 1h` };
  const made = newRollout('guard', { canary: 'after', stable: 'before', steps: '100', soak: window, ...flags }, new Date());
  return made.ok ? { ok: true, value: { windowMs, criteria: made.value.criteria } } : made;
}
