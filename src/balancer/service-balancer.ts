import { contentHash } from '../core/hash.ts';
import type { ServiceSnapshot } from '../state/snapshot.ts';
import { LeastRequestPicker, RoundRobinPicker, type Picker, type Weighted } from './pickers.ts';
import type { UpstreamEndpoint, UpstreamPools } from './upstream-pools.ts';
import { compileStickiness, type StickySubsets } from './sticky-subsets.ts';

export type PickerKind = 'round_robin' | 'least_request';

/** A weights subset and the picker over its endpoints. */
interface Subset {
  readonly tag: string;
  readonly picker: Picker<UpstreamEndpoint>;
}

/**
 * What a balancer needs of passive health: which endpoints are ejected. The detector itself lives
 * in resilience/ (it learns from outcomes); the balancer only reads it.
 */
export interface EjectionView {
  readonly hasEjected: boolean;
  isEjected(key: string): boolean;
}

/**
 * One balancer per service, compiled from its snapshot: the endpoint picker, and for a canary one
 * picker per non-empty subset plus a round robin over subsets by effective weight. Requests first
 * choose a subset, then an endpoint inside it; `X-Canary: <tag>` skips the first step.
 *
 * With an outlier detector, picks skip ejected endpoints. The detector is long-lived (the runtime
 * keeps one per service and passes it to every balancer it builds for that service) and is not part
 * of the fingerprint. Its endpoint set is kept by the runtime's resilience registry, which runs on
 * every build, also when this balancer is reused; the balancer only reads it.
 */
export class ServiceBalancer {
  /** Equal fingerprints mean an equal balancer, so the runtime keeps the old one (and its position). */
  readonly fingerprint: string;
  private readonly all: Picker<UpstreamEndpoint>;
  private readonly subsetPicker: Picker<Subset> | undefined;
  /** The service's stickiness policy compiled against its weights; null: requests are not held (no cookie looked at). */
  readonly sticky: StickySubsets | null;
  private readonly forced = new Map<string, Picker<UpstreamEndpoint>>();
  /** Tags instances carry that have no weights subset, for `X-Canary`; pickers made on first use. */
  private readonly taggable = new Set<string>();
  private readonly makePicker: (keys: ReadonlySet<string> | null) => Picker<UpstreamEndpoint>;
  /** Pools this balancer sends to; the runtime keeps exactly these open. */
  readonly poolIds: ReadonlySet<string>;
  /** Built once so a pick allocates no closure. */
  private readonly usable: ((endpoint: UpstreamEndpoint) => boolean) | undefined;
  private readonly unsaturated: (endpoint: UpstreamEndpoint) => boolean;

  constructor(
    readonly service: ServiceSnapshot,
    pools: UpstreamPools,
    readonly pickerKind: PickerKind,
    readonly outlier?: EjectionView,
    /** The service's connect timeout; endpoints with a non-default one get their own pool. */
    connectTimeoutMs?: number,
    /**
     * `fingerprintOf(service, pickerKind, connectTimeoutMs)` when the caller has computed it already
     * (the runtime does, to decide on reuse), so a build hashes each service once.
     */
    fingerprint?: string,
  ) {
    this.fingerprint = fingerprint ?? ServiceBalancer.fingerprintOf(service, pickerKind, connectTimeoutMs);
    const poolIds = new Set<string>();
    this.poolIds = poolIds;
    if (outlier) this.usable = (endpoint) => !outlier.isEjected(endpoint.key);
    this.unsaturated = outlier ? (endpoint) => !endpoint.saturated && !outlier.isEjected(endpoint.key) : (endpoint) => !endpoint.saturated;
    const makePicker = (keys: ReadonlySet<string> | null): Picker<UpstreamEndpoint> => {
      const weighted: Weighted<UpstreamEndpoint>[] = service.endpoints
        .filter((e) => e.weight > 0 && (keys === null || keys.has(e.key)))
        .map((e) => {
          const item = pools.get(e, connectTimeoutMs);
          poolIds.add(item.poolId);
          return { item, weight: e.weight };
        });
      return pickerKind === 'least_request'
        ? new LeastRequestPicker(weighted, (ep) => ep.inflight)
        : new RoundRobinPicker(weighted);
    };

    this.makePicker = makePicker;
    this.all = makePicker(null);
    const canary = service.canary;
    if (canary && !canary.fallback) {
      const subsets: Weighted<Subset>[] = [];
      for (const subset of canary.subsets) {
        if (subset.endpoints.length === 0) continue;
        const picker = makePicker(new Set(subset.endpoints));
        this.forced.set(subset.tag, picker);
        subsets.push({ item: { tag: subset.tag, picker }, weight: subset.effectiveWeight });
      }
      this.subsetPicker = new RoundRobinPicker(subsets);
    }
    this.sticky = compileStickiness(service.policy.stickiness, canary);
    for (const e of service.endpoints) if (e.weight > 0) for (const t of e.tags) if (!this.forced.has(t)) this.taggable.add(t);
  }

  static fingerprintOf(service: ServiceSnapshot, pickerKind: PickerKind, connectTimeoutMs?: number): string {
    return contentHash({
      pickerKind,
      connectTimeoutMs: connectTimeoutMs ?? null,
      // How TLS is checked is not in the key (https://address:port) but decides the pool.
      endpoints: service.endpoints.filter((e) => e.weight > 0).map((e) => [e.key, e.weight, e.tags, e.tlsSkipVerify ?? false, e.serverName ?? null]),
      canary: service.canary ? [service.canary.fallback, service.canary.subsets] : null,
      stickiness: service.policy.stickiness,
    });
  }

  get healthy(): number {
    return this.all.size;
  }

  /**
   * @param canaryTag value of `X-Canary`; honoured when that subset has healthy endpoints.
   * @param exclude an endpoint that just failed, so a retry lands elsewhere.
   *
   * Ejected endpoints are skipped; when every candidate is ejected (or excluded) the pick falls
   * back to them rather than fail (panic mode, see pickers.ts).
   */
  pick(canaryTag?: string, exclude?: UpstreamEndpoint): UpstreamEndpoint | undefined {
    // No endpoint ejected (the common case): the plain pickers, no predicate calls.
    const usable = this.outlier?.hasEjected ? this.usable : undefined;
    const forced = canaryTag !== undefined ? this.forcedPicker(canaryTag) : undefined;
    if (!this.subsetPicker && !forced) return this.all.pick(exclude, usable);
    const subset = forced ?? this.subsetPicker?.pick()?.picker;
    const endpoint = subset?.pick(exclude, usable);
    // A retry whose subset has no other endpoint, or a subset whose endpoints are all ejected, goes
    // anywhere healthy rather than fail.
    return endpoint !== undefined && endpoint !== exclude && (usable === undefined || usable(endpoint)) ? endpoint : this.all.pick(exclude, usable);
  }

  /** Whether `X-Canary: <tag>` would be honoured: some healthy instance carries the tag. */
  forces(tag: string): boolean {
    return this.forcedPicker(tag) !== undefined;
  }

  /** A subset by weight for a client that holds none yet: the same turn a plain request would take. */
  pickSubset(): string | undefined {
    return this.subsetPicker?.pick()?.tag;
  }

  /**
   * A client may stay on `tag` while its configured weight is above 0 and it has a healthy
   * instance the outlier detector has not ejected (tag checked against the compiled subsets only).
   */
  holds(tag: string): boolean {
    const keys = this.sticky?.holdable.get(tag);
    if (keys === undefined) return false;
    const outlier = this.outlier;
    if (outlier === undefined || !outlier.hasEjected) return true;
    for (const key of keys) if (!outlier.isEjected(key)) return true;
    return false;
  }

  /**
   * A healthy endpoint carrying `tag`, or undefined: unlike `pick`, never one without the tag. A
   * mirror to a subset must not fall back to the instances serving the client.
   */
  pickTagged(tag: string): UpstreamEndpoint | undefined {
    const usable = this.outlier?.hasEjected ? this.usable : undefined;
    return this.forcedPicker(tag)?.pick(undefined, usable);
  }

  /**
   * The picker `X-Canary: <tag>` forces: a weights subset, or, for any other tag healthy instances
   * carry (also when no weights are set), one built on first use. Only tags that exist get one, so
   * the header cannot grow this map.
   */
  private forcedPicker(tag: string): Picker<UpstreamEndpoint> | undefined {
    const known = this.forced.get(tag);
    if (known || !this.taggable.has(tag)) return known;
    const keys = new Set(this.service.endpoints.filter((e) => e.weight > 0 && e.tags.includes(tag)).map((e) => e.key));
    const picker = this.makePicker(keys);
    this.forced.set(tag, picker);
    return picker;
  }

  /**
   * The slow path when the first pick is at its request cap: an endpoint below its cap (preferring
   * the requested subset, then any), or undefined when every one is full. Unlike ejection, a full
   * endpoint is never chosen in panic: waiting behind it would have no deadline.
   */
  pickUnsaturated(canaryTag?: string, exclude?: UpstreamEndpoint): UpstreamEndpoint | undefined {
    const accept = this.unsaturated;
    const subset = (canaryTag !== undefined ? this.forcedPicker(canaryTag) : undefined) ?? this.subsetPicker?.pick()?.picker;
    for (const picker of subset ? [subset, this.all] : [this.all]) {
      const endpoint = picker.pick(exclude, accept);
      if (endpoint !== undefined && endpoint !== exclude && !endpoint.saturated) return endpoint;
    }
    return undefined;
  }
}
