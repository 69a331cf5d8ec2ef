import { readFileSync, statSync } from 'node:fs';
import { basename, dirname, relative, resolve } from 'node:path';
import { describeError } from '../core/errors.ts';
import { documentId, documentOfFile, documentOfKvKey, kvKeyOfDocument, parseDocumentText, readPolicyDir, type DocumentKind, type RawDocument } from '../policy/documents.ts';
import { resolvePolicies } from '../policy/resolve.ts';
import { guardSchema, parseGuardValue, valueHash, type Guard } from '../policy/guard.ts';
import type { RolloutCriteria } from '../policy/rollout.ts';
import { KV_WRITERS } from '../core/kv-layout.ts';
import { CliError } from './admin-client.ts';
import { normalizeKvPrefix, type KvItem, type KvStore } from './consul-kv.ts';

/**
 * `cgw policy validate` and `cgw policy push`. Both parse with the gateway's own
 * `parseDocumentText` and `resolvePolicies`, so a document the CLI accepts is one the gateway
 * applies. Push copies file text verbatim (comments included) to `<prefix>policies/<name>` and
 * `<prefix>routes/<name>`, each write guarded by check-and-set on the ModifyIndex read just before
 * (Consul docs, KV store endpoint, `?cas=`): an operator editing the same key at the same time is
 * never overwritten silently.
 */

// ---------------------------------------------------------------------------------------------
// validate

export interface FileReport {
  /** The path as given (or as found under a directory given). */
  readonly file: string;
  /** `policies/<name>` or `routes/<name>`; null when the file's place or name is already wrong. */
  readonly id: string | null;
  readonly kind: DocumentKind | null;
  readonly ok: boolean;
  readonly error: string | null;
}

export interface ConflictReport {
  readonly id: string;
  readonly file: string | null;
  readonly message: string;
}

export interface ValidationReport {
  readonly ok: boolean;
  readonly files: readonly FileReport[];
  readonly conflicts: readonly ConflictReport[];
  /** The valid documents, ready to push. */
  readonly documents: readonly RawDocument[];
}

const EXTENSIONS = /\.(json|ya?ml)$/i;

/**
 * Validates files and directories. A directory is read exactly as `cgw start --policies` reads it;
 * a single file is a route document when its directory is named `routes`, else a policy document.
 */
export function validatePaths(paths: readonly string[]): ValidationReport {
  const files: FileReport[] = [];
  const documents: RawDocument[] = [];
  const seenPaths = new Set<string>();
  const fileOfId = new Map<string, string>();

  const accept = (doc: RawDocument, file: string): void => {
    const abs = resolve(file);
    if (seenPaths.has(abs)) return;
    seenPaths.add(abs);
    const other = fileOfId.get(doc.id);
    if (other !== undefined) {
      files.push({ file, id: doc.id, kind: doc.kind, ok: false, error: `same document id ${doc.id} as ${other}` });
      return;
    }
    fileOfId.set(doc.id, file);
    const parsed = parseDocumentText(doc.text, doc.kind);
    files.push({ file, id: doc.id, kind: doc.kind, ok: parsed.ok, error: parsed.ok ? null : parsed.error });
    if (parsed.ok) documents.push(doc);
  };
  const refuse = (file: string, error: string): void => {
    files.push({ file, id: null, kind: null, ok: false, error });
  };

  for (const path of paths) {
    let isDir: boolean;
    try {
      const st = statSync(path);
      if (!st.isDirectory() && !st.isFile()) {
        refuse(path, 'not a file or directory');
        continue;
      }
      isDir = st.isDirectory();
    } catch (err) {
      refuse(path, (err as { code?: string }).code === 'ENOENT' ? 'no such file or directory' : describeError(err));
      continue;
    }
    if (isDir) {
      let read: ReturnType<typeof readPolicyDir>;
      try {
        read = readPolicyDir(path);
      } catch (err) {
        refuse(path, `cannot read directory: ${describeError(err)}`);
        continue;
      }
      if (read.documents.length === 0 && read.errors.length === 0) {
        refuse(path, 'no policy documents (*.json, *.yaml, *.yml, routes/*) in this directory');
        continue;
      }
      for (const doc of read.documents) accept(doc, doc.origin.kind === 'file' ? doc.origin.path : doc.id);
      for (const e of read.errors) {
        // readPolicyDir prefixes some messages with the relative path; the line already names the file.
        const rel = relative(path, e.path).split('\\').join('/');
        refuse(e.path, e.error.startsWith(`${rel}: `) ? e.error.slice(rel.length + 2) : e.error);
      }
      continue;
    }
    if (!EXTENSIONS.test(path)) {
      refuse(path, 'not a .json, .yaml or .yml file');
      continue;
    }
    const parent = dirname(resolve(path));
    const root = basename(parent) === 'routes' ? dirname(parent) : parent;
    const where = documentOfFile(root, resolve(path));
    if ('error' in where) {
      refuse(path, where.error.replace(/^[^:]*: /, ''));
      continue;
    }
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      refuse(path, describeError(err));
      continue;
    }
    accept({ id: documentId(where.kind, where.name), kind: where.kind, name: where.name, origin: { kind: 'file', path }, text }, path);
  }

  // What the gateway would refuse beyond single documents: two policies for one target.
  const conflicts = resolvePolicies(documents, [], '', undefined).problems.map((p) => ({ id: p.subject, file: fileOfId.get(p.subject) ?? null, message: p.message }));
  return { ok: files.every((f) => f.ok) && conflicts.length === 0, files, conflicts, documents };
}

export function formatValidation(report: ValidationReport): string[] {
  const lines = report.files.map((f) => (f.ok ? `ok   ${f.file} (${f.id ?? ''})` : `FAIL ${f.file}: ${f.error ?? ''}`));
  for (const c of report.conflicts) lines.push(`FAIL ${c.file ?? c.id} (${c.id}): conflict: ${c.message}`);
  return lines;
}

export function validationSummary(report: ValidationReport): string {
  const bad = report.files.filter((f) => !f.ok).length;
  const parts = [`${bad} of ${report.files.length} document${report.files.length === 1 ? '' : 's'} invalid`];
  if (report.conflicts.length > 0) parts.push(`${report.conflicts.length} conflict${report.conflicts.length === 1 ? '' : 's'}`);
  return parts.join(', ');
}

export function validationJson(report: ValidationReport) {
  return { ok: report.ok, files: report.files, conflicts: report.conflicts };
}

// ---------------------------------------------------------------------------------------------
// push

export type PushAction = 'created' | 'updated' | 'unchanged' | 'deleted';

export interface PushResult {
  readonly action: PushAction;
  readonly key: string;
  /** The file the value comes from; null for a pruned key. */
  readonly file: string | null;
  /** The ModifyIndex the write or delete was conditioned on (0: create only). */
  readonly cas: number;
}

export interface PushOptions {
  readonly kvPrefix: string;
  readonly prune?: boolean;
  readonly dryRun?: boolean;
  /** Called for each document as soon as it is done (so progress shows even if a later key fails). */
  readonly onResult?: (result: PushResult) => void;
  /** `--guard`: watch the routes the change touches and write the old values back if they get worse. */
  readonly guard?: { readonly windowMs: number; readonly criteria: RolloutCriteria; readonly now?: Date };
}

export interface PushOutcome {
  readonly results: readonly PushResult[];
  /** The guard written before the documents (`<prefix>guards/<id>`), when asked for and something changed. */
  readonly guard?: { readonly key: string; readonly id: string };
  /** KV documents without a file, left alone because --prune was not given. */
  readonly extra: readonly string[];
}

/** A check-and-set race lost in the middle of a push: exit 3, with what was already done. */
export class PushRaceError extends CliError {
  constructor(
    message: string,
    readonly done: readonly PushResult[],
  ) {
    super(message, 3);
  }
}

/** Every document under `dir`, validated first: nothing is written when one is invalid. */
export async function pushPolicies(kv: KvStore, dir: string, opts: PushOptions): Promise<PushOutcome> {
  let isDir = false;
  try {
    isDir = statSync(dir).isDirectory();
  } catch {
    /* reported below */
  }
  if (!isDir) throw new CliError(`${dir} is not a directory (push takes the policy directory, laid out like --policies)`, 2);
  const report = validatePaths([dir]);
  if (!report.ok) {
    throw new PushValidationError(report);
  }

  const prefix = normalizeKvPrefix(opts.kvPrefix);
  const stored = new Map<string, KvItem>();
  for (const sub of ['policies/', 'routes/']) {
    for (const item of await kv.list(`${prefix}${sub}`)) if (documentOfKvKey(item.key, prefix)) stored.set(item.key, item);
  }

  const wanted = new Set(report.documents.map((doc) => kvKeyOfDocument(doc.kind, doc.name, prefix)));
  const extra = [...stored.keys()].filter((k) => !wanted.has(k)).sort();
  const planned = report.documents.length + (opts.prune ? extra.length : 0);

  const results: PushResult[] = [];
  const done = (r: PushResult): void => {
    results.push(r);
    opts.onResult?.(r);
  };
  const lost = (key: string, cas: number, verb: string): never => {
    const written = results.filter((r) => r.action !== 'unchanged');
    const left = planned - results.length - 1;
    throw new PushRaceError(
      `${key} was changed by someone else during the push (check-and-set on ModifyIndex ${cas} lost); not ${verb}. ` +
        (written.length === 0
          ? 'Nothing had been written yet.'
          : `The ${written.length} key${written.length === 1 ? '' : 's'} already written stay${written.length === 1 ? 's' : ''}: ${written.map((r) => r.key).join(', ')}.`) +
        `${left > 0 ? ` The other ${left} were not pushed.` : ''} Check the key and push again.`,
      results,
    );
  };

  let guarded: PushOutcome['guard'];
  if (opts.guard && !opts.dryRun) {
    const changes: Guard['changes'] = [];
    for (const doc of report.documents) {
      const key = kvKeyOfDocument(doc.kind, doc.name, prefix);
      const current = stored.get(key);
      if (!current || current.value !== (doc.text ?? '')) changes.push({ key, previous: current?.value ?? null, written: valueHash(doc.text ?? '') });
    }
    if (opts.prune) for (const key of extra) changes.push({ key, previous: stored.get(key)?.value ?? null, written: null });
    if (changes.length > 0) guarded = await writeGuard(kv, prefix, changes, opts.guard);
  }

  for (const doc of report.documents) {
    const key = kvKeyOfDocument(doc.kind, doc.name, prefix);
    const file = doc.origin.kind === 'file' ? doc.origin.path : doc.id;
    const text = doc.text ?? '';
    const current = stored.get(key);
    if (current && current.value === text) {
      done({ action: 'unchanged', key, file, cas: current.modifyIndex });
      continue;
    }
    const cas = current?.modifyIndex ?? 0;
    if (!opts.dryRun && !(await kv.set(key, text, cas, KV_WRITERS['cgw policy push']))) lost(key, cas, current ? 'updated' : 'created');
    done({ action: current ? 'updated' : 'created', key, file, cas });
  }

  if (opts.prune) {
    for (const key of extra) {
      const cas = stored.get(key)?.modifyIndex ?? 0;
      if (!opts.dryRun && !(await kv.del(key, cas))) lost(key, cas, 'deleted');
      done({ action: 'deleted', key, file: null, cas });
    }
  }
  return { results, extra: opts.prune ? [] : extra, ...(guarded ? { guard: guarded } : {}) };
}

/**
 * The guard goes in before the documents, so no gateway applies the change unguarded; the
 * documents' previous values travel in it (KV holds them already; nothing new is exposed).
 */
async function writeGuard(kv: KvStore, prefix: string, changes: Guard['changes'], guard: NonNullable<PushOptions['guard']>): Promise<{ key: string; id: string }> {
  const now = guard.now ?? new Date();
  const id = `push-${now.toISOString().replace(/[-:.]/g, '').toLowerCase()}-${Math.random().toString(36).slice(2, 6)}`;
  const candidate = { id, createdAt: now.toISOString(), windowMs: guard.windowMs, criteria: guard.criteria, changes, state: 'watching' };
  const checked = guardSchema.safeParse(candidate);
  if (!checked.success) throw new CliError(`the guard cannot be written: ${checked.error.issues.map((i) => i.message).join('; ')}; nothing was pushed`, 2);
  const key = `${prefix}guards/${id}`;
  if (!(await kv.set(key, JSON.stringify(checked.data), 0))) throw new CliError(`${key} exists already; nothing was pushed`, 3);
  return { key, id };
}

export interface StoredGuard {
  readonly key: string;
  readonly modifyIndex: number;
  readonly guard: Guard | null;
  readonly invalid: string | null;
}

/** Every guard under `<prefix>guards/`, newest first. */
export async function listGuards(kv: KvStore, kvPrefix: string): Promise<StoredGuard[]> {
  const base = `${normalizeKvPrefix(kvPrefix)}guards/`;
  const out: StoredGuard[] = [];
  for (const item of await kv.list(base)) {
    if (item.key === base) continue;
    const parsed = parseGuardValue(item.value);
    out.push({ key: item.key, modifyIndex: item.modifyIndex, guard: parsed.ok ? parsed.value : null, invalid: parsed.ok ? null : parsed.error });
  }
  return out.sort((a, b) => (b.guard?.createdAt ?? '').localeCompare(a.guard?.createdAt ?? ''));
}

/** Invalid documents in a push: exit 2, the report says which. */
export class PushValidationError extends CliError {
  constructor(readonly report: ValidationReport) {
    super(`${validationSummary(report)}; nothing was written`, 2);
  }
}

export function formatPushResult(r: PushResult, dryRun: boolean): string {
  const verb = dryRun && r.action !== 'unchanged' ? `would ${r.action === 'created' ? 'create' : r.action === 'updated' ? 'update' : 'delete'}` : r.action;
  return `${verb.padEnd(dryRun ? 12 : 9)}  ${r.key}${r.file ? `  (${r.file})` : ''}`;
}
