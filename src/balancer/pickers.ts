/**
 * Endpoint pickers. Both are built once per snapshot; a pick is O(1) (round robin) or two random
 * probes (least request), with no allocation on the request path.
 *
 * `usable` (e.g. "not ejected by the outlier detector") is optional and only consulted when given,
 * so the plain path is unchanged. When no item is usable the picker panics like Envoy
 * (https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/upstream/load_balancing/panic_threshold):
 * it ignores `usable` rather than fail every request, but still honours `exclude` when it can.
 */
export interface Weighted<T> {
  readonly item: T;
  readonly weight: number;
}

export interface Picker<T> {
  /**
   * An item with weight > 0, never `exclude` unless it is the only one; undefined when empty.
   * With `usable`, only items it accepts, unless none is (panic: then as without `usable`).
   */
  pick(exclude?: T, usable?: (item: T) => boolean): T | undefined;
  readonly size: number;
}

const MAX_SCHEDULE = 4096;

/**
 * nginx's smooth weighted round robin, unrolled into a fixed schedule: weights 5,1,1 give
 * a a b a c a a rather than a a a a a b c, so a heavy endpoint's turns are spread out.
 * Weights are scaled down when their sum would make the schedule longer than MAX_SCHEDULE.
 */
export function smoothWeightedSchedule(weights: readonly number[]): number[] {
  // Fractions (canary shares such as 33.333) become integers at 0.001 resolution first.
  let w = weights.map((x) => (Number.isFinite(x) && x > 0 ? Math.round(x * 1000) : 0));
  let total = w.reduce((a, b) => a + b, 0);
  if (total === 0) return [];
  let divisor = w.filter((x) => x > 0).reduce(gcd);
  w = w.map((x) => x / divisor);
  total /= divisor;
  if (total > MAX_SCHEDULE) {
    const scale = MAX_SCHEDULE / total;
    w = w.map((x) => (x > 0 ? Math.max(1, Math.round(x * scale)) : 0));
  }
  divisor = w.filter((x) => x > 0).reduce(gcd);
  w = w.map((x) => x / divisor);
  total = w.reduce((a, b) => a + b, 0);
  const current = w.map(() => 0);
  const schedule: number[] = [];
  for (let n = 0; n < total; n++) {
    let best = -1;
    for (let i = 0; i < w.length; i++) {
      const wi = w[i] ?? 0;
      if (wi === 0) continue;
      current[i] = (current[i] ?? 0) + wi;
      if (best === -1 || (current[i] ?? 0) > (current[best] ?? 0)) best = i;
    }
    current[best] = (current[best] ?? 0) - total;
    schedule.push(best);
  }
  return schedule;
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

export class RoundRobinPicker<T> implements Picker<T> {
  private readonly items: T[];
  private readonly schedule: number[];
  /**
   * Two cursors over the schedule: [0] for first attempts, [1] for retries (picks with `exclude`).
   * A retry that took a turn from the shared cursor would shift every later request by one, and
   * with two endpoints the failing one would then get every first attempt (each request paying a
   * failure and a retry, the retry budget spent twice as fast). A separate cursor keeps first
   * attempts exactly on the weights and still spreads retries.
   */
  private readonly positions: [number, number];

  constructor(weighted: readonly Weighted<T>[], start = Math.random()) {
    const live = weighted.filter((w) => w.weight > 0);
    this.items = live.map((w) => w.item);
    this.schedule = smoothWeightedSchedule(live.map((w) => w.weight));
    // Gateways started together should not all hit the same endpoint first.
    const position = Math.floor(start * this.schedule.length);
    this.positions = [position, position];
  }

  get size(): number {
    return this.items.length;
  }

  pick(exclude?: T, usable?: (item: T) => boolean): T | undefined {
    const n = this.schedule.length;
    if (n === 0) return undefined;
    const cursor = exclude === undefined ? 0 : 1;
    if (usable !== undefined) return this.pickUsable(n, cursor, exclude, usable);
    const positions = this.positions;
    for (let tries = 0; tries < n; tries++) {
      const item = this.items[this.schedule[positions[cursor]++ % n] ?? 0];
      if (positions[cursor] >= n) positions[cursor] = 0;
      if (item !== exclude || this.items.length === 1) return item;
    }
    return undefined;
  }

  /** Walks at most one schedule cycle; skipped turns go to the next usable item. */
  private pickUsable(n: number, cursor: 0 | 1, exclude: T | undefined, usable: (item: T) => boolean): T | undefined {
    const positions = this.positions;
    let fallback: T | undefined;
    let fallbackNext = positions[cursor];
    for (let tries = 0; tries < n; tries++) {
      const item = this.items[this.schedule[positions[cursor]++ % n] ?? 0] as T;
      if (positions[cursor] >= n) positions[cursor] = 0;
      if (item === exclude && this.items.length > 1) continue;
      if (usable(item)) return item;
      if (fallback === undefined) {
        fallback = item;
        fallbackNext = positions[cursor];
      }
    }
    // Panic: a full cycle brought the position back where it was; resume after the fallback so panic picks
    // still rotate instead of all landing on the same item.
    positions[cursor] = fallbackNext;
    return fallback;
  }
}

/** Random draws per least-request candidate before scanning for a usable item. */
const MAX_DRAWS = 3;

/**
 * Power of two choices over in-flight requests (Mitzenmacher; Envoy's LEAST_REQUEST): two random
 * endpoints, the one with less load per unit of weight wins. Adapts to slow endpoints at once, which
 * round robin cannot, and needs no global scan.
 */
export class LeastRequestPicker<T> implements Picker<T> {
  private readonly items: T[];
  private readonly weights: number[];

  constructor(
    weighted: readonly Weighted<T>[],
    private readonly load: (item: T) => number,
    private readonly random: () => number = Math.random,
  ) {
    const live = weighted.filter((w) => w.weight > 0);
    this.items = live.map((w) => w.item);
    this.weights = live.map((w) => w.weight);
  }

  get size(): number {
    return this.items.length;
  }

  pick(exclude?: T, usable?: (item: T) => boolean): T | undefined {
    const n = this.items.length;
    if (n === 0) return undefined;
    if (n === 1) return this.items[0];
    if (usable !== undefined) return this.pickUsable(n, exclude, usable);
    const a = this.candidate(n, exclude);
    let b = this.candidate(n, exclude);
    if (b === a) b = (a + 1) % n;
    if (this.items[b] === exclude) return this.items[a];
    const costA = (this.load(this.items[a] as T) + 1) / (this.weights[a] ?? 1);
    const costB = (this.load(this.items[b] as T) + 1) / (this.weights[b] ?? 1);
    return this.items[costB < costA ? b : a];
  }

  private candidate(n: number, exclude: T | undefined): number {
    const i = Math.floor(this.random() * n) % n;
    return this.items[i] === exclude ? (i + 1) % n : i;
  }

  private pickUsable(n: number, exclude: T | undefined, usable: (item: T) => boolean): T | undefined {
    const a = this.usableCandidate(n, exclude, usable, -1);
    if (a === -1) return this.pick(exclude); // panic: nothing usable
    const b = this.usableCandidate(n, exclude, usable, a);
    if (b === -1) return this.items[a];
    const costA = (this.load(this.items[a] as T) + 1) / (this.weights[a] ?? 1);
    const costB = (this.load(this.items[b] as T) + 1) / (this.weights[b] ?? 1);
    return this.items[costB < costA ? b : a];
  }

  /**
   * A usable index other than `exclude`'s and `avoid`, or -1. A few random draws keep the choice
   * uniform over usable items while few are unusable (the ejection cap keeps it so); then a scan
   * from the last draw bounds the work.
   */
  private usableCandidate(n: number, exclude: T | undefined, usable: (item: T) => boolean, avoid: number): number {
    let i = 0;
    for (let draw = 0; draw < MAX_DRAWS; draw++) {
      i = Math.floor(this.random() * n) % n;
      if (this.accepts(i, exclude, usable, avoid)) return i;
    }
    for (let step = 1; step < n; step++) {
      const j = (i + step) % n;
      if (this.accepts(j, exclude, usable, avoid)) return j;
    }
    return -1;
  }

  private accepts(i: number, exclude: T | undefined, usable: (item: T) => boolean, avoid: number): boolean {
    const item = this.items[i] as T;
    return i !== avoid && item !== exclude && usable(item);
  }
}
