import { z } from 'zod';
import { describeError } from '../core/errors.ts';

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

export function parseCanaryValue(text: string | null): ParseResult<CanaryWeights> {
  if (text === null || text.trim() === '') return { ok: false, error: 'value is empty' };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `not JSON: ${describeError(err)}` };
  }
  const parsed = canaryWeightsSchema.safeParse(json);
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, error: formatZodIssues(parsed.error) };
}

/** `["v1=90", "v2=10"]` → canary weights, with the same rules as KV values. */
export function parseCanaryArgs(args: readonly string[]): ParseResult<CanaryWeights> {
  const weights: Record<string, number> = {};
  for (const arg of args) {
    const m = /^([^=]+)=(.+)$/.exec(arg);
    if (!m) return { ok: false, error: `"${arg}" is not tag=weight` };
    const [, tag = '', raw = ''] = m;
    const weight = Number(raw);
    if (!/^\d+(\.\d+)?$/.test(raw) || !Number.isFinite(weight)) return { ok: false, error: `"${raw}" in "${arg}" is not a number` };
    if (Object.hasOwn(weights, tag)) return { ok: false, error: `tag "${tag}" given twice` };
    weights[tag] = weight;
  }
  const parsed = canaryWeightsSchema.safeParse({ weights });
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, error: formatZodIssues(parsed.error) };
}
