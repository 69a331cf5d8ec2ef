import { createHash } from 'node:crypto';
import { z } from 'zod';
import { criteriaSchema } from './rollout.ts';
import type { ParseResult } from './canary.ts';
import { parseJsonValue } from './json-value.ts';

/**
 * A guarded configuration change, stored at `<prefix>guards/<id>`: the documents a change wrote
 * (with the values they replaced), how long the gateways watch the routes those documents touch,
 * and the criteria (a rollout's: error rate in points and p95 against the minutes before the
 * change). `cgw policy push --guard` writes one before it pushes; any tool may write one after
 * writing documents. A gateway that sees those routes get worse writes the previous values back.
 */

export const GUARD_STATES = ['watching', 'passed', 'reverting', 'reverted'] as const;
export type GuardState = (typeof GUARD_STATES)[number];

const MAX_GUARD_BYTES = 480 * 1024;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** sha256 of a value as text (null: the key did not exist). */
export function valueHash(text: string | null): string | null {
  return text === null ? null : createHash('sha256').update(text).digest('hex');
}

const changeSchema = z
  .object({
    key: z.string().min(1).max(1024),
    /** The value before the change; null when the change created the key. */
    previous: z.string().max(MAX_GUARD_BYTES).nullable(),
    /** sha256 of the value the change wrote; null when it deleted the key. A key changed again since is left alone. */
    written: z.string().regex(SHA256_HEX, 'written is the sha256 (hex) of the value written').nullable(),
  })
  .strict();

export const guardSchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9_.-]{1,100}$/, 'a guard id is 1-100 letters, digits, _ . -'),
    createdAt: z.iso.datetime(),
    windowMs: z.number().int().min(1_000, 'a guard watches at least 1s').max(3_600_000, 'a guard watches at most 1h'),
    criteria: criteriaSchema,
    changes: z.array(changeSchema).min(1, 'a guard covers at least one change').max(100, 'at most 100 changes per guard'),
    state: z.enum(GUARD_STATES),
    decision: z
      .object({
        at: z.string().max(40),
        reason: z.string().max(2000),
        figures: z.record(z.string().max(64), z.number().nullable()).optional(),
        by: z.string().max(256),
        reverted: z.array(z.string().max(1024)).max(100),
        skipped: z.array(z.string().max(2000)).max(100),
      })
      .strict()
      .optional(),
  })
  .strict();

export type Guard = z.output<typeof guardSchema>;

export function parseGuardValue(text: string | null): ParseResult<Guard> {
  return parseJsonValue(text, guardSchema, MAX_GUARD_BYTES * 2, 'not JSON (guards are written by `cgw policy push --guard`)');
}

/**
 * The keys a guard may write back: the gateway's own documents and weights. A guard naming any
 * other key is refused whole, so a hostile guard cannot make a gateway write where it likes.
 */
export function guardableKey(key: string, kvPrefix: string): boolean {
  if (!key.startsWith(kvPrefix)) return false;
  const rest = key.slice(kvPrefix.length);
  const m = /^(policies|routes|canary)\/([^/]+)$/.exec(rest);
  return m !== null && m[2] !== '.' && m[2] !== '..';
}
