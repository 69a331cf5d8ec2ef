import { z } from 'zod';
import { formatMs, parseDuration } from './duration.ts';

/**
 * A duration field for zod schemas (flags and policy documents alike): text in, milliseconds out,
 * with a range whose message reads in the units people write.
 */
export function durationField(min: number, max: number) {
  return z
    .string()
    .transform((text, ctx) => {
      const ms = parseDuration(text);
      if (ms === undefined) {
        ctx.addIssue({ code: 'custom', message: `not a duration: "${text}" (use e.g. 500ms, 30s, 5m)` });
        return z.NEVER;
      }
      return ms;
    })
    .refine((ms) => ms >= min && ms <= max, `must be between ${formatMs(min)} and ${formatMs(max)}`);
}
