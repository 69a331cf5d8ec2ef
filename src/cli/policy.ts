import { EventEmitter } from 'node:events';
import { readFileSync, statSync } from 'node:fs';
import { Agent as HttpAgent, STATUS_CODES, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { basename, dirname, relative, resolve } from 'node:path';
import Consul from 'consul';
import type { ConsulConnection } from '../consul/connection.ts';
import { describeError } from '../core/errors.ts';
import { documentId, documentOfFile, documentOfKvKey, kvKeyOfDocument, parseDocumentText, readPolicyDir, type DocumentKind, type RawDocument } from '../policy/documents.ts';
import { resolvePolicies } from '../policy/resolve.ts';
import { CliError } from './admin-client.ts';

/**
 * `cgw policy validate` and `cgw policy push`. Both parse with the gateway's own
 * `parseDocumentText` and `resolvePolicies`, so a document the CLI accepts is one the gateway
 * applies. Push copies file text verbatim (comments included) to `<prefix>policies/<name>` and
 * `<prefix>routes/<name>`, each write guarded by check-and-set on the ModifyIndex read just before
 * (Consul docs, KV store endpoint, `?cas=`): an operator editing the same key at the same time is
 * never overwritten silently.
 */

// ---------------------------------------------------------------------------------------------
// Consul access: KV (small enough to fake in unit tests) and the catalog, through the `consul`
// package, after checking that the address is a Consul agent at all.

export interface KvItem {
  readonly key: string;
  readonly value: string | null;
  readonly modifyIndex: number;
}

export interface KvStore {
  /** Every key under `prefix` (recursive); [] when there is none. */
  list(prefix: string): Promise<KvItem[]>;
  get(key: string): Promise<KvItem | undefined>;
  /** Check-and-set write; false when the key's ModifyIndex is no longer `cas` (0: the key exists). */
  set(key: string, value: string, cas: number): Promise<boolean>;
  /** Check-and-set delete; false when the key changed since ModifyIndex `cas`. */
  del(key: string, cas: number): Promise<boolean>;
}

/** A service as Consul's catalog lists it: every registered instance, whatever its health. */
export type ServiceLookup =
  | { readonly found: true; readonly instances: number; readonly tags: readonly string[] }
  /** No instance listed. With ACLs on, a token without service:read also sees none (Consul answers 200 []). */
  | { readonly found: false; readonly aclsEnabled: boolean };

export interface ServiceCatalog {
  service(name: string): Promise<ServiceLookup>;
}

export interface ConsulStore extends KvStore, ServiceCatalog {
  /** `http(s)://host:port`, for messages. */
  readonly address: string;
}

interface ConsulKvEntry {
  Key?: string;
  Value?: string | null;
  ModifyIndex?: number;
}

const itemOf = (e: ConsulKvEntry): KvItem => ({ key: String(e.Key ?? ''), value: e.Value ?? null, modifyIndex: Number(e.ModifyIndex ?? 0) });

/** Each request's bound: a Consul agent answers these reads and writes in milliseconds. */
const CONSUL_TIMEOUT_MS = 10_000;

interface RawResponse {
  readonly statusCode: number;
  readonly headers: IncomingHttpHeaders;
  readonly body?: unknown;
}

/** With an EventEmitter `ctx` whose `includeResponse` is true, the package answers [response, value]. */
type Answer = [RawResponse, unknown?];
interface CallOptions {
  readonly ctx: EventEmitter;
  readonly [name: string]: unknown;
}

/** The calls of the `consul` package used here (its typings know neither `ctx` nor `baseUrl`). */
interface RawConsul {
  readonly status: { leader(o: CallOptions): Promise<Answer> };
  readonly kv: { get(o: CallOptions): Promise<Answer>; set(o: CallOptions): Promise<Answer>; del(o: CallOptions): Promise<Answer> };
  readonly catalog: { readonly service: { nodes(o: CallOptions): Promise<Answer> } };
  /** papi's generic request, for an endpoint the package has no method for. */
  _get(o: { path: string; headers?: Record<string, string>; timeout?: number }): Promise<RawResponse>;
}

function withResponse(): EventEmitter {
  return Object.assign(new EventEmitter(), { includeResponse: true });
}

/**
 * The `consul` package takes TLS material through its `agent` option: papi hands it to
 * `https.request`, and an https.Agent's own options (ca, cert, key, servername) apply to every
 * socket it opens. `baseUrl` (rather than host/port, which it would join into "http://::1:8500")
 * keeps IPv6 addresses parseable.
 */
function rawConsul(c: ConsulConnection): RawConsul {
  const agent = c.secure ? new HttpsAgent({ keepAlive: false, ...(c.tls ?? {}) }) : new HttpAgent({ keepAlive: false });
  const Client = Consul as unknown as new (opts: Record<string, unknown>) => RawConsul;
  const client = new Client({
    baseUrl: `${c.address}/v1`,
    agent,
    defaults: { timeout: CONSUL_TIMEOUT_MS, ...(c.token ? { token: c.token } : {}) },
  });
  // papi keeps the URL's hostname, brackets included, and hands it to http.request, which then
  // looks up "[::1]" as a name; without brackets Node connects to the address and writes the
  // Host header with brackets itself.
  const base = (client as unknown as { _opts?: { baseUrl?: { hostname?: string } } })._opts?.baseUrl;
  if (base) base.hostname = c.hostname;
  return client;
}

function headerOf(res: RawResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function bodyText(res: RawResponse): string {
  const b = res.body;
  const text = typeof b === 'string' ? b : Buffer.isBuffer(b) ? b.toString('utf8') : b === undefined || b === null ? '' : JSON.stringify(b);
  return text.trim().replace(/\s+/g, ' ').slice(0, 200);
}

function statusText(res: RawResponse): string {
  return `${res.statusCode}${STATUS_CODES[res.statusCode] ? ` ${STATUS_CODES[res.statusCode]}` : ''}`;
}

/** A transport failure in words: the error codes of Node's net, tls and papi. */
function transportProblem(err: unknown, c: ConsulConnection): string {
  const e = err as { code?: string; message?: string; isTimeout?: boolean };
  const code = e.code ?? '';
  const message = (e.message ?? String(err)).replace(/^consul: [\w.]+: /, '');
  if (e.isTimeout) return `no answer within ${CONSUL_TIMEOUT_MS / 1000} s`;
  if (code === 'ECONNREFUSED') return 'connection refused (is a Consul agent listening there?)';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `host ${c.hostname} not found`;
  if (code === 'ECONNRESET') return 'connection reset';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return 'host unreachable';
  if (/wrong version number|packet length too long|unknown protocol/i.test(message)) return 'TLS handshake failed: the other side does not speak TLS (is it an http:// address?)';
  if (code === 'EPROTO') return `TLS handshake failed: ${message.split('\n')[0] ?? ''}`;
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) {
    return `TLS certificate not accepted: ${message} (CONSUL_CACERT names the CA, CONSUL_TLS_SERVER_NAME the name to verify)`;
  }
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

/** The response of an HTTP error (papi rejects non-2xx answers with it attached). */
function responseOf(err: unknown): RawResponse | undefined {
  const res = (err as { response?: RawResponse } | null)?.response;
  return res && typeof res.statusCode === 'number' ? res : undefined;
}

function isJson(res: RawResponse): boolean {
  return /^application\/json\b/i.test(headerOf(res, 'content-type') ?? '');
}

/**
 * Consul through the `consul` package. Before the first request it checks that the address is a
 * Consul agent (GET /v1/status/leader answers 200 with the leader's address as a JSON string), and
 * every KV or catalog answer must carry Consul's X-Consul-Index: an HTTP server that answers 404
 * or HTML to everything would otherwise read as "no such key". Failures are exit-1 CliErrors.
 */
export function consulKv(connection: ConsulConnection): ConsulStore {
  const raw = rawConsul(connection);
  const address = connection.address;
  let verified: Promise<void> | undefined;

  const notConsul = (why: string): CliError => new CliError(`${address} is not a Consul agent: ${why}`);
  const unreachable = (err: unknown): CliError => new CliError(`cannot reach Consul at ${address}: ${transportProblem(err, connection)}`);
  const tokenWords = connection.token ? `the ACL token from ${connection.tokenSource ?? '--token'}` : 'no ACL token was given (--token, CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE), and the anonymous token';
  const failed = (what: string, res: RawResponse): CliError => {
    const text = bodyText(res);
    if (res.statusCode === 403 && /ACL not found/i.test(text)) {
      return new CliError(`Consul at ${address} does not know ${connection.token ? `the ACL token from ${connection.tokenSource ?? '--token'}` : 'the anonymous token'} (403 ACL not found) and refused to ${what}`);
    }
    if (res.statusCode === 403) return new CliError(`Consul at ${address} refused to ${what}: ${tokenWords} lacks permission (403${text ? ` ${text}` : ''})`);
    return new CliError(`Consul at ${address} answered ${statusText(res)} when asked to ${what}${text ? `: ${text}` : ''}`);
  };

  /** One call: [response, value] on 2xx (and 404 for KV reads), a CliError otherwise. */
  const call = async (what: string, run: (ctx: EventEmitter) => Promise<Answer>, accept404 = false): Promise<Answer> => {
    await ready();
    let answer: Answer;
    try {
      answer = await run(withResponse());
    } catch (err) {
      const res = responseOf(err);
      if (!res) throw unreachable(err);
      // Consul's KV read answers 404 (with X-Consul-Index) for a missing key; readAnswer checks it.
      if (!(accept404 && res.statusCode === 404)) throw failed(what, res);
      answer = [res];
    }
    return answer;
  };

  const readAnswer = (what: string, [res]: Answer): void => {
    if (headerOf(res, 'x-consul-index') === undefined) throw notConsul(`its answer to a request to ${what} carries no X-Consul-Index header`);
  };

  const writeAnswer = (what: string, [res, value]: Answer): boolean => {
    if (typeof value !== 'boolean' || !isJson(res)) throw notConsul(`it answered ${JSON.stringify(bodyText(res))} when asked to ${what}, instead of true or false`);
    return value;
  };

  const verify = async (): Promise<void> => {
    let res: RawResponse;
    let value: unknown;
    try {
      [res, value] = await raw.status.leader({ ctx: withResponse() });
    } catch (err) {
      const r = responseOf(err);
      if (!r) throw unreachable(err);
      res = r;
      value = r.body;
    }
    if (res.statusCode === 400 && /HTTP request to an HTTPS server/i.test(bodyText(res))) {
      throw new CliError(`Consul at ${address} is an HTTPS listener: use https://${address.replace(/^http:\/\//, '')} or CONSUL_HTTP_SSL=true`);
    }
    if (res.statusCode === 403) throw failed('read /v1/status/leader', res);
    if (res.statusCode >= 500) {
      // Consul itself answers 5xx when its servers cannot be reached; a proxy in front may too.
      const text = bodyText(res);
      throw new CliError(`${address} is not a working Consul agent: GET /v1/status/leader answered ${statusText(res)}${text ? `: ${text}` : ''}`);
    }
    if (res.statusCode !== 200) throw notConsul(`GET /v1/status/leader answered ${statusText(res)}`);
    if (!isJson(res) || typeof value !== 'string' || (value !== '' && !/:\d+$/.test(value))) {
      const type = headerOf(res, 'content-type') ?? 'no content type';
      throw notConsul(`GET /v1/status/leader answered 200 with ${type} (${JSON.stringify(bodyText(res).slice(0, 60))}), not the leader's address as a JSON string`);
    }
    if (value === '') throw new CliError(`Consul at ${address} has no cluster leader (GET /v1/status/leader answered ""): reads and writes would fail; try again once the servers have elected one`);
  };
  const ready = (): Promise<void> => (verified ??= verify());

  const items = (value: unknown): ConsulKvEntry[] => (Array.isArray(value) ? (value as ConsulKvEntry[]) : value ? [value as ConsulKvEntry] : []);

  const store: ConsulStore = {
    address,
    async list(prefix) {
      const what = `list ${prefix}`;
      const answer = await call(what, (ctx) => raw.kv.get({ key: prefix, recurse: true, ctx }), true);
      readAnswer(what, answer);
      const found = items(answer[1]).map(itemOf);
      // With ACLs, a recursive read leaves out what the token may not read (404 when that is
      // everything); reading the prefix key itself answers 403 then, so an empty list is true.
      if (found.length === 0) await store.get(prefix);
      return found;
    },
    async get(key) {
      const what = `read ${key}`;
      const answer = await call(what, (ctx) => raw.kv.get({ key, ctx }), true);
      readAnswer(what, answer);
      if (answer[0].statusCode === 404) return undefined;
      const [entry] = items(answer[1]);
      if (!entry) throw notConsul(`it answered 200 without a KV entry when asked to ${what}`);
      return itemOf({ ...entry, Key: key });
    },
    async set(key, value, cas) {
      const what = `write ${key}`;
      return writeAnswer(what, await call(what, (ctx) => raw.kv.set({ key, value, cas, ctx })));
    },
    async del(key, cas) {
      const what = `delete ${key}`;
      return writeAnswer(what, await call(what, (ctx) => raw.kv.del({ key, cas, ctx })));
    },
    async service(name) {
      const what = `list the instances of service ${name}`;
      const answer = await call(what, (ctx) => raw.catalog.service.nodes({ service: name, ctx }));
      readAnswer(what, answer);
      if (!Array.isArray(answer[1])) throw notConsul(`it answered ${JSON.stringify(bodyText(answer[0]).slice(0, 60))} when asked to ${what}, not a JSON list`);
      const instances = answer[1] as { ServiceTags?: unknown }[];
      if (instances.length > 0) {
        const tags = new Set<string>();
        for (const i of instances) for (const t of Array.isArray(i.ServiceTags) ? i.ServiceTags : []) if (typeof t === 'string') tags.add(t);
        return { found: true, instances: instances.length, tags: [...tags].sort() };
      }
      return { found: false, aclsEnabled: await aclsEnabled() };
    },
  };

  /** Whether the agent enforces ACLs: GET /v1/acl/token/self answers 401 "ACL support disabled" when not. */
  const aclsEnabled = async (): Promise<boolean> => {
    try {
      await raw._get({ path: '/acl/token/self', timeout: CONSUL_TIMEOUT_MS, headers: connection.token ? { 'x-consul-token': connection.token } : {} });
      return true;
    } catch (err) {
      const res = responseOf(err);
      if (!res) throw unreachable(err);
      return !(res.statusCode === 401 && /ACL support disabled/i.test(bodyText(res)));
    }
  };

  return store;
}

/** `gateway` → `gateway/`, validated like `cgw start --kv-prefix`. */
export function normalizeKvPrefix(prefix: string): string {
  if (!/^[A-Za-z0-9_./-]*$/.test(prefix)) throw new CliError(`--kv-prefix: "${prefix}" may hold only letters, digits and _ . / -`, 2);
  return prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
}

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
    if (!opts.dryRun && !(await kv.set(key, text, cas))) lost(key, cas, current ? 'updated' : 'created');
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
