import { z } from 'zod';
import { describeError } from '../core/errors.ts';
import { checkJsonBounds, ParseMemo } from './value-bounds.ts';

/**
 * Canary weights, stored at `<prefix>canary/<service>` as `{"weights": {"<tag>": <0-100>, ...}}`.
 * The same schema validates KV values the gateway reads and `cgw canary set` arguments, so the CLI
 * can never write what the gateway would reject.
 */
export const canaryTag = z
  .string()
  .min(1, 'tag must not be empty')
  .max(128, 'tag is longer than 128 characters')
  .regex(/^[^\s=,]+$/, 'tag must not contain spaces, "=" or ","');

export const canaryWeightsSchema = z
  .object({
    weights: z
      .record(z.string(), z.number().min(0, 'weight must be >= 0').max(100, 'weight must be <= 100'))
      .refine((w) => Object.keys(w).length > 0, 'at least one tag is required')
      // Checked here rather than as the record's key schema, whose messages zod replaces with
      // "Invalid key in record".
      .superRefine((w, ctx) => {
        for (const tag of Object.keys(w)) {
          const checked = canaryTag.safeParse(tag);
          if (!checked.success) ctx.addIssue({ code: 'custom', path: [tag], message: checked.error.issues[0]?.message ?? 'invalid tag' });
        }
      }),
  })
  .strict()
  .refine((c) => Math.abs(Object.values(c.weights).reduce((a, b) => a + b, 0) - 100) < 1e-6, {
    message: 'weights must sum to 100',
    path: ['weights'],
  });

export type CanaryWeights = z.output<typeof canaryWeightsSchema>;

export type ParseResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: string };

export function formatZodIssues(error: z.ZodError): string {
  return error.issues
    .map((i) => (i.path.length ? `${i.path.map(String).join('.')}: ${i.message}` : i.message))
    .join('; ');
}

/** A canary value names a few tags; anything near this size is not one. */
const MAX_CANARY_BYTES = 64 * 1024;
const canaryMemo = new ParseMemo<ParseResult<CanaryWeights>>();

/** Every rebuild reads every canary key: a value seen before is not parsed again. */
export function parseCanaryValue(text: string | null): ParseResult<CanaryWeights> {
  if (text === null || text.trim() === '') return { ok: false, error: 'value is empty' };
  return canaryMemo.get(text, parseCanaryText);
}

function parseCanaryText(text: string): ParseResult<CanaryWeights> {
  const bounds = checkJsonBounds(text, MAX_CANARY_BYTES);
  if (!bounds.ok) return { ok: false, error: `value is ${bounds.error}; refused before parsing` };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `not JSON: ${describeError(err)}` };
  }
  const parsed = canaryWeightsSchema.safeParse(json);
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, error: formatZodIssues(parsed.error) };
}

/** A weight as people write it on the command line: whole or decimal, no sign, exponent or unit. */
const PLAIN_WEIGHT = /^\d+(\.\d+)?$/;

const round = (n: number): number => Math.round(n * 1e6) / 1e6;

/**
 * `["v1=90", "v2=10"]` → canary weights, with the same rules as KV values. Each refusal names the
 * argument as typed and says what is wrong with it (a negative weight is out of range, not "not a
 * number"; 1e2 is a number, just not written the way weights are).
 */
export function parseCanaryArgs(args: readonly string[]): ParseResult<CanaryWeights> {
  if (args.length === 0) return { ok: false, error: 'at least one tag is required: give tag=weight arguments, e.g. v1=90 v2=10' };
  const weights: Record<string, number> = {};
  const given = new Map<string, string>();
  for (const arg of args) {
    const cut = arg.indexOf('=');
    if (cut < 0) return { ok: false, error: `"${arg}" is not tag=weight (e.g. ${arg.trim() || 'v2'}=10)` };
    const tag = arg.slice(0, cut);
    const raw = arg.slice(cut + 1);
    if (tag === '') return { ok: false, error: `"${arg}" is not tag=weight: the tag before "=" is missing` };
    if (raw === '') return { ok: false, error: `"${arg}" is not tag=weight: the weight after "=" is missing` };
    const tagCheck = canaryTag.safeParse(tag);
    if (!tagCheck.success) return { ok: false, error: `"${arg}": ${tagCheck.error.issues[0]?.message ?? 'invalid tag'}` };
    const weight = weightOf(arg, tag, raw);
    if (typeof weight === 'string') return { ok: false, error: weight };
    const earlier = given.get(tag);
    if (earlier !== undefined) return { ok: false, error: `tag "${tag}" given twice ("${earlier}" and "${arg}"); tags are case-sensitive, each may appear once` };
    given.set(tag, arg);
    weights[tag] = weight;
  }
  const sum = round(Object.values(weights).reduce((a, b) => a + b, 0));
  if (Math.abs(sum - 100) >= 1e-6) return { ok: false, error: `weights must sum to 100, not ${sum} (${args.join(' ')})` };
  // The gateway's own schema has the last word, so the CLI never writes what the gateway refuses.
  const parsed = canaryWeightsSchema.safeParse({ weights });
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, error: formatZodIssues(parsed.error) };
}

/** The weight of one `tag=weight` argument, or why it is refused. */
function weightOf(arg: string, tag: string, raw: string): number | string {
  const range = `"${arg}": the weight must be between 0 and 100`;
  if (/^[+-]?\d+(\.\d+)?%$/.test(raw)) {
    const n = Number(raw.slice(0, -1));
    return n < 0 || n > 100 ? `${range}, written without "%"` : `"${arg}": write the weight without "%" (weights are percentages already: ${tag}=${n})`;
  }
  const n = Number(raw);
  if (raw.trim() === '' || Number.isNaN(n)) return `"${arg}": "${raw}" is not a number (a weight is 0-100, e.g. 10 or 12.5)`;
  if (n < 0 || n > 100) return range;
  if (!PLAIN_WEIGHT.test(raw)) return `"${arg}": write the weight as a plain decimal number between 0 and 100, e.g. 10 or 12.5 (not "${raw}")`;
  return n;
}
