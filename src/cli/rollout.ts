import { newRollout, rolloutEnded, type Rollout, type RolloutFlags } from '../policy/rollout.ts';
import { weightsAt, type ManualAction } from '../state/rollout-steps.ts';
import { defaultRuntimePrefix } from '../core/kv-layout.ts';
import { actOnRollout as actOnStoredRollout } from '../controls/rollout-actions.ts';
import {
  listRollouts as listStoredRollouts,
  readRollout as readStoredRollout,
  readWindowFigures as readStoredWindowFigures,
  type StoredRollout,
  type WindowFigures,
} from '../controls/rollout-reads.ts';
import { CliError } from './admin-client.ts';
import { canaryKey, checkServiceName, setCanary } from './canary.ts';
import { normalizeKvPrefix, type ConsulStore, type KvStore } from './consul-kv.ts';

/**
 * `cgw rollout start|status|promote|pause|resume|abort` and `cgw rollouts`: the rollout document
 * at `<prefix>rollouts/<service>` and the canary weights it drives at `<prefix>canary/<service>`,
 * both written with check-and-set. Starting checks the two tags against the service's instances
 * (as `cgw canary set` does) before anything is written.
 */

export function rolloutKey(kvPrefix: string, service: string): string {
  checkServiceName(service);
  return `${normalizeKvPrefix(kvPrefix)}rollouts/${service}`;
}

export type { StoredRollout, WindowFigures } from '../controls/rollout-reads.ts';
export { soakLeftMs } from '../controls/rollout-reads.ts';

export async function readRollout(kv: KvStore, kvPrefix: string, service: string): Promise<StoredRollout | undefined> {
  rolloutKey(kvPrefix, service);
  return readStoredRollout(kv, normalizeKvPrefix(kvPrefix), service);
}

export async function startRollout(store: ConsulStore, kvPrefix: string, service: string, flags: RolloutFlags, now = new Date(), by?: string): Promise<{ key: string; rollout: Rollout; weightsKey: string }> {
  const made = newRollout(service, flags, now, by);
  if (!made.ok) throw new CliError(`invalid rollout: ${made.error}`, 2);
  const current = await readRollout(store, kvPrefix, service);
  if (current?.rollout && !rolloutEnded(current.rollout.state)) {
    throw new CliError(`a rollout of ${service} is ${current.rollout.state} (step ${current.rollout.step + 1} of ${current.rollout.steps.length}); it must end (promote or abort) before another starts`);
  }
  const rollout = made.value;
  const first = weightsAt(rollout, rollout.steps[0] as number).weights;
  // The weights first: their check against the catalog refuses tags no instance carries, before
  // a rollout document exists that gateways would act on.
  const weights = await setCanary(store, kvPrefix, service, Object.entries(first).map(([tag, w]) => `${tag}=${w}`), { writer: 'cgw rollout' });
  const key = rolloutKey(kvPrefix, service);
  if (!(await store.set(key, JSON.stringify(rollout), current?.modifyIndex ?? 0))) {
    throw new CliError(`${key} was written by someone else meanwhile (check-and-set lost); the weights at ${weights.key} are those of the first step, no rollout was started`, 3);
  }
  return { key, rollout, weightsKey: weights.key };
}

/** A change by hand: the document and, when the action moves them, the weights (CAS on both). */
export async function actOnRollout(store: ConsulStore, kvPrefix: string, service: string, action: ManualAction, now = new Date(), by?: string): Promise<{ key: string; rollout: Rollout; weights: Readonly<Record<string, number>> | null }> {
  rolloutKey(kvPrefix, service);
  const done = await actOnStoredRollout(store, normalizeKvPrefix(kvPrefix), service, action, { now, ...(by === undefined ? {} : { by }) });
  if (!done.ok) throw new CliError(done.message, done.kind === 'invalid' ? 2 : done.kind === 'conflict' ? 3 : 1);
  return { key: done.key, rollout: done.rollout, weights: done.weights };
}

export async function listRollouts(kv: KvStore, kvPrefix: string): Promise<StoredRollout[]> {
  return listStoredRollouts(kv, normalizeKvPrefix(kvPrefix));
}

/** `--kv-runtime-prefix`, else the default beside `--kv-prefix` (as `cgw start` derives it). */
export function runtimePrefixOf(kvPrefix: string, runtimePrefix: string | undefined): string {
  if (runtimePrefix === undefined) return defaultRuntimePrefix(normalizeKvPrefix(kvPrefix));
  const normal = normalizeKvPrefix(runtimePrefix);
  if (normal === '') throw new CliError('--kv-runtime-prefix: must not be empty', 2);
  return normal;
}

/** Both subsets' figures in the current window, summed over every gateway's record, as the driver sees them. */
export function readWindowFigures(kv: KvStore, runtimePrefix: string, rollout: Rollout): Promise<WindowFigures> {
  return readStoredWindowFigures(kv, runtimePrefix, rollout);
}
