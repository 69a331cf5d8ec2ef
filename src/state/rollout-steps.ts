import { MAX_HISTORY, type Rollout, type RolloutDecision } from '../policy/rollout.ts';
import type { JudgedFigures, Verdict } from './rollout-judge.ts';

/**
 * What a rollout does next, as a pure function of the rollout, the verdict on its current window
 * and the time: the new rollout document and the canary weights to write with it (through the
 * existing `<prefix>canary/<service>` key, so everything that shows weights shows the rollout's).
 * The driving gateway writes both with check-and-set; a lost CAS means another gateway moved it.
 */

export interface CanaryWeightsValue {
  readonly weights: Readonly<Record<string, number>>;
}

export type RolloutChange = { readonly rollout: Rollout; readonly weights: CanaryWeightsValue | null } | null;

export type ManualAction = 'promote' | 'pause' | 'resume' | 'abort';

/** The weights of a rollout at a canary share (0-100). */
export function weightsAt(rollout: Pick<Rollout, 'canary' | 'stable'>, canaryShare: number): CanaryWeightsValue {
  return { weights: { [rollout.canary]: canaryShare, [rollout.stable]: 100 - canaryShare } };
}

/**
 * A progressing rollout: a failed verdict rolls back at once (whenever it comes in the window); at
 * the end of the soak a pass advances (or promotes after the last step) and a wait stays, noted
 * once per step. Anything else changes nothing.
 */
export function stepRollout(rollout: Rollout, verdict: Verdict, now: Date, by?: string): RolloutChange {
  if (rollout.state !== 'progressing') return null;
  const at = now.toISOString();
  const weight = rollout.steps[rollout.step] as number;
  if (verdict.verdict === 'fail') {
    const decision = entry(at, 'rolled-back', rollout.step, 0, `${verdict.criterion}: ${verdict.reason}`, verdict.figures, by);
    return { rollout: { ...rollout, state: 'rolled-back', history: appended(rollout.history, decision) }, weights: weightsAt(rollout, 0) };
  }
  if (now.getTime() - Date.parse(rollout.stepStartedAt) < rollout.soakMs) return null;
  if (verdict.verdict === 'wait') {
    const last = rollout.history.at(-1);
    if (last?.event === 'waiting' && last.step === rollout.step) return null;
    const decision = entry(at, 'waiting', rollout.step, weight, verdict.reason, verdict.figures, by);
    return { rollout: { ...rollout, history: appended(rollout.history, decision) }, weights: null };
  }
  const next = rollout.step + 1;
  if (next >= rollout.steps.length) {
    const decision = entry(at, 'promoted', rollout.step, 100, 'every step passed', verdict.figures, by);
    return { rollout: { ...rollout, state: 'promoted', history: appended(rollout.history, decision) }, weights: weightsAt(rollout, 100) };
  }
  const share = rollout.steps[next] as number;
  const decision = entry(at, 'advanced', next, share, `step ${rollout.step + 1} (${weight}%) passed`, verdict.figures, by);
  return { rollout: { ...rollout, step: next, stepStartedAt: at, history: appended(rollout.history, decision) }, weights: weightsAt(rollout, share) };
}

/** `cgw rollout promote|pause|resume|abort`; null when the action does not apply to the state. */
export function manualAction(rollout: Rollout, action: ManualAction, now: Date, by?: string): RolloutChange | { readonly refused: string } {
  const at = now.toISOString();
  const ended = rollout.state === 'promoted' || rollout.state === 'rolled-back' || rollout.state === 'aborted';
  if (ended) return { refused: `the rollout of ${rollout.service} has ended (${rollout.state})` };
  switch (action) {
    case 'promote': {
      const last = rollout.steps.length - 1;
      const decision = entry(at, 'promoted', last, 100, 'promoted by hand', undefined, by);
      return { rollout: { ...rollout, state: 'promoted', step: last, history: appended(rollout.history, decision) }, weights: weightsAt(rollout, 100) };
    }
    case 'abort': {
      const decision = entry(at, 'aborted', rollout.step, 0, 'aborted by hand: back to stable', undefined, by);
      return { rollout: { ...rollout, state: 'aborted', history: appended(rollout.history, decision) }, weights: weightsAt(rollout, 0) };
    }
    case 'pause': {
      if (rollout.state === 'paused') return { refused: `the rollout of ${rollout.service} is paused already` };
      const decision = entry(at, 'paused', rollout.step, rollout.steps[rollout.step] as number, 'paused by hand', undefined, by);
      return { rollout: { ...rollout, state: 'paused', history: appended(rollout.history, decision) }, weights: null };
    }
    case 'resume': {
      if (rollout.state !== 'paused') return { refused: `the rollout of ${rollout.service} is not paused (${rollout.state})` };
      // The soak starts again: what was seen before the pause is not what the next window judges.
      const decision = entry(at, 'resumed', rollout.step, rollout.steps[rollout.step] as number, 'resumed by hand', undefined, by);
      return { rollout: { ...rollout, state: 'progressing', stepStartedAt: at, history: appended(rollout.history, decision) }, weights: null };
    }
  }
}

function entry(at: string, event: string, step: number, weight: number, reason: string, figures: JudgedFigures | undefined, by: string | undefined): RolloutDecision {
  const shown: Record<string, number> | undefined = figures
    ? Object.fromEntries(Object.entries(figures).filter((e): e is [string, number] => typeof e[1] === 'number'))
    : undefined;
  return { at, event, step, weight, reason: reason.slice(0, 2000), ...(shown ? { figures: shown } : {}), ...(by ? { by: by.slice(0, 256) } : {}) };
}

function appended(history: readonly RolloutDecision[], decision: RolloutDecision): RolloutDecision[] {
  return [...history, decision].slice(-MAX_HISTORY);
}
