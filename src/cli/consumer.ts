import { z } from 'zod';
import { consumerIdSchema, consumerRecordSchema, generateApiKey, type ConsumerRecordInput } from '../policy/consumers.ts';
import { documentOfKvKey, parseDocumentText } from '../policy/documents.ts';
import { parseConsumerValue } from '../policy/resolve.ts';
import { CliError } from './admin-client.ts';
import { normalizeKvPrefix, type KvStore } from './consul-kv.ts';

/**
 * `cgw consumer add|rotate|revoke` and `cgw consumers`: API-key consumers at
 * `<prefix>consumers/<id>`. The key is generated here, printed once and never stored anywhere:
 * KV holds its SHA-256 only. Every write is check-and-set (`cas=0` to create, the ModifyIndex just
 * read to rotate or revoke), so two operators cannot silently overwrite each other.
 */

export interface ConsumerAddOptions {
  readonly plan?: string;
  readonly scopes?: readonly string[];
  readonly limit?: number;
  readonly window?: string;
  readonly burst?: number;
  readonly description?: string;
}

/** What the consumer commands print about a consumer: everything but its key hash. */
interface ConsumerSummary {
  readonly id: string;
  readonly kvKey: string;
  readonly plan: string | null;
  readonly scopes: readonly string[];
  readonly limits: { readonly limit: number; readonly window: string; readonly burst?: number } | null;
  readonly description: string | null;
  readonly createdAt: string | null;
}

/** What `add` and `rotate` print: the key, once, and the record without its hash. */
export interface IssuedKey extends ConsumerSummary {
  readonly key: string;
}

export interface ConsumerListing extends ConsumerSummary {
  readonly modifyIndex: number;
  /** Why the gateway refuses this record (it ignores it or keeps the last good one); null when valid. */
  readonly invalid: string | null;
}

/** Field paths in the record → the flag an operator typed. */
const FLAG_OF_FIELD: Record<string, string> = {
  plan: '--plan',
  scopes: '--scopes',
  'limits.limit': '--limit',
  'limits.window': '--window',
  'limits.burst': '--burst',
  limits: '--limit/--window',
  description: '--description',
};

function flagIssues(error: z.ZodError): string {
  return error.issues
    .map((i) => {
      const path = i.path.filter((p) => typeof p === 'string').join('.');
      const flag = FLAG_OF_FIELD[path] ?? (path.startsWith('scopes') ? '--scopes' : undefined);
      return flag ? `${flag}: ${i.message}` : path ? `${path}: ${i.message}` : i.message;
    })
    .join('; ');
}

export function consumerKey(kvPrefix: string, id: string): string {
  const checked = consumerIdSchema.safeParse(id);
  if (!checked.success) throw new CliError(`"${id}" is not a valid consumer id: ${checked.error.issues[0]?.message ?? 'invalid'}`, 2);
  return `${normalizeKvPrefix(kvPrefix)}consumers/${id}`;
}

/** The stored record, minus the hash; limits as written (window "1m", not milliseconds). */
function describeRecord(raw: Record<string, unknown>) {
  const limits = raw.limits as { limit: number; window: string; burst?: number } | undefined;
  return {
    plan: typeof raw.plan === 'string' ? raw.plan : null,
    scopes: Array.isArray(raw.scopes) ? (raw.scopes as string[]) : [],
    limits: limits ? { limit: limits.limit, window: limits.window, ...(limits.burst !== undefined ? { burst: limits.burst } : {}) } : null,
    description: typeof raw.description === 'string' ? raw.description : null,
    createdAt: typeof raw.createdAt === 'string' ? raw.createdAt : null,
  };
}

export function buildConsumerRecord(keyHash: string, opts: ConsumerAddOptions, now = new Date()): ConsumerRecordInput {
  if (opts.limit === undefined && opts.window !== undefined) throw new CliError('--window needs --limit (e.g. --limit 100 --window 1m)', 2);
  if (opts.limit !== undefined && opts.window === undefined) throw new CliError('--limit needs --window (e.g. --limit 100 --window 1m)', 2);
  if (opts.burst !== undefined && opts.limit === undefined) throw new CliError('--burst needs --limit and --window', 2);
  const record: ConsumerRecordInput = {
    keyHash,
    ...(opts.plan !== undefined ? { plan: opts.plan } : {}),
    scopes: [...(opts.scopes ?? [])],
    ...(opts.limit !== undefined && opts.window !== undefined
      ? { limits: { limit: opts.limit, window: opts.window, ...(opts.burst !== undefined ? { burst: opts.burst } : {}) } }
      : {}),
    ...(opts.description !== undefined ? { description: opts.description } : {}),
    createdAt: now.toISOString(),
  };
  const checked = consumerRecordSchema.safeParse(record);
  if (!checked.success) throw new CliError(`invalid consumer: ${flagIssues(checked.error)}`, 2);
  return record;
}

// ---------------------------------------------------------------------------------------------
// Plans: a consumer's plan only means something when a rate limit lists it under `plans`.

/** Reads one JSON view of the gateway admin API (GET <admin><path>); throws a CliError when it cannot. */
export interface AdminReader {
  readonly address: string;
  read(path: string): Promise<unknown>;
}

export interface PlanCheckOptions {
  /** The gateway whose documents in force (files included) are checked too; undefined: KV only. */
  readonly admin?: AdminReader;
  /** --force: create or rotate even when no policy defines the plan. */
  readonly force?: boolean;
}

export interface PlanCatalog {
  /** Plan → where it is defined (`kv:<key>` or `file:<path>`). */
  readonly plans: ReadonlyMap<string, readonly string[]>;
  /** Why the gateway's documents in force could not be read; null when they were. */
  readonly gatewayUnchecked: string | null;
}

/** The parts of GET /v1/snapshot (the snapshot in force, redacted) that say which plans exist. */
const snapshotPlans = z
  .object({
    snapshot: z
      .object({
        policies: z
          .object({
            documents: z.array(
              z
                .object({
                  id: z.string(),
                  origin: z.object({ kind: z.string(), path: z.string().optional(), key: z.string().optional() }).loose().optional(),
                  parsed: z
                    .object({
                      kind: z.string(),
                      doc: z.object({ rateLimits: z.array(z.object({ plans: z.record(z.string(), z.unknown()).optional() }).loose()).optional() }).loose(),
                    })
                    .loose(),
                })
                .loose(),
            ),
          })
          .loose(),
      })
      .loose(),
  })
  .loose()
  .nullable();

function addPlan(out: Map<string, string[]>, plan: string, where: string): void {
  const list = out.get(plan) ?? [];
  if (!list.includes(where)) list.push(where);
  out.set(plan, list);
}

/**
 * The plans defined by policy documents in KV (`<prefix>policies/*`, parsed with the gateway's own
 * parser) and, when the admin API answers, by the documents the gateway has in force (which
 * include those loaded from files with --policies).
 */
export async function definedPlans(kv: KvStore, kvPrefix: string, admin: AdminReader | undefined): Promise<PlanCatalog> {
  const prefix = normalizeKvPrefix(kvPrefix);
  const plans = new Map<string, string[]>();
  for (const item of await kv.list(`${prefix}policies/`)) {
    if (documentOfKvKey(item.key, prefix)?.kind !== 'policy') continue;
    const parsed = parseDocumentText(item.value, 'policy');
    if (!parsed.ok || parsed.value.kind !== 'policy') continue;
    for (const rule of parsed.value.doc.rateLimits ?? []) for (const plan of Object.keys(rule.plans ?? {})) addPlan(plans, plan, `kv:${item.key}`);
  }
  if (!admin) return { plans, gatewayUnchecked: 'no admin API given' };
  let body: unknown;
  try {
    body = await admin.read('/v1/snapshot');
  } catch (err) {
    return { plans, gatewayUnchecked: err instanceof Error ? err.message : String(err) };
  }
  const view = snapshotPlans.safeParse(body);
  if (!view.success) return { plans, gatewayUnchecked: `${admin.address}/v1/snapshot is not a cgw snapshot` };
  if (view.data === null) return { plans, gatewayUnchecked: `the gateway at ${admin.address} has no snapshot in force yet (not ready)` };
  for (const doc of view.data.snapshot.policies.documents) {
    if (doc.parsed.kind !== 'policy') continue;
    const origin = doc.origin;
    const where = origin?.kind === 'file' && origin.path ? `file:${origin.path}` : origin?.kind === 'kv' && origin.key ? `kv:${origin.key}` : doc.id;
    for (const rule of doc.parsed.doc.rateLimits ?? []) for (const plan of Object.keys(rule.plans ?? {})) addPlan(plans, plan, where);
  }
  return { plans, gatewayUnchecked: null };
}

/** Refuses (exit 2) a plan no policy defines, unless --force; then returns the warning to print. */
export async function checkPlan(kv: KvStore, kvPrefix: string, plan: string, opts: PlanCheckOptions): Promise<string | null> {
  const catalog = await definedPlans(kv, kvPrefix, opts.admin);
  if (catalog.plans.has(plan)) return null;
  const prefix = normalizeKvPrefix(kvPrefix);
  const known = [...catalog.plans.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([p, where]) => `${p} (${where.join(', ')})`);
  const existing = known.length > 0 ? `plans that exist: ${known.join('; ')}` : 'no policy defines any plan yet';
  const problem =
    catalog.gatewayUnchecked === null
      ? `plan "${plan}" is defined by no policy: no rate limit in the KV documents under ${prefix}policies/ or in the documents in force at the gateway (${opts.admin?.address ?? '?'}) lists it under plans; ${existing}`
      : `plan "${plan}" is defined by no policy document in KV (${prefix}policies/), and file policies (--policies) could not be checked: ${catalog.gatewayUnchecked}; ${existing}`;
  if (!opts.force) throw new CliError(`${problem}. Nothing written; --force writes the consumer anyway`, 2);
  return `${problem} (written anyway: --force)`;
}

export async function addConsumer(
  kv: KvStore,
  kvPrefix: string,
  id: string,
  opts: ConsumerAddOptions,
  planCheck: PlanCheckOptions = {},
): Promise<IssuedKey & { warnings: string[] }> {
  const kvKey = consumerKey(kvPrefix, id);
  const { key, keyHash } = generateApiKey(id);
  const record = buildConsumerRecord(keyHash, opts);
  const existing = await kv.get(kvKey);
  if (existing) {
    throw new CliError(`consumer ${id} already exists (${kvKey}, ModifyIndex ${existing.modifyIndex}); nothing written. \`cgw consumer rotate ${id}\` gives it a new key, \`cgw consumer revoke ${id}\` deletes it`);
  }
  const warning = opts.plan !== undefined ? await checkPlan(kv, kvPrefix, opts.plan, planCheck) : null;
  // cas=0: create only. An existing consumer is never replaced by `add` (its key would die silently).
  if (!(await kv.set(kvKey, JSON.stringify(record), 0))) {
    throw new CliError(`consumer ${id} was created by someone else while adding (check-and-set with cas=0 lost); nothing written`, 3);
  }
  return { id, key, kvKey, ...describeRecord(record as Record<string, unknown>), warnings: warning ? [warning] : [] };
}

async function readConsumer(kv: KvStore, kvKey: string, id: string): Promise<{ raw: Record<string, unknown>; modifyIndex: number }> {
  const current = await kv.get(kvKey);
  if (!current) throw new CliError(`no consumer ${id} (${kvKey} does not exist)`);
  const checked = parseConsumerValue(current.value);
  if (!checked.ok) {
    throw new CliError(`the record at ${kvKey} (ModifyIndex ${current.modifyIndex}) is invalid: ${checked.error}; revoke it and add the consumer again`);
  }
  return { raw: JSON.parse(current.value ?? '{}') as Record<string, unknown>, modifyIndex: current.modifyIndex };
}

/**
 * A new key for an existing consumer; scopes, limits and description stay, and so does the plan
 * unless `--plan` gives a new one. The old key dies with this write.
 */
export async function rotateConsumer(
  kv: KvStore,
  kvPrefix: string,
  id: string,
  opts: { readonly plan?: string } = {},
  planCheck: PlanCheckOptions = {},
): Promise<IssuedKey & { previousModifyIndex: number; warnings: string[] }> {
  const kvKey = consumerKey(kvPrefix, id);
  const { raw, modifyIndex } = await readConsumer(kv, kvKey, id);
  const { key, keyHash } = generateApiKey(id);
  const record = { ...raw, keyHash, ...(opts.plan !== undefined ? { plan: opts.plan } : {}) };
  const checked = consumerRecordSchema.safeParse(record);
  if (!checked.success) throw new CliError(`invalid consumer: ${flagIssues(checked.error)}`, 2);
  const warning = opts.plan !== undefined ? await checkPlan(kv, kvPrefix, opts.plan, planCheck) : null;
  if (!(await kv.set(kvKey, JSON.stringify(record), modifyIndex))) {
    throw new CliError(`${kvKey} was changed by someone else while rotating (check-and-set on ModifyIndex ${modifyIndex} lost); nothing written, the old key still works`, 3);
  }
  return { id, key, kvKey, ...describeRecord(record), previousModifyIndex: modifyIndex, warnings: warning ? [warning] : [] };
}

export async function revokeConsumer(kv: KvStore, kvPrefix: string, id: string): Promise<{ id: string; kvKey: string; modifyIndex: number }> {
  const kvKey = consumerKey(kvPrefix, id);
  // Revoking must work on an invalid record too, so read without parsing.
  const current = await kv.get(kvKey);
  if (!current) throw new CliError(`no consumer ${id} (${kvKey} does not exist)`);
  if (!(await kv.del(kvKey, current.modifyIndex))) {
    throw new CliError(`${kvKey} was changed by someone else while revoking (check-and-set on ModifyIndex ${current.modifyIndex} lost); nothing deleted, run the command again`, 3);
  }
  return { id, kvKey, modifyIndex: current.modifyIndex };
}

/** Every record under `<prefix>consumers/`, valid or not, never with its hash. */
export async function listConsumers(kv: KvStore, kvPrefix: string): Promise<ConsumerListing[]> {
  const base = `${normalizeKvPrefix(kvPrefix)}consumers/`;
  const out: ConsumerListing[] = [];
  for (const item of await kv.list(base)) {
    const id = item.key.slice(base.length);
    // The folder key that `consul kv put <prefix>consumers/` or the UI creates is not a consumer.
    if (id === '') continue;
    const empty = { plan: null, scopes: [], limits: null, description: null, createdAt: null };
    if (!consumerIdSchema.safeParse(id).success) {
      out.push({ id, kvKey: item.key, modifyIndex: item.modifyIndex, ...empty, invalid: 'not a valid consumer id (1-64 lower-case letters, digits and -); the gateway ignores this key' });
      continue;
    }
    const checked = parseConsumerValue(item.value);
    out.push(
      checked.ok
        ? { id, kvKey: item.key, modifyIndex: item.modifyIndex, ...describeRecord(JSON.parse(item.value ?? '{}') as Record<string, unknown>), invalid: null }
        : { id, kvKey: item.key, modifyIndex: item.modifyIndex, ...empty, invalid: checked.error },
    );
  }
  return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export function formatLimits(l: ConsumerListing['limits']): string | null {
  return l ? `${l.limit}/${l.window}${l.burst !== undefined ? ` burst ${l.burst}` : ''}` : null;
}
