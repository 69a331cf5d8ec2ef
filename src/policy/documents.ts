import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join, relative } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { z } from 'zod';
import { describeError } from '../core/errors.ts';
import { formatZodIssues, type ParseResult } from './canary.ts';
import { policyDocumentSchema, routeDocumentSchema, type PolicyDocument, type RouteDocument } from './schema.ts';
import { ParseMemo } from './value-bounds.ts';
import { checkYamlBounds } from './yaml-bounds.ts';

/**
 * Where documents live. The file tree mirrors the KV tree, so `cgw policy push <dir>` is a plain
 * copy: `<dir>/<name>.yaml` ↔ `<prefix>policies/<name>`, `<dir>/routes/<name>.yaml` ↔
 * `<prefix>routes/<name>`. A KV document wins over the file with the same id.
 */
export type DocumentKind = 'policy' | 'route';

export type DocumentOrigin =
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'kv'; readonly key: string; readonly modifyIndex: number };

export interface RawDocument {
  /** `policies/<name>` or `routes/<name>`: the identity a KV document and a file share. */
  readonly id: string;
  readonly kind: DocumentKind;
  readonly name: string;
  readonly origin: DocumentOrigin;
  readonly text: string | null;
}

export type ParsedDocument = { readonly kind: 'policy'; readonly doc: PolicyDocument } | { readonly kind: 'route'; readonly doc: RouteDocument };

export const DOCUMENT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const EXTENSIONS = new Set(['.json', '.yaml', '.yml']);
const MAX_DOCUMENT_BYTES = 512 * 1024;

export function documentId(kind: DocumentKind, name: string): string {
  return `${kind === 'policy' ? 'policies' : 'routes'}/${name}`;
}

/** `<prefix>policies/<name>` or `<prefix>routes/<name>` → kind and name; anything else → undefined. */
export function documentOfKvKey(key: string, kvPrefix: string): { kind: DocumentKind; name: string } | undefined {
  if (!key.startsWith(kvPrefix)) return undefined;
  const rest = key.slice(kvPrefix.length);
  const m = /^(policies|routes)\/([^/]+)$/.exec(rest);
  if (!m?.[2]) return undefined;
  return { kind: m[1] === 'policies' ? 'policy' : 'route', name: m[2] };
}

export function kvKeyOfDocument(kind: DocumentKind, name: string, kvPrefix: string): string {
  return `${kvPrefix}${documentId(kind, name)}`;
}

const policyMemo = new ParseMemo<ParseResult<ParsedDocument>>();
const routeMemo = new ParseMemo<ParseResult<ParsedDocument>>();

/** JSON or YAML (YAML is a superset of JSON, so one parser reads both). */
export function parseDocumentText(text: string | null, kind: DocumentKind): ParseResult<ParsedDocument> {
  if (text === null || text.trim() === '') return { ok: false, error: 'document is empty' };
  return (kind === 'policy' ? policyMemo : routeMemo).get(text, (t) => parseBoundedDocument(t, kind));
}

/**
 * YAML text parsed without aliases, once it is known not to be too large or deep for the parser.
 * Also used to read a rejected document's `appliesTo` leniently.
 */
export function readYamlSafely(text: string): { ok: true; data: unknown } | { ok: false; error: string; err?: unknown } {
  const bounds = checkYamlBounds(text, MAX_DOCUMENT_BYTES);
  if (!bounds.ok) return { ok: false, error: `document is ${bounds.error}; refused before parsing` };
  try {
    // Aliases are refused: a few lines of YAML anchors can expand to gigabytes ("billion laughs").
    // logLevel error: the parser's warnings (one per unknown tag) would let a KV value flood stderr.
    return { ok: true, data: parseYaml(text, { maxAliasCount: 0, prettyErrors: false, uniqueKeys: true, logLevel: 'error' }) };
  } catch (err) {
    return { ok: false, error: '', err };
  }
}

function parseBoundedDocument(text: string, kind: DocumentKind): ParseResult<ParsedDocument> {
  const read = readYamlSafely(text);
  let data: unknown;
  if (read.ok) data = read.data;
  else if (read.err === undefined) return { ok: false, error: read.error };
  else {
    const err = read.err;
    // With prettyErrors off the parser never sets linePos, so the position is counted from err.pos.
    const before = err instanceof YAMLParseError && err.pos[0] >= 0 ? text.slice(0, err.pos[0]).split('\n') : undefined;
    const where = before ? ` (line ${before.length}, column ${(before.at(-1) ?? '').length + 1})` : '';
    return { ok: false, error: `not valid JSON or YAML${where}: ${describeError(err).split('\n')[0] ?? ''}` };
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return { ok: false, error: 'document must be an object' };
  if (kind === 'policy') return fromZod(policyDocumentSchema.safeParse(data), (doc) => ({ kind, doc }));
  return fromZod(routeDocumentSchema.safeParse(data), (doc) => ({ kind, doc }));
}

function fromZod<I, O>(result: z.ZodSafeParseResult<I>, wrap: (value: I) => O): ParseResult<O> {
  return result.success ? { ok: true, value: wrap(result.data) } : { ok: false, error: formatZodIssues(result.error) };
}

/** A policy file's kind and name from its place in the tree: `<name>.yaml` or `routes/<name>.yaml`. */
export function documentOfFile(root: string, path: string): { kind: DocumentKind; name: string } | { error: string } {
  const rel = relative(root, path).split('\\').join('/');
  const ext = extname(rel).toLowerCase();
  if (!EXTENSIONS.has(ext)) return { error: `${rel}: not a .json, .yaml or .yml file` };
  const name = basename(rel, extname(rel));
  if (!DOCUMENT_NAME.test(name)) return { error: `${rel}: document names are letters, digits, _ . - (up to 128)` };
  const parts = rel.split('/');
  if (parts.length === 1) return { kind: 'policy', name };
  if (parts.length === 2 && parts[0] === 'routes') return { kind: 'route', name };
  return { error: `${rel}: policy files live in the directory itself or in routes/` };
}

/** Reads every document under `dir` (not recursive beyond routes/). Unreadable files are reported, not thrown. */
export function readPolicyDir(dir: string): { documents: RawDocument[]; errors: { path: string; error: string }[] } {
  const documents: RawDocument[] = [];
  const errors: { path: string; error: string }[] = [];
  const candidates: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const full = join(dir, entry);
    if (entry === 'routes' && statSync(full).isDirectory()) {
      for (const r of readdirSync(full).sort()) if (EXTENSIONS.has(extname(r).toLowerCase())) candidates.push(join(full, r));
    } else if (EXTENSIONS.has(extname(entry).toLowerCase()) && statSync(full).isFile()) {
      candidates.push(full);
    }
  }
  const seen = new Map<string, string>();
  for (const path of candidates) {
    const where = documentOfFile(dir, path);
    if ('error' in where) {
      errors.push({ path, error: where.error });
      continue;
    }
    const id = documentId(where.kind, where.name);
    const other = seen.get(id);
    if (other) {
      errors.push({ path, error: `same document id ${id} as ${other}; ignored` });
      continue;
    }
    seen.set(id, path);
    try {
      documents.push({ id, kind: where.kind, name: where.name, origin: { kind: 'file', path }, text: readFileSync(path, 'utf8') });
    } catch (err) {
      errors.push({ path, error: describeError(err) });
    }
  }
  return { documents, errors };
}
