import { runtimeKeys } from '../core/kv-layout.ts';
import { parseRolloutValue, type Rollout } from '../policy/rollout.ts';
import { anyCircuitOpen, fleetFigures, parseFiguresRecord, type FiguresRecord } from '../state/rollout-figures.ts';
import { judgeStep } from '../state/rollout-judge.ts';
import { controlKeys, type ControlKv } from './store.ts';

/**
 * What `cgw rollout status` and `cgw rollouts` show, and the admin API's `/v1/rollouts` with them:
 * the documents as stored in KV (an invalid one shown as such) and the current window's figures
 * summed over every gateway's record, judged as the driver would.
 */

export interface StoredRollout {
  readonly key: string;
  readonly modifyIndex: number;
  readonly rollout: Rollout | null;
  /** Why the stored value is not a rollout, when it is not. */
  readonly invalid: string | null;
}

/** `kvPrefix` normalised and `service` a valid key segment (callers check both). */
export async function readRollout(kv: Pick<ControlKv, 'get'>, kvPrefix: string, service: string): Promise<StoredRollout | undefined> {
  const key = controlKeys.rollout(kvPrefix, service);
  const item = await kv.get(key);
  if (!item) return undefined;
  const parsed = parseRolloutValue(item.value);
  return { key, modifyIndex: item.modifyIndex, rollout: parsed.ok ? parsed.value : null, invalid: parsed.ok ? null : parsed.error };
}

export async function listRollouts(kv: Pick<ControlKv, 'list'>, kvPrefix: string): Promise<StoredRollout[]> {
  const base = controlKeys.rollouts(kvPrefix);
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
export async function readWindowFigures(kv: Pick<ControlKv, 'list'>, runtimePrefix: string, rollout: Rollout): Promise<WindowFigures> {
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
