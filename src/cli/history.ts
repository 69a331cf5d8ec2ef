import { defaultRuntimePrefix, KV_WRITERS, runtimeKeys } from '../core/kv-layout.ts';
import { parseCanaryValue } from '../policy/canary.ts';
import { parseDocumentText } from '../policy/documents.ts';
import { configEntries, configVersion, parseHistoryEntry, restorable, type ConfigEntry, type HistoryEntry } from '../state/history-entry.ts';
import { planRollback, type RollbackStep } from '../state/history-plan.ts';
import { CliError } from './admin-client.ts';
import { normalizeKvPrefix, type KvStore } from './consul-kv.ts';

/**
 * `cgw history` and `cgw rollback`: the configuration history the gateways write under
 * `<runtime-prefix>history/`, read straight from Consul (never through the admin API: entries
 * keep document values, and policy documents can hold JWT secrets). Entries are input from
 * outside: each one that does not parse is refused on its own, with its key and why.
 */

export interface HistoryPrefixes {
  /** The gateway's KV prefix (`--kv-prefix`). */
  readonly kvPrefix: string;
  /** `--kv-runtime-prefix`; default: `<kv-prefix>-runtime/`, as the gateway's own default. */
  readonly runtimePrefix?: string;
}

export interface ReadHistory {
  readonly historyPrefix: string;
  readonly kvPrefix: string;
  /** Valid entries, oldest first. */
  readonly entries: readonly HistoryEntry[];
  readonly refused: readonly { readonly key: string; readonly error: string }[];
  /** The configuration keys in KV now, and their version. */
  readonly current: readonly ConfigEntry[];
  readonly currentVersion: string;
}

export function historyPrefixOf(p: HistoryPrefixes): { kvPrefix: string; historyPrefix: string } {
  const kvPrefix = normalizeKvPrefix(p.kvPrefix);
  const runtime = p.runtimePrefix === undefined ? defaultRuntimePrefix(kvPrefix) : normalizeKvPrefix(p.runtimePrefix);
  if (runtime === '') throw new CliError('--kv-runtime-prefix must not be empty', 2);
  return { kvPrefix, historyPrefix: runtimeKeys.history(runtime) };
}

export async function readHistory(kv: KvStore, prefixes: HistoryPrefixes): Promise<ReadHistory> {
  const { kvPrefix, historyPrefix } = historyPrefixOf(prefixes);
  const entries: HistoryEntry[] = [];
  const refused: { key: string; error: string }[] = [];
  for (const item of await kv.list(historyPrefix)) {
    const parsed = parseHistoryEntry(historyPrefix, kvPrefix, item.key, item.value, item.modifyIndex);
    if (parsed.ok) entries.push(parsed.entry);
    // A key named `__proto__`, a megabyte of garbage, an entry naming keys outside the prefix: refused, one by one.
    else refused.push({ key: JSON.stringify(item.key.slice(0, 200)).slice(1, -1), error: parsed.error });
  }
  entries.sort((a, b) => a.seq - b.seq);
  const current = await readConfig(kv, kvPrefix);
  return { historyPrefix, kvPrefix, entries, refused, current, currentVersion: configVersion(current) };
}

/** The configuration keys in KV now (what a version is made of). */
export async function readConfig(kv: KvStore, kvPrefix: string): Promise<ConfigEntry[]> {
  const items = [];
  for (const sub of ['policies/', 'routes/', 'canary/']) items.push(...(await kv.list(`${kvPrefix}${sub}`)));
  return configEntries(items, kvPrefix);
}

export interface HistoryRow {
  readonly seq: number;
  readonly version: string;
  readonly previous: string | null;
  readonly at: string;
  readonly source: string;
  readonly by: string;
  /** This row is the newest entry of the version in KV now. */
  readonly inForce: boolean;
  readonly changes: readonly { readonly key: string; readonly kind: string; readonly action: string; readonly restorable: boolean }[];
}

/** Newest first; values are never listed (policy documents may hold secrets), only which keys changed. */
export function historyRows(h: ReadHistory): HistoryRow[] {
  const inForceSeq = h.entries.filter((e) => e.version === h.currentVersion).at(-1)?.seq;
  return [...h.entries].reverse().map((e) => ({
    seq: e.seq,
    version: e.version,
    previous: e.previous,
    at: e.at,
    source: e.source,
    by: e.by,
    inForce: e.seq === inForceSeq,
    changes: e.changes.map((c) => ({ key: c.key, kind: c.kind, action: c.action, restorable: restorable(c) })),
  }));
}

export function historyJson(h: ReadHistory) {
  return { historyPrefix: h.historyPrefix, inForce: h.currentVersion, recorded: h.entries.some((e) => e.version === h.currentVersion), entries: historyRows(h), refused: h.refused };
}

const MARK = { added: '+', changed: '~', removed: '-' } as const;

/** `+routes/a ~policies/b -canary/web`, keys shown below the KV prefix; `!` marks a change that cannot be undone. */
export function changeSummary(row: HistoryRow, kvPrefix: string): string {
  if (row.changes.length === 0) return 'none (first entry: no configuration keys)';
  return row.changes.map((c) => `${MARK[c.action as keyof typeof MARK] ?? '?'}${c.key.slice(kvPrefix.length)}${c.restorable ? '' : '!'}`).join(' ');
}

// ---------------------------------------------------------------------------------------------
// rollback

export interface RollbackOptions extends HistoryPrefixes {
  readonly dryRun?: boolean;
  /** Called for each key as soon as it is written (progress shows even if a later key fails). */
  readonly onStep?: (step: RollbackStep) => void;
}

export interface RollbackOutcome {
  readonly version: string;
  /** The entry the version is restored from (its newest occurrence). */
  readonly seq: number;
  readonly at: string;
  readonly steps: readonly RollbackStep[];
  readonly dryRun: boolean;
  readonly refused: ReadHistory['refused'];
}

/** A check-and-set lost in the middle of a rollback: exit 3, naming the key and what was written. */
export class RollbackRaceError extends CliError {
  constructor(
    message: string,
    readonly done: readonly RollbackStep[],
  ) {
    super(message, 3);
  }
}

export async function rollback(kv: KvStore, wanted: string, opts: RollbackOptions): Promise<RollbackOutcome> {
  const h = await readHistory(kv, opts);
  const planned = planRollback(h.entries, wanted, h.current);
  if (!planned.ok) {
    const refusedNote = h.refused.length > 0 ? ` (${h.refused.length} history entr${h.refused.length === 1 ? 'y was' : 'ies were'} refused: cgw history lists why)` : '';
    throw new CliError(`${planned.error}${refusedNote}`, planned.reason === 'syntax' || planned.reason === 'ambiguous' ? 2 : 1);
  }
  const { plan } = planned;
  // Every value is checked with the gateway's own parsers before anything is written: a document
  // that no longer validates (the schema moved on since) is refused, not pushed to every gateway.
  const invalid = plan.steps.flatMap((s) => {
    if (s.action === 'delete') return [];
    const checked = s.kind === 'canary' ? parseCanaryValue(s.value) : parseDocumentText(s.value, s.kind);
    return checked.ok ? [] : [`${s.key}: ${checked.error}`];
  });
  if (invalid.length > 0) {
    throw new CliError(`version ${plan.target.version} cannot be restored: ${invalid.length === 1 ? 'a value no longer validates' : `${invalid.length} values no longer validate`} (${invalid.join('; ')}); nothing was written`, 2, { invalid });
  }
  const done: RollbackStep[] = [];
  for (const step of plan.steps) {
    if (!opts.dryRun) {
      const ok = step.action === 'delete' ? await kv.del(step.key, step.cas) : await kv.set(step.key, step.value, step.cas, KV_WRITERS['cgw rollback']);
      if (!ok) {
        const rest = plan.steps.length - done.length - 1;
        throw new RollbackRaceError(
          `${step.key} was changed by someone else during the rollback (check-and-set on ModifyIndex ${step.cas} lost); not ${step.action === 'delete' ? 'deleted' : 'restored'}. ` +
            (done.length === 0 ? 'Nothing had been written yet.' : `Already written: ${done.map((d) => `${d.action} ${d.key}`).join(', ')}.`) +
            `${rest > 0 ? ` The other ${rest} were not written.` : ''} Look at cgw history and run the rollback again.`,
          done,
        );
      }
    }
    done.push(step);
    opts.onStep?.(step);
  }
  return { version: plan.target.version, seq: plan.target.seq, at: plan.target.at, steps: done, dryRun: Boolean(opts.dryRun), refused: h.refused };
}

export function formatStep(step: RollbackStep, dryRun: boolean): string {
  const verb = dryRun ? `would ${step.action}` : { create: 'created', update: 'restored', delete: 'deleted' }[step.action];
  const detail = step.action === 'delete' ? `(ModifyIndex ${step.cas})` : `(value of entry ${step.from}${step.cas === 0 ? '' : `, over ModifyIndex ${step.cas}`})`;
  return `${verb.padEnd(dryRun ? 12 : 8)}  ${step.key}  ${detail}`;
}

/** For JSON: the steps without the values written (they may be secrets). */
export function stepsJson(steps: readonly RollbackStep[]) {
  return steps.map((s) => (s.action === 'delete' ? s : { action: s.action, key: s.key, kind: s.kind, cas: s.cas, from: s.from }));
}
