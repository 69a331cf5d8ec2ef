import { readFileSync, statSync } from 'node:fs';
import { basename, dirname, relative, resolve } from 'node:path';
import { describeError } from '../core/errors.ts';
import { documentId, documentOfFile, documentOfKvKey, kvKeyOfDocument, parseDocumentText, readPolicyDir, type DocumentKind, type RawDocument } from '../policy/documents.ts';
import { resolvePolicies } from '../policy/resolve.ts';
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
}

export interface PushOutcome {
  readonly results: readonly PushResult[];
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
  return { results, extra: opts.prune ? [] : extra };
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
