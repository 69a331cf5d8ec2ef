import { KV_WRITERS, type KvWriter } from '../core/kv-layout.ts';
import { parseCanaryArgs, parseCanaryValue, type CanaryWeights } from '../policy/canary.ts';
import { CliError } from './admin-client.ts';
import { checkWeightTags, KEY_SERVICE_NAME, unknownServiceText } from '../state/canary-tags.ts';
import { normalizeKvPrefix, type ConsulStore } from './consul-kv.ts';

export { checkWeightTags, unknownServiceText, type TagCheck } from '../state/canary-tags.ts';

/**
 * `cgw canary` writes KV with check-and-set on the key's ModifyIndex (Consul docs, KV store
 * endpoint, `?cas=`), through the `consul` package: one-off reads and CAS writes are what it does
 * well (shared/CONSUL-NOTES.md). Values are validated with the gateway's own schema first, and the
 * tags they name are checked against the service's instances in Consul's catalog.
 */

/** A service name the KV commands accept in a key (`canary/<service>`, `rollouts/<service>`); exit 2 otherwise. */
export function checkServiceName(service: string): void {
  if (!KEY_SERVICE_NAME.test(service)) throw new CliError(`"${service}" is not a valid service name (letters, digits, _ . -)`, 2);
}

export function canaryKey(kvPrefix: string, service: string): string {
  checkServiceName(service);
  return `${normalizeKvPrefix(kvPrefix)}canary/${service}`;
}

export interface CanaryRecord {
  readonly key: string;
  readonly modifyIndex: number;
  readonly raw: string | null;
  readonly weights: CanaryWeights['weights'] | null;
  readonly invalid: string | null;
  /** Weighted tags no instance of the service carries (empty when every tag is carried). */
  readonly missingTags: readonly string[];
}

export async function getCanary(
  store: ConsulStore,
  kvPrefix: string,
  service: string,
): Promise<{ record: CanaryRecord | undefined; serviceKnown: boolean; notes: string[] }> {
  const key = canaryKey(kvPrefix, service);
  const lookup = await store.service(service);
  const entry = await store.get(key);
  if (!entry) return { record: undefined, serviceKnown: lookup.found, notes: lookup.found ? [] : [unknownServiceText(service, lookup)] };
  const parsed = parseCanaryValue(entry.value);
  const check = parsed.ok ? checkWeightTags(service, parsed.value.weights, lookup) : undefined;
  return {
    serviceKnown: lookup.found,
    record: {
      key,
      modifyIndex: entry.modifyIndex,
      raw: entry.value,
      weights: parsed.ok ? parsed.value.weights : null,
      invalid: parsed.ok ? null : parsed.error,
      missingTags: check?.missing ?? [],
    },
    notes: check ? [...(check.problem ? [check.problem] : []), ...check.notes] : lookup.found ? [] : [unknownServiceText(service, lookup)],
  };
}

export interface CanarySetOptions {
  /** --cas: write only if the key is at this ModifyIndex (0: only if it does not exist). */
  readonly cas?: number;
  /** --force: write even when the catalog says the weights send traffic nowhere. */
  readonly force?: boolean;
  /** Which command writes, for the configuration history (default: cgw canary). */
  readonly writer?: KvWriter;
}

export interface CanarySetResult {
  readonly key: string;
  readonly weights: CanaryWeights['weights'];
  readonly modifyIndex: number;
  /** What --force wrote over (empty without it). */
  readonly forced: readonly string[];
  readonly notes: readonly string[];
}

export async function setCanary(store: ConsulStore, kvPrefix: string, service: string, args: readonly string[], opts: CanarySetOptions = {}): Promise<CanarySetResult> {
  const parsed = parseCanaryArgs(args);
  if (!parsed.ok) throw new CliError(`invalid canary weights: ${parsed.error}`, 2);
  const key = canaryKey(kvPrefix, service);
  const check = checkWeightTags(service, parsed.value.weights, await store.service(service));
  if (check.problem && !opts.force) throw new CliError(`${check.problem}. Nothing written; --force writes the weights anyway`, 2);

  const current = await store.get(key);
  const expected = opts.cas;
  if (expected !== undefined && (current?.modifyIndex ?? 0) !== expected) {
    throw new CliError(
      expected === 0
        ? `--cas 0 writes only when the key does not exist, and ${key} exists at ModifyIndex ${current?.modifyIndex ?? '?'}; nothing written`
        : current === undefined
          ? `${key} does not exist, so it is not at ModifyIndex ${expected} (--cas ${expected}; deleted since?); nothing written (--cas 0 creates it)`
          : `${key} is at ModifyIndex ${current.modifyIndex}, not ${expected} (--cas ${expected}): someone changed it since; nothing written`,
      3,
    );
  }
  const cas = expected ?? current?.modifyIndex ?? 0;
  if (!(await store.set(key, JSON.stringify(parsed.value), cas, KV_WRITERS[opts.writer ?? 'cgw canary']))) {
    throw new CliError(
      cas === 0
        ? `${key} was created by someone else while writing (check-and-set with --cas 0 lost); nothing written`
        : `${key} was changed by someone else while writing (check-and-set on ModifyIndex ${cas} lost); nothing written`,
      3,
    );
  }
  const after = await store.get(key);
  return {
    key,
    weights: parsed.value.weights,
    modifyIndex: after?.modifyIndex ?? 0,
    forced: check.problem ? [check.problem] : [],
    notes: [...check.notes],
  };
}

export async function clearCanary(store: ConsulStore, kvPrefix: string, service: string): Promise<{ key: string; deleted: boolean; modifyIndex: number | null }> {
  const key = canaryKey(kvPrefix, service);
  const current = await store.get(key);
  if (!current) return { key, deleted: false, modifyIndex: null };
  if (!(await store.del(key, current.modifyIndex))) {
    throw new CliError(`${key} was changed by someone else while deleting (check-and-set on ModifyIndex ${current.modifyIndex} lost); nothing deleted`, 3);
  }
  return { key, deleted: true, modifyIndex: current.modifyIndex };
}
