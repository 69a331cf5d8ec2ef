import { Redis } from 'ioredis';
import { z } from 'zod';
import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import { describeError } from '../core/errors.ts';
import type { CacheEntry } from './entry.ts';
import { digest } from './key.ts';

/** The shared (L2) store: every call settles within its bound and never throws. */
export interface L2Store {
  get(key: string): Promise<CacheEntry | undefined>;
  /** Fire and forget. */
  set(key: string, entry: CacheEntry, ttlMs: number): void;
  /** A route asks for L2: connect now, so its first requests find the connection up. */
  prepare(): void;
  close(): void;
}

/** How long a request may wait on Redis before it goes on without it. */
export const L2_TIMEOUT_MS = 100;
/** A value read back larger than this is refused (an entry is at most maxEntryBytes, 64 MiB). */
const MAX_VALUE_BYTES = 64 * 1024 * 1024 + 65_536;
const MAGIC = Buffer.from('cgw-cache-1\n');

/**
 * What Redis holds is outside input like any other (another gateway version, or anyone with
 * access to Redis, may have written it): the envelope is checked field by field before it may
 * answer a client.
 */
const envelopeSchema = z
  .object({
    routeId: z.string().max(2048),
    path: z.string().max(16_384),
    status: z.number().int().min(200).max(599),
    fields: z.array(z.string().max(65_536)).max(512).refine((f) => f.length % 2 === 0, 'fields come in pairs'),
    freshness: z.object({ initialAgeMs: z.number().min(0), lifetimeMs: z.number().min(0), responseTimeMs: z.number().min(0), mustRevalidate: z.boolean() }).strict(),
    varyNames: z.array(z.string().regex(/^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$/)).max(32),
    varyValues: z.string().max(65_536),
    etag: z.string().max(1024).optional(),
    lastModified: z.string().max(128).optional(),
  })
  .strict();

export function encodeEntry(entry: CacheEntry): Buffer {
  const { body, ...meta } = entry;
  const json = Buffer.from(JSON.stringify(meta));
  const length = Buffer.alloc(4);
  length.writeUInt32BE(json.length);
  return Buffer.concat([MAGIC, length, json, body]);
}

export function decodeEntry(value: Buffer): CacheEntry | undefined {
  if (value.length > MAX_VALUE_BYTES || value.length < MAGIC.length + 4 || !value.subarray(0, MAGIC.length).equals(MAGIC)) return undefined;
  const length = value.readUInt32BE(MAGIC.length);
  const start = MAGIC.length + 4;
  if (start + length > value.length) return undefined;
  let meta: unknown;
  try {
    meta = JSON.parse(value.subarray(start, start + length).toString('utf8'));
  } catch {
    return undefined;
  }
  const parsed = envelopeSchema.safeParse(meta);
  if (!parsed.success) return undefined;
  const m = parsed.data;
  return { ...m, etag: m.etag, lastModified: m.lastModified, body: Buffer.from(value.subarray(start + length)) };
}

/**
 * L2 on one Redis (`--redis <url>`): commands are never queued while disconnected nor retried,
 * and each is raced against L2_TIMEOUT_MS, so a slow or dead Redis costs a request at most that
 * long and the answer comes from memory or the upstream. Keys are hashed (they may hold a
 * principal and client paths) under `cgw:cache:`.
 */
export class RedisL2 implements L2Store {
  private readonly client: Redis;

  constructor(
    url: string,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {
    this.client = new Redis(url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: L2_TIMEOUT_MS,
      connectTimeout: 2000,
      retryStrategy: (times) => Math.min(2000, 50 * 2 ** Math.min(times, 6)),
    });
    // Errors are counted per command; the connection's own are expected while Redis is down.
    this.client.on('error', () => {});
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const value = await Promise.race([
        this.client.getBuffer(redisKey(key)),
        new Promise<'timeout'>((resolve) => {
          timer = setTimeout(resolve, L2_TIMEOUT_MS, 'timeout');
        }),
      ]);
      if (value === 'timeout') return this.count('get', 'timeout');
      if (value === null) return this.count('get', 'miss');
      const entry = decodeEntry(value);
      if (entry === undefined) return this.count('get', 'invalid');
      this.metrics.cacheL2.inc({ operation: 'get', result: 'hit' });
      return entry;
    } catch (err) {
      this.logger.debug({ err: describeError(err) }, 'Redis cache read failed; answering without it');
      return this.count('get', 'error');
    } finally {
      clearTimeout(timer);
    }
  }

  set(key: string, entry: CacheEntry, ttlMs: number): void {
    if (ttlMs < 1) return;
    this.client.set(redisKey(key), encodeEntry(entry), 'PX', Math.ceil(ttlMs)).then(
      () => this.metrics.cacheL2.inc({ operation: 'set', result: 'ok' }),
      () => this.metrics.cacheL2.inc({ operation: 'set', result: 'error' }),
    );
  }

  prepare(): void {}

  private count(operation: 'get', result: 'miss' | 'timeout' | 'invalid' | 'error'): undefined {
    this.metrics.cacheL2.inc({ operation, result });
    return undefined;
  }

  close(): void {
    this.client.disconnect();
  }
}

/**
 * Connects when the first route asking for L2 is compiled, so a gateway whose routes never ask
 * for it opens no connection; calls made while the connection comes up fail fast (counted).
 */
export class LazyL2 implements L2Store {
  private inner: RedisL2 | undefined;

  constructor(private readonly make: () => RedisL2) {}

  get(key: string): Promise<CacheEntry | undefined> {
    this.inner ??= this.make();
    return this.inner.get(key);
  }

  set(key: string, entry: CacheEntry, ttlMs: number): void {
    this.inner ??= this.make();
    this.inner.set(key, entry, ttlMs);
  }

  prepare(): void {
    this.inner ??= this.make();
  }

  close(): void {
    this.inner?.close();
  }
}

function redisKey(key: string): string {
  return `cgw:cache:${digest(key)}`;
}
