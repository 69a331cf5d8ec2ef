/**
 * A least-recently-used map bounded by the sum of its values' sizes in bytes. Hand-written
 * because no LRU library is among the gateway's dependencies (`lru-cache`, with `maxSize` and
 * `sizeCalculation`, would replace it); a Map keeps insertion order, so re-inserting on use makes
 * its first key the least recently used one, and every operation is O(1) but eviction.
 */
export class ByteLru<V> {
  private readonly map = new Map<string, { readonly value: V; readonly bytes: number }>();
  private used = 0;

  constructor(
    readonly maxBytes: number,
    /** Told of every entry dropped to make room (not of deletes or replacements). */
    private readonly onEvict: (key: string, value: V, bytes: number) => void = () => {},
  ) {}

  get bytes(): number {
    return this.used;
  }

  get size(): number {
    return this.map.size;
  }

  /** The value, marked most recently used. */
  get(key: string): V | undefined {
    const slot = this.map.get(key);
    if (slot === undefined) return undefined;
    this.map.delete(key);
    this.map.set(key, slot);
    return slot.value;
  }

  /** Without touching recency. */
  peek(key: string): V | undefined {
    return this.map.get(key)?.value;
  }

  /** False (and nothing stored) when the value alone exceeds the budget. */
  set(key: string, value: V, bytes: number): boolean {
    this.delete(key);
    if (bytes > this.maxBytes) return false;
    while (this.used + bytes > this.maxBytes) {
      const oldest = this.map.keys().next();
      if (oldest.done) break;
      const slot = this.map.get(oldest.value) as { value: V; bytes: number };
      this.map.delete(oldest.value);
      this.used -= slot.bytes;
      this.onEvict(oldest.value, slot.value, slot.bytes);
    }
    this.map.set(key, { value, bytes });
    this.used += bytes;
    return true;
  }

  delete(key: string): boolean {
    const slot = this.map.get(key);
    if (slot === undefined) return false;
    this.map.delete(key);
    this.used -= slot.bytes;
    return true;
  }

  /** Deletes every entry the predicate picks; returns how many. */
  deleteWhere(pick: (key: string, value: V) => boolean): number {
    let n = 0;
    for (const [key, slot] of this.map) {
      if (!pick(key, slot.value)) continue;
      this.map.delete(key);
      this.used -= slot.bytes;
      n += 1;
    }
    return n;
  }
}
