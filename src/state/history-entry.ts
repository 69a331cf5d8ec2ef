import { createHash } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from '../core/hash.ts';
import { writerOfFlags } from '../core/kv-layout.ts';
import { documentOfKvKey } from '../policy/documents.ts';
import { parseJsonValue } from '../policy/json-value.ts';

/**
 * The configuration history's data: which KV keys make a configuration version, the version's
 * hash, and the entries gateways write under `<runtime-prefix>history/<seq>`. Pure, so the
 * gateway's writer and `cgw history` / `cgw rollback` read entries in exactly one way.
 *
 * A version is the set of KV keys the gateway applies as configuration: policy documents
 * (`<prefix>policies/<name>`), route documents (`<prefix>routes/<name>`) and canary weights
 * (`<prefix>canary/<service>`). Consumers, certificates, rollouts and fabio's route lines are not
 * part of it: consumers and certificates hold credentials that a rollback must not resurrect, a
 * rollout is driven by the gateways themselves, and fabio's lines belong to fabio's tooling.
 */

export type ConfigKind = 'policy' | 'route' | 'canary';

export interface ConfigEntry {
  readonly key: string;
  readonly kind: ConfigKind;
  /** Consul's "no value" is stored back as the empty string, which Consul reads the same way. */
  readonly value: string;
  readonly modifyIndex: number;
  /** The cgw command that wrote the value, from Consul's Flags (undefined: another tool). */
  readonly writer?: string;
}

/** The kind of configuration a key holds under `kvPrefix`, or undefined for every other key. */
export function configKindOf(key: string, kvPrefix: string): ConfigKind | undefined {
  const doc = documentOfKvKey(key, kvPrefix);
  if (doc) return doc.kind;
  if (!key.startsWith(`${kvPrefix}canary/`)) return undefined;
  // As state/canary.ts reads them: one segment after canary/.
  const service = key.slice(kvPrefix.length + 'canary/'.length);
  return service !== '' && !service.includes('/') ? 'canary' : undefined;
}

/** The configuration keys of a KV view, in key order. */
export function configEntries(kv: readonly { key: string; value: string | null; modifyIndex: number; flags?: number }[], kvPrefix: string): ConfigEntry[] {
  const out: ConfigEntry[] = [];
  for (const e of kv) {
    const kind = configKindOf(e.key, kvPrefix);
    const writer = writerOfFlags(e.flags);
    if (kind) out.push({ key: e.key, kind, value: e.value ?? '', modifyIndex: e.modifyIndex, ...(writer ? { writer } : {}) });
  }
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** A value's fingerprint in an entry's manifest: enough to tell values apart, not to read them. */
export function valueHash(value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, 16);
}

/**
 * The version of a configuration: the first 12 hex digits of the SHA-256 of its sorted
 * (key, value) pairs as JSON. Every gateway that reads the same KV computes the same version,
 * whatever the ModifyIndex, so two gateways applying one change name it alike.
 */
export function configVersion(entries: readonly Pick<ConfigEntry, 'key' | 'value'>[]): string {
  const pairs = entries.map((e) => [e.key, e.value]).sort((a, b) => ((a[0] as string) < (b[0] as string) ? -1 : 1));
  return createHash('sha256').update(canonicalJson(pairs)).digest('hex').slice(0, 12);
}

// ---------------------------------------------------------------------------------------------
// entries

export const HISTORY_FORMAT = 'cgw-history/1';
/** Entry keys are `<history-prefix><seq>`, ten digits so Consul lists them in order. */
const SEQ_DIGITS = 10;
export const MAX_SEQ = 10 ** SEQ_DIGITS - 1;
/** Under Consul's default 512 KiB value limit (kv_max_value_size) with room for JSON escaping. */
export const MAX_ENTRY_BYTES = 384 * 1024;
/** A larger value is recorded by its hash only: the change is listed, but cannot be restored. */
export const MAX_KEPT_VALUE_BYTES = 64 * 1024;
/** More keys than any gateway configuration has; an entry naming more is refused. */
const MAX_KEYS = 5_000;

export function historyKeyOf(historyPrefix: string, seq: number): string {
  return `${historyPrefix}${String(seq).padStart(SEQ_DIGITS, '0')}`;
}

/** The sequence number of an entry key, or undefined for anything else under the prefix. */
export function seqOfHistoryKey(historyPrefix: string, key: string): number | undefined {
  if (!key.startsWith(historyPrefix)) return undefined;
  const rest = key.slice(historyPrefix.length);
  return new RegExp(`^\\d{${SEQ_DIGITS}}$`).test(rest) ? Number(rest) : undefined;
}

const hash16 = z.string().regex(/^[0-9a-f]{16}$/, 'expected a 16-digit hex value hash');
const configKey = z.string().min(1).max(1024);

const changeSchema = z
  .object({
    key: configKey,
    kind: z.enum(['policy', 'route', 'canary']),
    action: z.enum(['added', 'changed', 'removed']),
    /** null: the key did not exist before (after) the change. */
    beforeHash: hash16.nullable(),
    afterHash: hash16.nullable(),
    /** The values themselves, when they were small enough to keep (and known to the writer). */
    before: z.string().optional(),
    after: z.string().optional(),
    /** The key's ModifyIndex after the change (null for a removal). */
    modifyIndex: z.number().int().nonnegative().nullable(),
    /** The cgw command that wrote the new value (absent: another tool, or a removal). */
    writer: z.string().min(1).max(100).optional(),
  })
  .strict()
  .refine((c) => (c.action === 'added' ? c.beforeHash === null && c.afterHash !== null : c.action === 'removed' ? c.beforeHash !== null && c.afterHash === null : c.beforeHash !== null && c.afterHash !== null && c.beforeHash !== c.afterHash), 'action does not match the hashes')
  .refine((c) => (c.before === undefined || (c.beforeHash !== null && valueHash(c.before) === c.beforeHash)) && (c.after === undefined || (c.afterHash !== null && valueHash(c.after) === c.afterHash)), 'a kept value does not match its hash');

export const historyEntrySchema = z
  .object({
    format: z.literal(HISTORY_FORMAT),
    seq: z.number().int().min(1).max(MAX_SEQ),
    version: z.string().regex(/^[0-9a-f]{12}$/, 'expected a 12-digit hex version'),
    previous: z.string().regex(/^[0-9a-f]{12}$/).nullable(),
    at: z.iso.datetime(),
    /** Consul's index of the gateway's KV prefix when the writer saw this version: orders the fleet's writers. */
    kvIndex: z.number().int().nonnegative(),
    by: z.string().min(1).max(200),
    /** Which tools made the changes: cgw commands by name, `kv` for any other writer (and for removals alone). */
    source: z.string().min(1).max(100),
    /** Every configuration key of the version and its value hash: what a rollback restores. */
    keys: z.array(z.tuple([configKey, hash16])).max(MAX_KEYS),
    changes: z.array(changeSchema).max(MAX_KEYS),
  })
  .strict()
  .superRefine((e, ctx) => {
    const seen = new Set<string>();
    for (const [k] of e.keys) {
      if (seen.has(k)) ctx.addIssue({ code: 'custom', path: ['keys'], message: `key ${k} listed twice` });
      seen.add(k);
    }
    const changed = new Set<string>();
    for (const c of e.changes) {
      if (changed.has(c.key)) ctx.addIssue({ code: 'custom', path: ['changes'], message: `key ${c.key} changed twice` });
      changed.add(c.key);
    }
  });

export type HistoryEntry = z.output<typeof historyEntrySchema>;
export type HistoryChange = HistoryEntry['changes'][number];

export type EntryParse = { readonly ok: true; readonly entry: HistoryEntry } | { readonly ok: false; readonly error: string };

/**
 * One stored entry, read as input from outside: anyone with write access to the runtime prefix can
 * put anything there. Size and depth are checked before parsing, the key must be an entry key,
 * the seq inside must match it, and every key must be a configuration key of `kvPrefix` (so a
 * rollback can never be steered to write elsewhere).
 */
export function parseHistoryEntry(historyPrefix: string, kvPrefix: string, key: string, text: string | null, modifyIndex?: number): EntryParse {
  const seq = seqOfHistoryKey(historyPrefix, key);
  if (seq === undefined) return { ok: false, error: `not an entry key (expected ${historyPrefix} and ${SEQ_DIGITS} digits)` };
  const parsed = parseJsonValue(text, historyEntrySchema, MAX_ENTRY_BYTES);
  if (!parsed.ok) return parsed;
  const entry = parsed.value;
  if (entry.seq !== seq) return { ok: false, error: `seq ${entry.seq} does not match its key` };
  // A writer saw the KV view before it wrote the entry, so the view's index is below the entry's
  // own ModifyIndex; one claiming a later view is forged, and would stop every gateway recording.
  if (modifyIndex !== undefined && entry.kvIndex > modifyIndex) return { ok: false, error: `kvIndex ${entry.kvIndex} is later than the entry itself (ModifyIndex ${modifyIndex})` };
  const foreign = [...entry.keys.map(([k]) => k), ...entry.changes.map((c) => c.key)].find((k) => configKindOf(k, kvPrefix) === undefined);
  if (foreign !== undefined) return { ok: false, error: `names ${JSON.stringify(foreign.slice(0, 120))}, which is not a policy, route or canary key under ${kvPrefix === '' ? 'the root' : kvPrefix}` };
  const wrongKind = entry.changes.find((c) => configKindOf(c.key, kvPrefix) !== c.kind);
  if (wrongKind) return { ok: false, error: `change of ${wrongKind.key} has kind ${wrongKind.kind}` };
  return { ok: true, entry };
}

// ---------------------------------------------------------------------------------------------
// writing an entry

export interface EntryDraft {
  readonly seq: number;
  readonly kvPrefix: string;
  readonly at: Date;
  readonly kvIndex: number;
  readonly by: string;
  /** The newest entry before this one (its manifest is what changed from), if any. */
  readonly previous: Pick<HistoryEntry, 'version' | 'keys'> | undefined;
  readonly current: readonly ConfigEntry[];
  /** Earlier values by key and hash, to fill in `before` (the writer's last view, older entries). */
  readonly knownValue: (key: string, hash: string) => string | undefined;
}

/** The entry for a new version: its manifest, and each key that differs from the previous manifest. */
export function buildHistoryEntry(d: EntryDraft): HistoryEntry {
  const before = new Map(d.previous?.keys ?? []);
  const now = new Map(d.current.map((e) => [e.key, e]));
  const changes: HistoryChange[] = [];
  for (const key of [...new Set([...before.keys(), ...now.keys()])].sort()) {
    const was = before.get(key) ?? null;
    const is = now.get(key);
    const isHash = is ? valueHash(is.value) : null;
    if (was === isHash) continue;
    const kind = is?.kind ?? configKindOf(key, d.kvPrefix);
    if (kind === undefined) continue;
    const beforeValue = was === null ? undefined : d.knownValue(key, was);
    changes.push({
      key,
      kind,
      action: was === null ? 'added' : isHash === null ? 'removed' : 'changed',
      beforeHash: was,
      afterHash: isHash,
      ...(beforeValue !== undefined && Buffer.byteLength(beforeValue) <= MAX_KEPT_VALUE_BYTES ? { before: beforeValue } : {}),
      ...(is && Buffer.byteLength(is.value) <= MAX_KEPT_VALUE_BYTES ? { after: is.value } : {}),
      modifyIndex: is ? is.modifyIndex : null,
      ...(is?.writer ? { writer: is.writer } : {}),
    });
  }
  // Removals carry no flags: the writers of the new values say where the change came from.
  const writers = [...new Set(changes.filter((c) => c.afterHash !== null).map((c) => c.writer ?? 'kv'))].sort();
  const entry: HistoryEntry = {
    format: HISTORY_FORMAT,
    seq: d.seq,
    version: configVersion(d.current),
    previous: d.previous?.version ?? null,
    at: d.at.toISOString(),
    kvIndex: d.kvIndex,
    by: d.by,
    source: writers.length > 0 ? writers.join(', ') : 'kv',
    keys: d.current.map((e) => [e.key, valueHash(e.value)] as [string, string]),
    changes,
  };
  return fitted(entry);
}

/**
 * Under MAX_ENTRY_BYTES: the largest kept values are dropped first (their changes stay listed, by
 * hash, as not restorable) until the entry fits.
 */
function fitted(entry: HistoryEntry): HistoryEntry {
  let size = Buffer.byteLength(JSON.stringify(entry));
  if (size <= MAX_ENTRY_BYTES) return entry;
  const values = entry.changes.flatMap((c, i) => [
    ...(c.before !== undefined ? [{ i, side: 'before' as const, bytes: Buffer.byteLength(c.before) }] : []),
    ...(c.after !== undefined ? [{ i, side: 'after' as const, bytes: Buffer.byteLength(c.after) }] : []),
  ]);
  values.sort((a, b) => b.bytes - a.bytes);
  const changes = entry.changes.map((c) => ({ ...c }));
  for (const v of values) {
    if (size <= MAX_ENTRY_BYTES) break;
    const c = changes[v.i] as { before?: string; after?: string };
    delete c[v.side];
    size -= v.bytes;
  }
  return { ...entry, changes };
}

/** Whether a change can be undone from the history: the value before it was kept (or there was none). */
export function restorable(change: HistoryChange): boolean {
  return change.beforeHash === null || change.before !== undefined;
}
