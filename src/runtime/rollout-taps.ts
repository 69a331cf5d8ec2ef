import type { RolloutFiguresReport } from '../core/types.ts';
import { SubsetRecorder } from '../state/rollout-figures.ts';
import type { RolloutInForce, ServiceSnapshot, Snapshot } from '../state/snapshot.ts';

/**
 * What one data plane counts of the services under rollout: per subset, the requests that reached
 * an endpoint, their 5xx and their latency, in the rollout's current window. Long-lived beside the
 * runtime: a health change (a new snapshot in the same window) keeps the counts, a new window
 * starts from zero. Services without a rollout cost one failed map lookup per request.
 */
/** What the proxy counts per route (the data plane's SubsetRecorder keyed by route id). */
export interface RouteTally {
  observe(routeId: string, status: number, ms: number): void;
}

export class RolloutTap {
  /** Endpoint key → the subset tag it belongs to (canary or stable); others are not counted. */
  private subsetOf = new Map<string, string>();
  private readonly consumers: ReadonlySet<string>;
  private endpointsFrom: ServiceSnapshot | undefined;

  constructor(
    readonly rollout: RolloutInForce,
    readonly recorder: SubsetRecorder,
  ) {
    this.consumers = new Set(rollout.consumers);
  }

  /** Maps endpoints to subsets again when the service's snapshot is another object. */
  follow(service: ServiceSnapshot | undefined): void {
    if (!service || service === this.endpointsFrom) return;
    this.endpointsFrom = service;
    const { canary, stable } = this.rollout;
    const subsetOf = new Map<string, string>();
    for (const e of service.endpoints) {
      // An instance carrying both tags is the canary's: it runs what is being rolled out.
      if (e.tags.includes(canary)) subsetOf.set(e.key, canary);
      else if (e.tags.includes(stable)) subsetOf.set(e.key, stable);
    }
    this.subsetOf = subsetOf;
  }

  observe(endpointKey: string, status: number, ms: number): void {
    const subset = this.subsetOf.get(endpointKey);
    if (subset !== undefined) this.recorder.observe(subset, status, ms);
  }

  /**
   * The canary tag for a targeted consumer (`--consumers`): an API-key consumer id or a JWT (or
   * certificate) subject; undefined for everyone else, who get the canary by weight.
   */
  targetFor(consumer: string | null, subject: string | null): string | undefined {
    if (this.consumers.size === 0) return undefined;
    if ((consumer !== null && this.consumers.has(consumer)) || (subject !== null && this.consumers.has(subject))) return this.rollout.canary;
    return undefined;
  }

  /** Endpoint keys of the canary subset, for the circuit check. */
  canaryEndpoints(): string[] {
    const out: string[] = [];
    for (const [key, subset] of this.subsetOf) if (subset === this.rollout.canary) out.push(key);
    return out;
  }
}

export class RolloutTaps {
  private readonly taps = new Map<string, RolloutTap>();
  private from: Snapshot['rollouts'] | undefined;

  get size(): number {
    return this.taps.size;
  }

  tap(service: string): RolloutTap | undefined {
    return this.taps.get(service);
  }

  /** The rollouts of a snapshot: a tap per service, kept while its window and subsets stay. */
  apply(snapshot: Snapshot): void {
    if (snapshot.rollouts !== this.from) {
      this.from = snapshot.rollouts;
      for (const service of [...this.taps.keys()]) if (!Object.hasOwn(snapshot.rollouts, service)) this.taps.delete(service);
      for (const [service, rollout] of Object.entries(snapshot.rollouts)) {
        const tap = this.taps.get(service);
        if (tap && sameCounting(tap.rollout, rollout)) continue;
        const recorder = tap && sameWindow(tap.rollout, rollout) ? tap.recorder : new SubsetRecorder(rollout.window);
        this.taps.set(service, new RolloutTap(rollout, recorder));
      }
    }
    for (const [service, tap] of this.taps) tap.follow(Object.hasOwn(snapshot.services, service) ? snapshot.services[service] : undefined);
  }

  /** This data plane's figures by service; `ejected` says whether an endpoint is ejected now. */
  report(ejected: (service: string, endpointKey: string) => boolean): Record<string, RolloutFiguresReport> {
    const out = Object.create(null) as Record<string, RolloutFiguresReport>;
    for (const [service, tap] of this.taps) {
      const canary = tap.canaryEndpoints();
      const record = tap.recorder.record('', new Date(), canary.length > 0 && canary.every((key) => ejected(service, key)));
      out[service] = { window: record.window, subsets: record.subsets, canaryCircuitOpen: record.canaryCircuitOpen };
    }
    return out;
  }
}

function sameWindow(a: RolloutInForce, b: RolloutInForce): boolean {
  return a.window === b.window && a.canary === b.canary && a.stable === b.stable;
}

function sameCounting(a: RolloutInForce, b: RolloutInForce): boolean {
  return sameWindow(a, b) && a.consumers.length === b.consumers.length && a.consumers.every((c, i) => c === b.consumers[i]);
}
