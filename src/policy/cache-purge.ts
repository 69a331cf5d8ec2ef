import { createHash } from 'node:crypto';
import { z } from 'zod';
import { routeId } from './schema.ts';

/**
 * `cgw cache purge` writes one marker per target under `<prefix>cache-purge/`, its generation
 * raised with check-and-set. Every gateway's KV watch sees it; the generation is part of the
 * cache keys of what it covers, so older entries are never read again on any gateway, in any
 * worker, in memory or in Redis (where they expire by their TTL), and the memory they held is
 * freed when the snapshot carrying the marker is applied.
 */
const purgePath = z
  .string()
  .max(2048)
  .regex(/^\/[\x21-\x7e]*$/, 'a path starts with / and holds printable characters only')
  .refine((p) => !p.includes('?'), 'the path is purged with every query; give it without one');

export const purgeTargetSchema = z.union([
  z.object({ all: z.literal(true) }).strict(),
  z.object({ route: routeId }).strict(),
  z.object({ path: purgePath }).strict(),
], { error: 'target is {"all": true}, {"route": "<route id>"} or {"path": "/path"}' });

export const purgeMarkerSchema = z
  .object({
    target: purgeTargetSchema,
    generation: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  })
  .strict();

export type PurgeTarget = z.output<typeof purgeTargetSchema>;
export type PurgeMarker = z.output<typeof purgeMarkerSchema>;

/** Markers kept at most; more are problems (and ignored) so memory and keys stay bounded. */
export const MAX_PURGE_MARKERS = 1000;

export const CACHE_PURGE_DIR = 'cache-purge/';

/** The key segment of a target: route ids and paths hold slashes, so they are hashed. */
export function purgeKeyName(target: PurgeTarget): string {
  if ('all' in target) return 'all';
  if ('route' in target) return `route-${shortHash(target.route)}`;
  return `path-${shortHash(target.path)}`;
}

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 32);
}

export function parsePurgeMarker(value: string | null): { ok: true; marker: PurgeMarker } | { ok: false; error: string } {
  if (value === null) return { ok: false, error: 'empty value' };
  if (value.length > 8192) return { ok: false, error: 'value larger than 8 KiB' };
  let json: unknown;
  try {
    json = JSON.parse(value);
  } catch {
    return { ok: false, error: 'not JSON' };
  }
  const parsed = purgeMarkerSchema.safeParse(json);
  if (!parsed.success) return { ok: false, error: parsed.error.issues.map((i) => `${i.path.join('.') || 'value'}: ${i.message}`).join('; ') };
  return { ok: true, marker: parsed.data };
}
