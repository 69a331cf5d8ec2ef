import { newRollout, parseRolloutValue, rolloutEnded, type Rollout, type RolloutFlags } from '../policy/rollout.ts';
import { manualAction, weightsAt, type ManualAction } from '../state/rollout-steps.ts';
import { anyCircuitOpen, fleetFigures, parseFiguresRecord, type FiguresRecord } from '../state/rollout-figures.ts';
import { judgeStep } from '../state/rollout-judge.ts';
import { defaultRuntimePrefix, KV_WRITERS, runtimeKeys } from '../core/kv-layout.ts';
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

export interface StoredRollout {
  readonly key: string;
  readonly modifyIndex: number;
  readonly rollout: Rollout | null;
  /** Why the stored value is not a rollout, when it is not. */
  readonly invalid: string | null;
}

export async function readRollout(kv: KvStore, kvPrefix: string, service: string): Promise<StoredRollout | undefined> {
  const key = rolloutKey(kvPrefix, service);
  const item = await kv.get(key);
  if (!item) return undefined;
  const parsed = parseRolloutValue(item.value);
  return { key, modifyIndex: item.modifyIndex, rollout: parsed.ok ? parsed.value : null, invalid: parsed.ok ? null : parsed.error };
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
  const current = await readRollout(store, kvPrefix, service);
  if (!current) throw new CliError(`no rollout of ${service} (${rolloutKey(kvPrefix, service)} does not exist)`);
  if (!current.rollout) throw new CliError(`${current.key} is not a valid rollout (${current.invalid ?? 'invalid'}); fix or delete it`, 2);
  const change = manualAction(current.rollout, action, now, by);
  if (change === null) throw new CliError(`nothing to do for ${action}`);
  if ('refused' in change) throw new CliError(change.refused);
  if (!(await store.set(current.key, JSON.stringify(change.rollout), current.modifyIndex))) {
    throw new CliError(`${current.key} was changed by another gateway or operator meanwhile (check-and-set on ModifyIndex ${current.modifyIndex} lost); nothing written, look again with cgw rollout status`, 3);
  }
  if (change.weights) {
    // Rolling back or promoting must not hinge on the catalog: the weights are written as they are.
    const weightsKey = canaryKey(kvPrefix, service);
    const existing = await store.get(weightsKey);
    if (!(await store.set(weightsKey, JSON.stringify(change.weights), existing?.modifyIndex ?? 0, KV_WRITERS['cgw rollout']))) {
      throw new CliError(`the rollout is ${change.rollout.state}, but ${weightsKey} changed meanwhile (check-and-set lost): set the weights with cgw canary set`, 3);
    }
  }
  return { key: current.key, rollout: change.rollout, weights: change.weights?.weights ?? null };
}

export async function listRollouts(kv: KvStore, kvPrefix: string): Promise<StoredRollout[]> {
  const base = `${normalizeKvPrefix(kvPrefix)}rollouts/`;
  const out: StoredRollout[] = [];
  for (const item of await kv.list(base)) {
    if (item.key === base) continue;
    const parsed = parseRolloutValue(item.value);
    out.push({ key: item.key, modifyIndex: item.modifyIndex, rollout: parsed.ok ? parsed.value : null, invalid: parsed.ok ? null : parsed.error });
  }
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** Milliseconds left in the current step's soak (0 when over), for `cgw rollout status`. */
export function soakLeftMs(rollout: Rollout, now: Date): number {
  return Math.max(0, Date.parse(rollout.stepStartedAt) + rollout.soakMs - now.getTime());
}

/** `--kv-runtime-prefix`, else the default beside `--kv-prefix` (as `cgw start` derives it). */
export function runtimePrefixOf(kvPrefix: string, runtimePrefix: string | undefined): string {
  if (runtimePrefix === undefined) return defaultRuntimePrefix(normalizeKvPrefix(kvPrefix));
  const normal = normalizeKvPrefix(runtimePrefix);
  if (normal === '') throw new CliError('--kv-runtime-prefix: must not be empty', 2);
  return normal;
}

export interface WindowFigures {
  readonly window: string;
  /** Gateways whose records of this window were counted. */
  readonly gateways: number;
  readonly subsets: readonly { subset: string; requests: number; errors: number; errorRate: number; p95Ms: number | null }[];
  /** How the window would be judged now (progressing rollouts only). */
  readonly verdict: string | null;
  /** Records that were refused, by key. */
  readonly refused: readonly string[];
}

/** Both subsets' figures in the current window, summed over every gateway's record, as the driver sees them. */
export async function readWindowFigures(kv: KvStore, runtimePrefix: string, rollout: Rollout): Promise<WindowFigures> {
  const records: FiguresRecord[] = [];
  const refused: string[] = [];
  for (const item of await kv.list(runtimeKeys.figures(runtimePrefix, rollout.service))) {
    const parsed = parseFiguresRecord(item.value);
    if (parsed.ok) records.push(parsed.value);
    else refused.push(`${item.key}: ${parsed.error}`);
  }
  const window = rollout.stepStartedAt;
  const canary = fleetFigures(records, window, rollout.canary);
  const stable = fleetFigures(records, window, rollout.stable);
  const verdict = judgeStep(rollout.criteria, canary, stable, anyCircuitOpen(records, window));
  const f = verdict.figures;
  return {
    window,
    gateways: Math.max(canary.gateways, stable.gateways),
    subsets: [
      { subset: `${rollout.canary} (canary)`, requests: canary.requests, errors: canary.errors, errorRate: round(f.canaryErrorRate), p95Ms: f.canaryP95Ms === null ? null : round(f.canaryP95Ms) },
      { subset: `${rollout.stable} (stable)`, requests: stable.requests, errors: stable.errors, errorRate: round(f.stableErrorRate), p95Ms: f.stableP95Ms === null ? null : round(f.stableP95Ms) },
    ],
    verdict: rollout.state !== 'progressing' ? null : verdict.verdict === 'pass' ? 'passing' : verdict.verdict === 'wait' ? `waiting (${verdict.reason})` : `failing (${verdict.criterion}: ${verdict.reason})`,
    refused,
  };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}
