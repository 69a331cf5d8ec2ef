import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { planName, rateQuota } from './schema.ts';

/**
 * API-key consumers, stored at `<prefix>consumers/<id>`. Only a SHA-256 of the key is stored: the
 * key itself is printed once by `cgw consumer add` and never kept. Keys look like
 * `cgw_<id>_<64 hex>`, so the gateway finds the consumer by id and then compares hashes in
 * constant time, instead of looking a secret up in a table.
 */
export const consumerIdSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,63}$/, 'consumer ids are 1-64 lower-case letters, digits and -, starting with a letter or digit');

export const consumerRecordSchema = z
  .object({
    keyHash: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'keyHash is sha256:<64 hex digits>'),
    plan: planName.optional(),
    scopes: z.array(z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/, 'scopes are printable characters without spaces')).max(64).default([]),
    /** The consumer's own quota; wins over its plan's in `by: consumer` rate limits. */
    limits: rateQuota.optional(),
    description: z.string().max(500).optional(),
    createdAt: z.string().max(64).optional(),
  })
  .strict();

export type ConsumerRecord = z.output<typeof consumerRecordSchema>;
export type ConsumerRecordInput = z.input<typeof consumerRecordSchema>;

const KEY_PATTERN = /^cgw_([a-z0-9][a-z0-9-]{0,63})_([0-9a-f]{64})$/;

export function hashApiKey(key: string): string {
  return `sha256:${createHash('sha256').update(key).digest('hex')}`;
}

export function generateApiKey(id: string): { key: string; keyHash: string } {
  const key = `cgw_${id}_${randomBytes(32).toString('hex')}`;
  return { key, keyHash: hashApiKey(key) };
}

/** The consumer id a presented key claims, or undefined when the key is not in our format. */
export function consumerIdOfKey(key: string): string | undefined {
  return KEY_PATTERN.exec(key)?.[1];
}
