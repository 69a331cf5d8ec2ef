import type { Directives } from './cache-control.ts';
import { fieldOf, selectingValues, type CacheEntry } from './entry.ts';
import { freshnessLifetimeMs, initialAgeMs, mustRevalidate, notStoredReason, NOT_STORED_FIELDS, varyFields } from './freshness.ts';
import type { RouteCache } from './route-cache.ts';

/** What the forwarder tells the cache about the response it streams to the client. */
export interface ResponseTap {
  /** True: the cache answers the client instead of this response (answerInstead, once it is complete). */
  takesOver(status: number, rawHeaders: readonly Buffer[]): boolean;
  /** Writes the cache's answer; returns the status sent. */
  answerInstead(): number;
  onHead(status: number, rawHeaders: readonly Buffer[]): void;
  onData(chunk: Buffer): void;
  /** The whole body arrived. */
  onComplete(): void;
  /** The exchange ended, whichever way; after onComplete or instead of it. */
  onEnd(): void;
}

export interface FillRequest {
  readonly routeId: string;
  readonly path: string;
  readonly requestTimeMs: number;
  readonly directives: Directives;
  readonly header: (name: string) => string | readonly string[] | undefined;
  /** This miss is the one concurrent misses for the key wait on. */
  readonly leading: boolean;
  /** A stale entry this request revalidates (its validators were sent upstream), or null. */
  readonly stale: CacheEntry | null;
  /** Answers the client from an entry (the revalidated one); returns the status sent. */
  readonly serve: (entry: CacheEntry) => number;
}

/**
 * Tees a GET miss's response into an entry while it streams to the client: the client never
 * waits for the cache, and at most maxEntryBytes are held (a larger response stops being
 * collected and is not stored). Stored only when complete and storable (freshness.ts).
 */
export class CacheFill implements ResponseTap {
  private chunks: Buffer[] | null = [];
  private collected = 0;
  private status = 0;
  private fields: string[] = [];
  private varyNames: readonly string[] = [];
  private responseTimeMs = 0;
  private ended = false;
  private revalidated: CacheEntry | null = null;

  constructor(
    private readonly cache: RouteCache,
    private readonly key: string,
    private readonly request: FillRequest,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * A 304 to the validators of a stale entry (RFC 9111 §4.3.3-4.3.4): the entry is fresh again,
   * its fields updated from the 304's, and it answers the client.
   */
  takesOver(status: number, raw: readonly Buffer[]): boolean {
    const stale = this.request.stale;
    if (stale === null || status !== 304) return false;
    try {
      const responseTimeMs = this.now();
      const updates = storedFields(raw);
      const names = new Set<string>();
      for (let i = 0; i < updates.length; i += 2) names.add(updates[i] as string);
      names.delete('content-length');
      const fields: string[] = [];
      for (let i = 0; i < stale.fields.length; i += 2) if (!names.has(stale.fields[i] as string)) fields.push(stale.fields[i] as string, stale.fields[i + 1] as string);
      for (let i = 0; i < updates.length; i += 2) if (updates[i] !== 'content-length') fields.push(updates[i] as string, updates[i + 1] as string);
      const lookup = (name: string) => fieldOf(fields, name);
      const entry: CacheEntry = {
        ...stale,
        fields,
        freshness: { initialAgeMs: initialAgeMs(lookup, this.request.requestTimeMs, responseTimeMs), lifetimeMs: freshnessLifetimeMs(lookup, this.cache.ttlMs, responseTimeMs), responseTimeMs, mustRevalidate: mustRevalidate(lookup) },
        etag: lookup('etag'),
        lastModified: lookup('last-modified'),
      };
      this.revalidated = entry;
      this.chunks = null;
      const remaining = entry.freshness.lifetimeMs - entry.freshness.initialAgeMs;
      if (remaining > 0) {
        this.cache.store.store(this.key, this.cache.fingerprint, entry);
        if (this.cache.l2) this.cache.store.l2?.set(this.key, entry, remaining);
      }
      return true;
    } catch {
      return false;
    }
  }

  answerInstead(): number {
    return this.request.serve(this.revalidated as CacheEntry);
  }

  onHead(status: number, raw: readonly Buffer[]): void {
    // Called from undici's handler: a fault here must cost the entry, never the response.
    try {
      this.readHead(status, raw);
    } catch {
      this.drop();
    }
  }

  private readHead(status: number, raw: readonly Buffer[]): void {
    this.responseTimeMs = this.now();
    this.status = status;
    // Every field for the decisions (Set-Cookie, Vary, ...); only the storable ones are kept.
    const fields: string[] = [];
    let setCookie = false;
    let bytes = 0;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = (raw[i] as Buffer).toString('latin1').toLowerCase();
      const value = (raw[i + 1] as Buffer).toString('latin1');
      if (name === 'set-cookie') setCookie = true;
      bytes += name.length + value.length;
      fields.push(name, value);
    }
    this.fields = storedFields(raw);
    this.collected = bytes;
    const lookup = (name: string) => fieldOf(fields, name);
    const refused = notStoredReason({ status, fields: lookup, hasSetCookie: setCookie, request: this.request.directives, cacheSetCookie: this.cache.cacheSetCookie });
    const declared = Number(lookup('content-length'));
    if (refused !== null || (Number.isFinite(declared) && declared + bytes > this.cache.maxEntryBytes)) return this.drop();
    const vary = varyFields(lookup('vary'));
    if (typeof vary === 'string') return this.drop();
    this.varyNames = [...new Set([...vary, ...this.cache.vary])].sort();
  }

  onData(chunk: Buffer): void {
    const chunks = this.chunks;
    if (chunks === null) return;
    this.collected += chunk.length;
    if (this.collected > this.cache.maxEntryBytes) return this.drop();
    chunks.push(chunk);
  }

  onComplete(): void {
    try {
      this.complete();
    } catch {
      this.drop();
    }
  }

  private complete(): void {
    const chunks = this.chunks;
    if (chunks === null || this.status === 0) return;
    this.chunks = null;
    const lookup = (name: string) => fieldOf(this.fields, name);
    const initial = initialAgeMs(lookup, this.request.requestTimeMs, this.responseTimeMs);
    const lifetime = freshnessLifetimeMs(lookup, this.cache.ttlMs, this.responseTimeMs);
    if (lifetime <= initial) return;
    const entry: CacheEntry = {
      routeId: this.request.routeId,
      path: this.request.path,
      status: this.status,
      fields: this.fields,
      body: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks),
      freshness: { initialAgeMs: initial, lifetimeMs: lifetime, responseTimeMs: this.responseTimeMs, mustRevalidate: mustRevalidate(lookup) },
      varyNames: this.varyNames,
      varyValues: selectingValues(this.varyNames, this.request.header),
      etag: lookup('etag'),
      lastModified: lookup('last-modified'),
    };
    this.cache.store.store(this.key, this.cache.fingerprint, entry);
    if (this.cache.l2) this.cache.store.l2?.set(this.key, entry, lifetime - initial);
  }

  onEnd(): void {
    if (this.ended) return;
    this.ended = true;
    this.chunks = null;
    if (this.request.leading) this.cache.store.land(this.key);
  }

  private drop(): void {
    this.chunks = null;
  }
}

/** Response fields as an entry keeps them: lower-case names, nothing hop-by-hop or per exchange. */
function storedFields(raw: readonly Buffer[]): string[] {
  const all: string[] = [];
  let connectionNamed: Set<string> | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as Buffer).toString('latin1').toLowerCase();
    const value = (raw[i + 1] as Buffer).toString('latin1');
    if (name === 'connection') connectionNamed = new Set(value.split(',').map((t) => t.trim().toLowerCase()));
    all.push(name, value);
  }
  const kept: string[] = [];
  for (let i = 0; i < all.length; i += 2) {
    const name = all[i] as string;
    if (NOT_STORED_FIELDS.has(name) || connectionNamed?.has(name)) continue;
    kept.push(name, all[i + 1] as string);
  }
  return kept;
}
