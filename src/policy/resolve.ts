import { contentHash } from '../core/hash.ts';
import { own } from '../core/own.ts';
import type { KvEntry, Problem } from '../core/types.ts';
import { formatZodIssues } from './canary.ts';
import { consumerIdSchema, consumerRecordSchema, type ConsumerRecord } from './consumers.ts';
import { appliesToSchema, type AppliesTo } from './schema.ts';
import { checkJsonBounds, ParseMemo } from './value-bounds.ts';
import { documentOfKvKey, documentId, parseDocumentText, readYamlSafely, type DocumentKind, type DocumentOrigin, type ParsedDocument, type RawDocument } from './documents.ts';

/**
 * Which version of each document is in force. Pure: files read at start + the KV view + the
 * previous result. Each document stands alone: an invalid one is rejected as a whole, the version
 * in force before it (or the file it overrides) stays, and no other document is touched.
 */
export interface DocumentInForce {
  readonly id: string;
  readonly kind: DocumentKind;
  readonly name: string;
  readonly origin: DocumentOrigin;
  /** Hash of the parsed document: equal versions mean equal effect, whatever the formatting. */
  readonly version: string;
  readonly parsed: ParsedDocument;
}

export interface DocumentStatus {
  readonly id: string;
  readonly kind: DocumentKind;
  readonly name: string;
  readonly inForce: { readonly origin: DocumentOrigin; readonly version: string } | null;
  /** The newest text for this id, when it was refused. */
  readonly rejected: { readonly origin: DocumentOrigin; readonly error: string } | null;
  /** A file hidden by a KV document of the same id. */
  readonly overriddenFile: string | null;
  /** Why this document is not applied although valid: another one holds the same target. */
  readonly conflict?: string;
}

export interface ConsumerInForce {
  readonly id: string;
  readonly record: ConsumerRecord;
  readonly modifyIndex: number;
}

export interface PolicySet {
  readonly documents: readonly DocumentInForce[];
  readonly status: readonly DocumentStatus[];
  readonly consumers: Readonly<Record<string, ConsumerInForce>>;
  readonly problems: readonly Problem[];
  /**
   * Targets of rejected policy documents that have no good version at all (typically: a gateway
   * started after the document was broken). Their routes answer 503 rather than run without the
   * policy, which may have been the one that required authentication.
   */
  readonly held: readonly HeldTarget[];
  /** Times Consul's KV index went backwards, as the KV watch counted them when this was resolved. */
  readonly kvResets: number;
  /** Ids of KV documents kept in force although they vanished with such a reset. */
  readonly vanished: readonly string[];
}

export interface HeldTarget {
  readonly document: string;
  readonly target: AppliesTo;
}

export const EMPTY_POLICY_SET: PolicySet = { documents: [], status: [], consumers: {}, problems: [], held: [], kvResets: 0, vanished: [] };

export function resolvePolicies(
  files: readonly RawDocument[],
  kv: readonly KvEntry[],
  kvPrefix: string,
  previous: PolicySet | undefined,
  /** Files that could not be read or are misplaced in the policy directory. */
  loadErrors: readonly { readonly path: string; readonly error: string }[] = [],
  /** Times the KV watch saw Consul's index go backwards (see `vanished`). */
  kvResets = 0,
): PolicySet {
  const problems: Problem[] = loadErrors.map((e) => ({ kind: 'policy', subject: e.path, message: e.error }));
  const fromKv = new Map<string, RawDocument>();
  const consumerEntries: KvEntry[] = [];
  for (const entry of kv) {
    const where = documentOfKvKey(entry.key, kvPrefix);
    if (where) {
      const id = documentId(where.kind, where.name);
      fromKv.set(id, { id, ...where, origin: { kind: 'kv', key: entry.key, modifyIndex: entry.modifyIndex }, text: entry.value });
    } else if (entry.key.startsWith(`${kvPrefix}consumers/`)) {
      consumerEntries.push(entry);
    }
  }
  const fromFiles = new Map(files.map((f) => [f.id, f]));
  const previousById = new Map((previous?.documents ?? []).map((d) => [d.id, d]));
  const previousStatus = new Map((previous?.status ?? []).map((d) => [d.id, d]));
  const held: HeldTarget[] = [];
  const vanished = vanishedDocuments(previous, fromKv, kvResets);

  const documents: DocumentInForce[] = [];
  const status: DocumentStatus[] = [];
  for (const id of [...new Set([...fromFiles.keys(), ...fromKv.keys(), ...vanished.keys()])].sort()) {
    const kvDoc = fromKv.get(id);
    const file = fromFiles.get(id);
    const kept = kvDoc === undefined ? vanished.get(id) : undefined;
    if (kept) {
      documents.push(kept);
      status.push({ id, kind: kept.kind, name: kept.name, inForce: { origin: kept.origin, version: kept.version }, rejected: null, overriddenFile: file?.origin.kind === 'file' ? file.origin.path : null });
      problems.push({
        kind: 'policy',
        subject: id,
        message: `${describeOrigin(kept.origin)} vanished when Consul's KV index went backwards (Consul lost its data, or was restored from an older snapshot); its last version stays in force until it is written again (cgw policy push) or the gateway restarts`,
        keptLastGood: true,
      });
      continue;
    }
    const newest = (kvDoc ?? file) as RawDocument;
    let inForce: DocumentInForce | undefined;
    let rejected: DocumentStatus['rejected'] = null;
    // Every rebuild (any health change) resolves again: a document seen before is not parsed again.
    const previousDoc = previousById.get(id);
    const previousRejection = previousStatus.get(id)?.rejected;
    if (previousDoc && sameOrigin(previousDoc.origin, newest.origin)) {
      inForce = previousDoc;
    } else {
      const parsed = previousRejection && sameOrigin(previousRejection.origin, newest.origin) ? ({ ok: false, error: previousRejection.error } as const) : parseDocumentText(newest.text, newest.kind);
      if (parsed.ok) {
        inForce = inForceOf(newest, parsed.value);
      } else {
        rejected = { origin: newest.origin, error: parsed.error };
        // Last good: what was in force for this id, else (first sight of a bad KV value) the file it overrides.
        inForce = previousDoc ?? (kvDoc && file ? parsedFile(file) : undefined);
        const target = inForce === undefined && newest.kind === 'policy' ? intendedTarget(newest.text) : undefined;
        if (target !== undefined) held.push({ document: id, target });
        problems.push({
          kind: 'policy',
          subject: id,
          message:
            `${describeOrigin(newest.origin)} rejected: ${parsed.error}` +
            (target !== undefined ? `; no good version is known, so the routes of ${describeTarget(target)} answer 503 until a valid one is pushed` : ''),
          keptLastGood: inForce !== undefined,
        });
      }
    }
    if (inForce) documents.push(inForce);
    status.push({
      id,
      kind: newest.kind,
      name: newest.name,
      inForce: inForce ? { origin: inForce.origin, version: inForce.version } : null,
      rejected,
      overriddenFile: kvDoc && file && file.origin.kind === 'file' ? file.origin.path : null,
    });
  }
  const { applied, losers } = withoutConflicts(documents, problems);

  return {
    kvResets,
    vanished: [...vanished.keys()],
    documents: applied,
    status: losers.size === 0 ? status : status.map((st) => {
          const conflict = losers.get(st.id);
          return conflict === undefined ? st : { ...st, conflict };
        }),
    consumers: resolveConsumers(consumerEntries, kvPrefix, previous?.consumers ?? {}, problems),
    problems,
    held,
  };
}

/**
 * KV documents that disappeared together with a backwards jump of Consul's index. Deleting a
 * document moves the index forward; losing the KV store moves it back, and a policy that
 * required authentication must not vanish with the data (the routes it protected would run
 * open). Once kept, a document stays kept until its key is written again.
 */
function vanishedDocuments(previous: PolicySet | undefined, fromKv: ReadonlyMap<string, RawDocument>, kvResets: number): Map<string, DocumentInForce> {
  const out = new Map<string, DocumentInForce>();
  if (!previous) return out;
  const reset = kvResets > previous.kvResets;
  const keptBefore = new Set(previous.vanished);
  for (const d of previous.documents) {
    if (d.origin.kind !== 'kv' || fromKv.has(d.id)) continue;
    if (reset || keptBefore.has(d.id)) out.set(d.id, d);
  }
  return out;
}

function sameOrigin(a: DocumentOrigin, b: DocumentOrigin): boolean {
  if (a.kind === 'file') return b.kind === 'file' && a.path === b.path;
  return b.kind === 'kv' && a.key === b.key && a.modifyIndex === b.modifyIndex;
}

/**
 * What a rejected document meant to apply to, read leniently: the rest of it may be broken, but if
 * its `appliesTo` is readable, its routes must not run as if it did not exist.
 */
function intendedTarget(text: string | null): AppliesTo | undefined {
  if (text === null) return undefined;
  const read = readYamlSafely(text);
  if (!read.ok) return undefined;
  const data = read.data as { appliesTo?: unknown } | null;
  const target = appliesToSchema.safeParse(data !== null && typeof data === 'object' ? data.appliesTo : undefined);
  return target.success ? target.data : undefined;
}

function describeTarget(target: AppliesTo): string {
  return target === 'defaults' ? 'every route (defaults)' : 'service' in target ? `service "${target.service}"` : `route ${target.route}`;
}

function parsedFile(file: RawDocument): DocumentInForce | undefined {
  const parsed = parseDocumentText(file.text, file.kind);
  return parsed.ok ? inForceOf(file, parsed.value) : undefined;
}

function inForceOf(raw: RawDocument, parsed: ParsedDocument): DocumentInForce {
  return { id: raw.id, kind: raw.kind, name: raw.name, origin: raw.origin, version: contentHash(parsed), parsed };
}

/** Two policy documents for the same target: the first id in sort order wins, the other is reported. */
function withoutConflicts(documents: DocumentInForce[], problems: Problem[]): { applied: DocumentInForce[]; losers: Map<string, string> } {
  const byTarget = new Map<string, string>();
  const losers = new Map<string, string>();
  const applied = documents.filter((d) => {
    if (d.parsed.kind !== 'policy') return true;
    const a = d.parsed.doc.appliesTo;
    const target = a === 'defaults' ? 'defaults' : 'service' in a ? `service ${a.service}` : `route ${a.route}`;
    const winner = byTarget.get(target);
    if (winner) {
      const message = `${target} already has policy ${winner} (first by name wins); this document is not applied`;
      losers.set(d.id, message);
      problems.push({ kind: 'policy', subject: d.id, message });
      return false;
    }
    byTarget.set(target, d.id);
    return true;
  });
  return { applied, losers };
}

function resolveConsumers(
  entries: readonly KvEntry[],
  kvPrefix: string,
  previous: Readonly<Record<string, ConsumerInForce>>,
  problems: Problem[],
): Record<string, ConsumerInForce> {
  const out: Record<string, ConsumerInForce> = {};
  const base = `${kvPrefix}consumers/`;
  for (const entry of entries) {
    const id = entry.key.slice(base.length);
    // `consul kv put gateway/consumers/` (or the UI) creates the folder key itself; it is not a consumer.
    if (id === '') continue;
    if (!consumerIdSchema.safeParse(id).success) {
      problems.push({ kind: 'consumer', subject: entry.key, message: 'consumer ids are 1-64 lower-case letters, digits and -; key ignored' });
      continue;
    }
    // own(): `constructor` is a valid consumer id, and previous[id] would be Object itself.
    const known = own(previous, id);
    if (known && known.modifyIndex === entry.modifyIndex) {
      out[id] = known;
      continue;
    }
    const checked = parseConsumerValue(entry.value);
    if (checked.ok) {
      out[id] = { id, record: checked.record, modifyIndex: entry.modifyIndex };
      continue;
    }
    const kept = known;
    if (kept) out[id] = kept;
    problems.push({ kind: 'consumer', subject: entry.key, message: `invalid consumer record at ModifyIndex ${entry.modifyIndex}: ${checked.error}`, keptLastGood: kept !== undefined });
  }
  return out;
}

/** A consumer record is a key hash, a plan, up to 64 scopes and a short description. */
const MAX_CONSUMER_BYTES = 32 * 1024;
const consumerMemo = new ParseMemo<ConsumerParse>();

type ConsumerParse = { ok: true; record: ConsumerRecord } | { ok: false; error: string };

export function parseConsumerValue(text: string | null): ConsumerParse {
  if (text === null || text.trim() === '') return { ok: false, error: 'value is empty' };
  return consumerMemo.get(text, parseConsumerText);
}

function parseConsumerText(text: string): ConsumerParse {
  const bounds = checkJsonBounds(text, MAX_CONSUMER_BYTES);
  if (!bounds.ok) return { ok: false, error: `value is ${bounds.error}; refused before parsing` };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // Not V8's message: it quotes the input, which may be a key pasted where the record belongs.
    return { ok: false, error: 'not JSON (consumer records are written by `cgw consumer add`)' };
  }
  const parsed = consumerRecordSchema.safeParse(json);
  return parsed.success ? { ok: true, record: parsed.data } : { ok: false, error: formatZodIssues(parsed.error) };
}

export function describeOrigin(origin: DocumentOrigin): string {
  return origin.kind === 'file' ? `file ${origin.path}` : `KV ${origin.key} (ModifyIndex ${origin.modifyIndex})`;
}
