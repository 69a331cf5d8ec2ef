import { KV_WRITERS, type KvWriter } from '../core/kv-layout.ts';
import type { Rollout } from '../policy/rollout.ts';
import { manualAction, type ManualAction } from '../state/rollout-steps.ts';
import { readRollout } from './rollout-reads.ts';
import { controlKeys, type ControlKv } from './store.ts';

/**
 * `cgw rollout promote|pause|resume|abort` and `POST /v1/rollouts/<service>/<action>`: the rollout
 * document and, when the action moves them, the canary weights, both with check-and-set. A refusal
 * says why in words and which kind it is, so the CLI maps it to its exit code and the admin API to
 * its HTTP status.
 */

export type RolloutActionRefusal = { readonly ok: false; readonly kind: 'not_found' | 'invalid' | 'refused' | 'conflict'; readonly message: string };
export type RolloutActionResult =
  | { readonly ok: true; readonly key: string; readonly rollout: Rollout; readonly weights: Readonly<Record<string, number>> | null }
  | RolloutActionRefusal;

/** `kvPrefix` normalised and `service` a valid key segment (callers check both). */
export async function actOnRollout(
  kv: ControlKv,
  kvPrefix: string,
  service: string,
  action: ManualAction,
  options: { now?: Date; by?: string; writer?: KvWriter } = {},
): Promise<RolloutActionResult> {
  const current = await readRollout(kv, kvPrefix, service);
  if (!current) return { ok: false, kind: 'not_found', message: `no rollout of ${service} (${controlKeys.rollout(kvPrefix, service)} does not exist)` };
  if (!current.rollout) return { ok: false, kind: 'invalid', message: `${current.key} is not a valid rollout (${current.invalid ?? 'invalid'}); fix or delete it` };
  const change = manualAction(current.rollout, action, options.now ?? new Date(), options.by);
  if (change === null) return { ok: false, kind: 'refused', message: `nothing to do for ${action}` };
  if ('refused' in change) return { ok: false, kind: 'refused', message: change.refused };
  if (!(await kv.set(current.key, JSON.stringify(change.rollout), current.modifyIndex))) {
    return {
      ok: false,
      kind: 'conflict',
      message: `${current.key} was changed by another gateway or operator meanwhile (check-and-set on ModifyIndex ${current.modifyIndex} lost); nothing written, look again with cgw rollout status`,
    };
  }
  if (change.weights) {
    // Rolling back or promoting must not hinge on the catalog: the weights are written as they are.
    const weightsKey = controlKeys.canary(kvPrefix, service);
    const existing = await kv.get(weightsKey);
    if (!(await kv.set(weightsKey, JSON.stringify(change.weights), existing?.modifyIndex ?? 0, KV_WRITERS[options.writer ?? 'cgw rollout']))) {
      return { ok: false, kind: 'conflict', message: `the rollout is ${change.rollout.state}, but ${weightsKey} changed meanwhile (check-and-set lost): set the weights with cgw canary set` };
    }
  }
  return { ok: true, key: current.key, rollout: change.rollout, weights: change.weights?.weights ?? null };
}
