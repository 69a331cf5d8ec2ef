import { valueHash, type ConfigEntry, type ConfigKind, type HistoryEntry } from './history-entry.ts';

/**
 * What `cgw rollback <version>` writes, as a pure function of the history and the configuration
 * keys in KV now. The target version's manifest says which keys exist at that version and the
 * hash of each value; every key that differs now is written back (or deleted when the version
 * did not have it). The value comes from the history: the value before the earliest change of
 * that key after the target (the brief's rule), else the value the key was given at or before the
 * target, else any kept value of that key with the right hash; it is checked against the
 * manifest's hash, so an entry whose kept values were tampered with cannot be restored from.
 */

export type RollbackStep =
  | { readonly action: 'create' | 'update'; readonly key: string; readonly kind: ConfigKind; readonly value: string; readonly cas: number; readonly from: number }
  | { readonly action: 'delete'; readonly key: string; readonly kind: ConfigKind; readonly cas: number };

export interface RollbackPlan {
  readonly target: HistoryEntry;
  /** Writes first (key order), then deletes: a route is back before the keys that replaced it go. */
  readonly steps: readonly RollbackStep[];
}

export type PlanResult =
  | { readonly ok: true; readonly plan: RollbackPlan }
  | { readonly ok: false; readonly error: string; readonly reason: 'syntax' | 'unknown' | 'ambiguous' | 'not-kept' };

/** `abc1` → the one version it starts; the newest entry of that version is the target. */
export function findVersion(entries: readonly HistoryEntry[], wanted: string): { ok: true; entry: HistoryEntry } | { ok: false; error: string; reason: 'syntax' | 'unknown' | 'ambiguous' } {
  const text = wanted.trim().toLowerCase();
  if (!/^[0-9a-f]{4,12}$/.test(text)) return { ok: false, reason: 'syntax', error: `"${wanted.slice(0, 40)}" is not a version (4 to 12 hex digits, as cgw history lists them)` };
  const versions = [...new Set(entries.filter((e) => e.version.startsWith(text)).map((e) => e.version))];
  if (versions.length > 1) return { ok: false, reason: 'ambiguous', error: `"${wanted}" starts ${versions.length} versions (${versions.join(', ')}); give more digits` };
  const version = versions[0];
  if (version === undefined) {
    const oldest = entries[0];
    return {
      ok: false,
      reason: 'unknown',
      error: `version ${text} is not in the history${oldest ? ` (it keeps ${entries.length} entries, the oldest from ${oldest.at}; older ones are pruned)` : ' (it is empty)'}; cgw history lists the versions that can be restored`,
    };
  }
  const entry = entries.filter((e) => e.version === version).at(-1) as HistoryEntry;
  return { ok: true, entry };
}

/** `entries` in seq order, valid ones only; `current` the configuration keys in KV now. */
export function planRollback(entries: readonly HistoryEntry[], wanted: string, current: readonly ConfigEntry[]): PlanResult {
  const found = findVersion(entries, wanted);
  if (!found.ok) return found;
  const target = found.entry;
  const want = new Map(target.keys);
  const now = new Map(current.map((e) => [e.key, e]));
  const writes: RollbackStep[] = [];
  const deletes: RollbackStep[] = [];
  const missing: string[] = [];
  for (const key of [...new Set([...want.keys(), ...now.keys()])].sort()) {
    const hash = want.get(key);
    const is = now.get(key);
    if (hash === undefined) {
      if (is) deletes.push({ action: 'delete', key, kind: is.kind, cas: is.modifyIndex });
      continue;
    }
    if (is && valueHash(is.value) === hash) continue;
    const value = valueAt(entries, target.seq, key, hash);
    if (value === undefined) {
      missing.push(key);
      continue;
    }
    const kind = kindOf(entries, key) ?? is?.kind;
    if (kind === undefined) {
      missing.push(key);
      continue;
    }
    writes.push({ action: is ? 'update' : 'create', key, kind, value: value.text, cas: is?.modifyIndex ?? 0, from: value.seq });
  }
  if (missing.length > 0) {
    return {
      ok: false,
      reason: 'not-kept',
      error: `the history does not keep the value ${missing.length === 1 ? 'of' : 'of each of'} ${missing.join(', ')} at version ${target.version} (larger than the kept size, or recorded only in pruned entries); nothing was written`,
    };
  }
  return { ok: true, plan: { target, steps: [...writes, ...deletes] } };
}

function valueAt(entries: readonly HistoryEntry[], targetSeq: number, key: string, hash: string): { text: string; seq: number } | undefined {
  const matches = (text: string | undefined): text is string => text !== undefined && valueHash(text) === hash;
  // The value before the earliest later change of the key.
  for (const e of entries) {
    if (e.seq <= targetSeq) continue;
    const c = e.changes.find((x) => x.key === key);
    if (!c) continue;
    if (c.beforeHash === hash && matches(c.before)) return { text: c.before, seq: e.seq };
    break;
  }
  // The value the key was given at or before the target, newest first; then any kept value.
  const older = entries.filter((e) => e.seq <= targetSeq).reverse();
  const later = entries.filter((e) => e.seq > targetSeq);
  for (const e of [...older, ...later]) {
    const c = e.changes.find((x) => x.key === key);
    if (!c) continue;
    if (c.afterHash === hash && matches(c.after)) return { text: c.after, seq: e.seq };
    if (c.beforeHash === hash && matches(c.before)) return { text: c.before, seq: e.seq };
  }
  return undefined;
}

function kindOf(entries: readonly HistoryEntry[], key: string): ConfigKind | undefined {
  for (const e of entries) for (const c of e.changes) if (c.key === key) return c.kind;
  return undefined;
}
