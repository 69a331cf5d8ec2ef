import type { Directives } from './cache-control.ts';
import { fieldOf, selectingValues, type CacheEntry } from './entry.ts';
import { freshnessLifetimeMs, initialAgeMs, mustRevalidate, notStoredReason, NOT_STORED_FIELDS, varyFields } from './freshness.ts';
import type { RouteCache } from './route-cache.ts';

/** What the forwarder tells the cache about the response it streams to the client. */
export interface ResponseTap {
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

  constructor(
    private readonly cache: RouteCache,
    private readonly key: string,
    private readonly request: FillRequest,
    private readonly now: () => number = Date.now,
  ) {}

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
    const fields: string[] = [];
    let connectionNamed: Set<string> | undefined;
    let setCookie = false;
    let bytes = 0;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const name = (raw[i] as Buffer).toString('latin1').toLowerCase();
      const value = (raw[i + 1] as Buffer).toString('latin1');
      if (name === 'connection') connectionNamed = new Set(value.split(',').map((t) => t.trim().toLowerCase()));
      if (name === 'set-cookie') setCookie = true;
      bytes += name.length + value.length;
      fields.push(name, value);
    }
    const kept: string[] = [];
    for (let i = 0; i < fields.length; i += 2) {
      const name = fields[i] as string;
      if (NOT_STORED_FIELDS.has(name) || connectionNamed?.has(name)) continue;
      kept.push(name, fields[i + 1] as string);
    }
    this.fields = kept;
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
