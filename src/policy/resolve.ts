import { contentHash } from '../core/hash.ts';
import type { KvEntry, Problem } from '../core/types.ts';
import { formatZodIssues } from './canary.ts';
import { consumerIdSchema, consumerRecordSchema, type ConsumerRecord } from './consumers.ts';
import { documentOfKvKey, documentId, parseDocumentText, type DocumentKind, type DocumentOrigin, type ParsedDocument, type RawDocument } from './documents.ts';

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
}

export const EMPTY_POLICY_SET: PolicySet = { documents: [], status: [], consumers: {}, problems: [] };

export function resolvePolicies(
  files: readonly RawDocument[],
  kv: readonly KvEntry[],
  kvPrefix: string,
  previous: PolicySet | undefined,
  /** Files that could not be read or are misplaced in the policy directory. */
  loadErrors: readonly { readonly path: string; readonly error: string }[] = [],
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

  const documents: DocumentInForce[] = [];
  const status: DocumentStatus[] = [];
  for (const id of [...new Set([...fromFiles.keys(), ...fromKv.keys()])].sort()) {
    const kvDoc = fromKv.get(id);
    const file = fromFiles.get(id);
    const newest = (kvDoc ?? file) as RawDocument;
    let inForce: DocumentInForce | undefined;
    let rejected: DocumentStatus['rejected'] = null;
    const parsed = parseDocumentText(newest.text, newest.kind);
    if (parsed.ok) {
      inForce = { id, kind: newest.kind, name: newest.name, origin: newest.origin, version: contentHash(parsed.value), parsed: parsed.value };
    } else {
      rejected = { origin: newest.origin, error: parsed.error };
      // Last good: what was in force for this id, else (first sight of a bad KV value) the file it overrides.
      inForce = previousById.get(id) ?? (kvDoc && file ? parsedFile(file) : undefined);
      problems.push({
        kind: 'policy',
        subject: id,
        message: `${describeOrigin(newest.origin)} rejected: ${parsed.error}`,
        keptLastGood: inForce !== undefined,
      });
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

  return {
    documents: withoutConflicts(documents, problems),
    status,
    consumers: resolveConsumers(consumerEntries, kvPrefix, previous?.consumers ?? {}, problems),
    problems,
  };
}

function parsedFile(file: RawDocument): DocumentInForce | undefined {
  const parsed = parseDocumentText(file.text, file.kind);
  return parsed.ok ? { id: file.id, kind: file.kind, name: file.name, origin: file.origin, version: contentHash(parsed.value), parsed: parsed.value } : undefined;
}

/** Two policy documents for the same target: the first id in sort order wins, the other is reported. */
function withoutConflicts(documents: DocumentInForce[], problems: Problem[]): DocumentInForce[] {
  const byTarget = new Map<string, string>();
  return documents.filter((d) => {
    if (d.parsed.kind !== 'policy') return true;
    const a = d.parsed.doc.appliesTo;
    const target = a === 'defaults' ? 'defaults' : 'service' in a ? `service ${a.service}` : `route ${a.route}`;
    const winner = byTarget.get(target);
    if (winner) {
      problems.push({ kind: 'policy', subject: d.id, message: `${target} already has policy ${winner} (first by name wins); this document is not applied` });
      return false;
    }
    byTarget.set(target, d.id);
    return true;
  });
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
    const checked = parseConsumerValue(entry.value);
    if (checked.ok) {
      out[id] = { id, record: checked.record, modifyIndex: entry.modifyIndex };
      continue;
    }
    const kept = previous[id];
    if (kept) out[id] = kept;
    problems.push({ kind: 'consumer', subject: entry.key, message: `invalid consumer record at ModifyIndex ${entry.modifyIndex}: ${checked.error}`, keptLastGood: kept !== undefined });
  }
  return out;
}

export function parseConsumerValue(text: string | null): { ok: true; record: ConsumerRecord } | { ok: false; error: string } {
  if (text === null || text.trim() === '') return { ok: false, error: 'value is empty' };
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
