import type { Metrics } from '../core/metrics.ts';
import type { ServiceBalancer } from '../balancer/service-balancer.ts';
import type { UpstreamEndpoint } from '../balancer/upstream-pools.ts';
import { mirrorUnusable } from '../state/mirror-targets.ts';
import type { RouteSnapshot } from '../state/snapshot.ts';

/** What became of one sampled request's shadow copy (the `outcome` label). */
export type MirrorOutcome = 'sent' | 'ok' | 'status_5xx' | 'error' | 'timeout' | 'dropped_cap' | 'skipped_body' | 'no_target';

/** A shadow request without its own `timeout` gets the route's, but never more than this. */
export const MIRROR_TIMEOUT_CAP_MS = 5_000;

/** A route's mirror, compiled with the snapshot: the request path only samples, checks and sends. */
export interface CompiledMirror {
  /** `subset:<tag>` or `service:<name>`, the metrics' `target` label. */
  readonly target: string;
  /** Whether this request is copied (Math.random per request; always at 100 %). */
  readonly sampled: () => boolean;
  /** Buffered bodies up to this size are copied. */
  readonly maxBodyBytes: number;
  /** The whole shadow request, from dispatch to the end of its answer. */
  readonly timeoutMs: number;
  /** A healthy endpoint of the target, or undefined (never one outside the target). */
  readonly pick: () => UpstreamEndpoint | undefined;
  readonly count: (outcome: MirrorOutcome) => void;
  readonly observeDuration: (seconds: number) => void;
}

/** Where a route reads a service's balancer in force (runtime.ts's ServiceSlot). */
interface BalancerSlot {
  readonly balancer: ServiceBalancer;
}

function always(): boolean {
  return true;
}

/**
 * The per-request draw: `random() < percent / 100`, so 100 copies every request and a share in
 * between copies that share on average. No allocation per call.
 */
export function samplerOf(percent: number, random: () => number = Math.random): () => boolean {
  if (percent >= 100) return always;
  const fraction = percent / 100;
  return () => random() < fraction;
}

/**
 * The route's mirror, or null when it has none or it cannot apply (a gRPC route, the route's own
 * service as target: the snapshot shows why). The target's balancer is read through its slot on
 * every pick, so a health change of the shadow service applies without recompiling the route.
 */
export function compileMirror(
  route: RouteSnapshot,
  ownSlot: BalancerSlot,
  slots: ReadonlyMap<string, BalancerSlot>,
  metrics: Metrics,
  responseHeadersTimeoutMs: number,
): CompiledMirror | null {
  const mirror = route.policy.mirror;
  if (mirror === null || mirrorUnusable(route) !== null) return null;
  const target = mirrorTargetLabel(mirror) as string;
  let pick: () => UpstreamEndpoint | undefined;
  if (mirror.subset !== undefined) {
    const tag = mirror.subset;
    pick = () => ownSlot.balancer.pickTagged(tag);
  } else {
    const slot = slots.get(mirror.service as string);
    pick = slot ? () => slot.balancer.pick() : nothing;
  }
  const labels = { route: route.id, target };
  const children = new Map<MirrorOutcome, { inc(): void }>();
  const duration = metrics.mirrorDuration.labels(labels);
  return {
    target,
    sampled: samplerOf(mirror.percent),
    maxBodyBytes: mirror.maxBodyBytes,
    timeoutMs: mirror.timeout ?? Math.min(route.policy.timeouts.request ?? responseHeadersTimeoutMs, MIRROR_TIMEOUT_CAP_MS),
    pick,
    count(outcome) {
      let child = children.get(outcome);
      if (!child) {
        child = metrics.mirrorRequests.labels({ ...labels, outcome });
        children.set(outcome, child);
      }
      child.inc();
    },
    observeDuration(seconds) {
      duration.observe(seconds);
    },
  };
}

/** The `target` label of a mirror section. */
export function mirrorTargetLabel(mirror: RouteSnapshot['policy']['mirror']): string | null {
  if (mirror === null) return null;
  return mirror.subset !== undefined ? `subset:${mirror.subset}` : `service:${mirror.service ?? ''}`;
}

function nothing(): undefined {
  return undefined;
}
