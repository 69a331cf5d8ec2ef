import type { KvEntry, Problem } from '../core/types.ts';
import { parseRolloutValue, rolloutEnded, type Rollout } from '../policy/rollout.ts';

/**
 * What the data plane must know of a service's rollout: which subsets to count and in which
 * window, and which consumers get the canary first. Built from `<prefix>rollouts/<service>` with
 * the rest of the configuration, so every gateway and every worker counts the same window.
 * Ended rollouts are left out: they count nothing and target no one.
 */
export interface RolloutInForce {
  readonly service: string;
  readonly key: string;
  readonly state: 'progressing' | 'paused';
  readonly canary: string;
  readonly stable: string;
  /** The current step's `stepStartedAt`: figures are counted per window. */
  readonly window: string;
  readonly step: number;
  /** The canary's share at this step. */
  readonly weight: number;
  /** API-key consumer ids and JWT subjects sent to the canary before any share of general traffic. */
  readonly consumers: readonly string[];
}

/** `<prefix>rollouts/<service>` entries, parsed; an invalid one is a problem (the gateways only read these). */
export function readRollouts(kv: readonly KvEntry[], kvPrefix: string, problems: Problem[]): Map<string, { readonly entry: KvEntry; readonly rollout: Rollout }> {
  const base = `${kvPrefix}rollouts/`;
  const out = new Map<string, { entry: KvEntry; rollout: Rollout }>();
  for (const entry of kv) {
    if (!entry.key.startsWith(base)) continue;
    const service = entry.key.slice(base.length);
    if (service === '' || service.includes('/')) continue;
    const parsed = parseRolloutValue(entry.value);
    if (!parsed.ok) {
      problems.push({ kind: 'rollout', subject: entry.key, message: `invalid rollout at ModifyIndex ${entry.modifyIndex}: ${parsed.error}` });
      continue;
    }
    if (parsed.value.service !== service) {
      problems.push({ kind: 'rollout', subject: entry.key, message: `the rollout names service "${parsed.value.service}" but is stored under "${service}"; ignored` });
      continue;
    }
    out.set(service, { entry, rollout: parsed.value });
  }
  return out;
}

/** The rollouts of routed services that have not ended, by service (a null-prototype record). */
export function rolloutsInForce(kv: readonly KvEntry[], kvPrefix: string, routed: (service: string) => boolean, problems: Problem[]): Readonly<Record<string, RolloutInForce>> {
  const out = Object.create(null) as Record<string, RolloutInForce>;
  for (const [service, { entry, rollout }] of readRollouts(kv, kvPrefix, problems)) {
    if (rolloutEnded(rollout.state)) continue;
    if (!routed(service)) {
      problems.push({ kind: 'rollout', subject: entry.key, message: `service "${service}" is not routed by the gateway; the rollout is not counted here` });
      continue;
    }
    out[service] = {
      service,
      key: entry.key,
      state: rollout.state as RolloutInForce['state'],
      canary: rollout.canary,
      stable: rollout.stable,
      window: rollout.stepStartedAt,
      step: rollout.step,
      weight: rollout.steps[rollout.step] as number,
      consumers: rollout.consumers,
    };
  }
  return out;
}
