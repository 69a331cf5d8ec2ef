import { KV_WRITERS } from '../core/kv-layout.ts';
import type { CanaryWeights } from '../policy/canary.ts';
import { checkWeightTags } from '../state/canary-tags.ts';
import { controlKeys, type ControlStore } from './store.ts';

/**
 * The admin API's canary writes: weights checked against the catalog as `cgw canary set` checks
 * them (without its --force: a dashboard has no "write it anyway"), then a check-and-set on the
 * ModifyIndex the client read. Nothing is changed locally: the write comes back through the KV
 * watch like any other change, and the snapshot built from it is what the data plane runs.
 */

export type ControlRefusal = { readonly ok: false; readonly status: 400 | 404 | 409; readonly code: 'unknown_subset' | 'not_found' | 'conflict'; readonly message: string };

export type CanaryWriteResult =
  | { readonly ok: true; readonly key: string; readonly weights: CanaryWeights['weights']; readonly modifyIndex: number; readonly notes: readonly string[] }
  | ControlRefusal;

export type CanaryClearResult = { readonly ok: true; readonly key: string; readonly deleted: true; readonly modifyIndex: number } | ControlRefusal;

/** `kvPrefix` normalised and `service` a valid key segment (callers check both). */
export async function writeCanaryWeights(store: ControlStore, kvPrefix: string, service: string, weights: CanaryWeights['weights'], expected: number): Promise<CanaryWriteResult> {
  const key = controlKeys.canary(kvPrefix, service);
  const check = checkWeightTags(service, weights, await store.service(service));
  if (check.problem) return { ok: false, status: 400, code: 'unknown_subset', message: `${check.problem}. Nothing written` };
  const current = await store.get(key);
  const lost = staleIndex(key, current?.modifyIndex, expected);
  if (lost) return lost;
  if (!(await store.set(key, JSON.stringify({ weights }), expected, KV_WRITERS['cgw admin']))) {
    return conflict(`${key} was changed by someone else while writing (check-and-set on ModifyIndex ${expected} lost); nothing written: reload and try again`);
  }
  const after = await store.get(key);
  return { ok: true, key, weights, modifyIndex: after?.modifyIndex ?? 0, notes: check.notes };
}

export async function clearCanaryWeights(store: ControlStore, kvPrefix: string, service: string, expected: number): Promise<CanaryClearResult> {
  const key = controlKeys.canary(kvPrefix, service);
  const current = await store.get(key);
  if (!current) return { ok: false, status: 404, code: 'not_found', message: `${key} does not exist: ${service} has no canary weights to clear` };
  const lost = staleIndex(key, current.modifyIndex, expected);
  if (lost) return lost;
  if (!(await store.del(key, expected))) return conflict(`${key} was changed by someone else while deleting (check-and-set on ModifyIndex ${expected} lost); nothing deleted: reload and try again`);
  return { ok: true, key, deleted: true, modifyIndex: expected };
}

function staleIndex(key: string, actual: number | undefined, expected: number): ControlRefusal | undefined {
  if ((actual ?? 0) === expected) return undefined;
  if (actual === undefined) return conflict(`${key} does not exist any more (you read ModifyIndex ${expected}; deleted since?); nothing written: reload and try again`);
  if (expected === 0) return conflict(`${key} was created meanwhile (now at ModifyIndex ${actual}); nothing written: reload and try again`);
  return conflict(`${key} is at ModifyIndex ${actual}, not ${expected} as you read it: someone changed it since; nothing written: reload and try again`);
}

function conflict(message: string): ControlRefusal {
  return { ok: false, status: 409, code: 'conflict', message };
}
