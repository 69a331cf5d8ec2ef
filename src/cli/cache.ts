import { CliError } from './admin-client.ts';
import type { KvStore } from './consul-kv.ts';
import { CACHE_PURGE_DIR, parsePurgeMarker, purgeKeyName, purgeTargetSchema, type PurgeTarget } from '../policy/cache-purge.ts';

export interface PurgeResult {
  readonly key: string;
  readonly target: PurgeTarget;
  readonly generation: number;
}

/** Check-and-set conflicts (two purges of one target at once) retried this many times. */
const CAS_ATTEMPTS = 5;

/** The target from `--all`, `--route <id>` or `--path <path>` (`--key` is the same as `--path`), validated like the gateway reads it. */
export function purgeTargetOf(flags: { all?: boolean; route?: string; path?: string; key?: string }): PurgeTarget {
  const path = flags.path ?? flags.key;
  const given = [flags.all === true, flags.route !== undefined, path !== undefined].filter(Boolean).length;
  if (given !== 1) throw new CliError('give exactly one of --all, --route <route id>, --path <path>', 2);
  const raw = flags.all ? { all: true } : flags.route !== undefined ? { route: flags.route } : { path };
  const parsed = purgeTargetSchema.safeParse(raw);
  if (!parsed.success) throw new CliError(`invalid purge target: ${parsed.error.issues.map((i) => i.message).join('; ')}`, 2);
  return parsed.data;
}

/**
 * Raises the target's purge generation in `<prefix>cache-purge/` with check-and-set. Every
 * gateway (and every worker) applies it from its KV watch: entries of older generations are
 * dropped from memory and never read again from Redis.
 */
export async function purgeCache(store: KvStore, kvPrefix: string, target: PurgeTarget): Promise<PurgeResult> {
  const key = `${kvPrefix}${CACHE_PURGE_DIR}${purgeKeyName(target)}`;
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const current = await store.get(key);
    const parsed = current ? parsePurgeMarker(current.value) : undefined;
    const generation = (parsed?.ok ? parsed.marker.generation : 0) + 1;
    if (await store.set(key, JSON.stringify({ target, generation }), current?.modifyIndex ?? 0)) return { key, target, generation };
  }
  throw new CliError(`${key} kept changing while it was written (${CAS_ATTEMPTS} attempts); try again`);
}
