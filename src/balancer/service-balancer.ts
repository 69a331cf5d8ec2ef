import { contentHash } from '../core/hash.ts';
import type { ServiceSnapshot } from '../state/snapshot.ts';
import { LeastRequestPicker, RoundRobinPicker, type Picker, type Weighted } from './pickers.ts';
import type { UpstreamEndpoint, UpstreamPools } from './upstream-pools.ts';

export type PickerKind = 'round_robin' | 'least_request';

/**
 * One balancer per service, compiled from its snapshot: the endpoint picker, and for a canary one
 * picker per non-empty subset plus a round robin over subsets by effective weight. Requests first
 * choose a subset, then an endpoint inside it; `X-Canary: <tag>` skips the first step.
 */
export class ServiceBalancer {
  /** Equal fingerprints mean an equal balancer, so the runtime keeps the old one (and its position). */
  readonly fingerprint: string;
  private readonly all: Picker<UpstreamEndpoint>;
  private readonly subsetPicker: Picker<Picker<UpstreamEndpoint>> | undefined;
  private readonly forced = new Map<string, Picker<UpstreamEndpoint>>();

  constructor(
    readonly service: ServiceSnapshot,
    pools: UpstreamPools,
    readonly pickerKind: PickerKind,
  ) {
    this.fingerprint = ServiceBalancer.fingerprintOf(service, pickerKind);
    const makePicker = (keys: ReadonlySet<string> | null): Picker<UpstreamEndpoint> => {
      const weighted: Weighted<UpstreamEndpoint>[] = service.endpoints
        .filter((e) => e.weight > 0 && (keys === null || keys.has(e.key)))
        .map((e) => ({ item: pools.get(e.key, e.address, e.port), weight: e.weight }));
      return pickerKind === 'least_request'
        ? new LeastRequestPicker(weighted, (ep) => ep.inflight)
        : new RoundRobinPicker(weighted);
    };

    this.all = makePicker(null);
    const canary = service.canary;
    if (canary && !canary.fallback) {
      const subsets: Weighted<Picker<UpstreamEndpoint>>[] = [];
      for (const subset of canary.subsets) {
        if (subset.endpoints.length === 0) continue;
        const picker = makePicker(new Set(subset.endpoints));
        this.forced.set(subset.tag, picker);
        subsets.push({ item: picker, weight: subset.effectiveWeight });
      }
      this.subsetPicker = new RoundRobinPicker(subsets);
    }
  }

  static fingerprintOf(service: ServiceSnapshot, pickerKind: PickerKind): string {
    return contentHash({
      pickerKind,
      endpoints: service.endpoints.filter((e) => e.weight > 0).map((e) => [e.key, e.weight, e.tags]),
      canary: service.canary ? [service.canary.fallback, service.canary.subsets] : null,
    });
  }

  get healthy(): number {
    return this.all.size;
  }

  /**
   * @param canaryTag value of `X-Canary`; honoured when that subset has healthy endpoints.
   * @param exclude an endpoint that just failed, so a retry lands elsewhere.
   */
  pick(canaryTag?: string, exclude?: UpstreamEndpoint): UpstreamEndpoint | undefined {
    if (!this.subsetPicker) return this.all.pick(exclude);
    const subset = (canaryTag !== undefined ? this.forced.get(canaryTag) : undefined) ?? this.subsetPicker.pick();
    const endpoint = subset?.pick(exclude);
    // A retry whose subset has no other endpoint goes anywhere healthy rather than fail.
    return endpoint !== undefined && endpoint !== exclude ? endpoint : this.all.pick(exclude);
  }
}
