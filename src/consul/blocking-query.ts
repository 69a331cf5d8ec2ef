import { Backoff, TokenBucket, delay } from '../core/backoff.ts';
import { describeError } from '../core/errors.ts';
import { formatConsulWait } from '../core/duration.ts';
import { contentHash } from '../core/hash.ts';
import type { WatchStatus } from '../core/types.ts';
import { ConsulRefusedError, type ConsulClient, type ConsulResponse } from './client.ts';
import type { Admission, RefusalGate } from './refusal-gate.ts';

export type { WatchStatus };

/**
 * The one blocking-query loop every watch uses (Consul docs, "Blocking Queries"; measured
 * behaviour in docs/consul-notes.md). Hand-written rather than the `consul` package's `watch()`,
 * which has no rate limit, keeps stale indexes after errors and re-emits unchanged content.
 */
export interface BlockingQueryOptions<T> {
  readonly name: string;
  readonly path: string;
  readonly query?: Record<string, string>;
  /** Validates and normalises the body; throwing marks the response as an error. */
  readonly parse: (body: unknown) => T;
  readonly client: ConsulClient;
  readonly waitMs: number;
  /** Calls allowed at once before pacing starts, and the pace after that. */
  readonly rate?: { readonly burst: number; readonly intervalMs: number };
  readonly backoff?: { readonly baseMs: number; readonly capMs: number };
  /**
   * Shared by every watch of a gateway: admits reads that cannot block and paces them while Consul
   * refuses connections. Without one, a refused watch backs off on its own (`refusalBackoff`).
   */
  readonly gate?: RefusalGate;
  readonly refusalBackoff?: { readonly baseMs: number; readonly capMs: number };
  /** Plain reads this far apart instead of blocking queries (for stable services: no held connection). */
  readonly pollIntervalMs?: number;
  /** End after the first successful read (a service pinned to its last known endpoints). */
  readonly once?: boolean;
  /**
   * Hand on every answer whose text changed, without hashing the parsed value first: for a
   * consumer that compares the content itself (the bulk health detector, whose answer holds
   * every check in the datacenter and would cost more to hash than to compare by index).
   */
  readonly consumerCompares?: boolean;
  /** `parse` gets the answer's text (or null for a 404) instead of parsed JSON. */
  readonly rawText?: boolean;
  readonly onRequest?: (name: string) => void;
  readonly onError?: (name: string, error: unknown) => void;
  readonly onSuccess?: (name: string) => void;
}

export interface WatchUpdate<T> {
  readonly value: T;
  readonly index: number;
}

/** Consul adds up to wait/16 of jitter; the HTTP timeout must exceed both plus a margin. */
export function blockingTimeoutMs(waitMs: number): number {
  return Math.ceil(waitMs * 1.1) + 5_000;
}

const FIRST_READ_TIMEOUT_MS = 15_000;

/** A refused watch without a gate: longer than for other errors, an agent at its limit needs time. */
const REFUSAL_BACKOFF = { baseMs: 1_000, capMs: 30_000 };

/**
 * Under churn every blocking call returns at once. A watch then makes at most 4 calls in a burst
 * and one per 250 ms after that: a change waits at most 250 ms (changes in between are coalesced
 * into that one read), and a constantly changing service costs Consul 4 reads a second, not
 * hundreds (docs/consul-notes.md, "Hot loops").
 */
export const WATCH_BURST = 4;
export const WATCH_INTERVAL_MS = 250;

class WatchdogInterrupt extends Error {}

/** What the supervisor's status views and watchdog need from any watch. */
export interface WatchHandle {
  readonly name: string;
  status(): WatchStatus;
  silentForMs(now?: number): number;
  interrupt(): void;
}

export class BlockingQuery<T> implements AsyncIterable<WatchUpdate<T>>, WatchHandle {
  private index = 0;
  private lastHash: string | undefined;
  private lastText: string | undefined;
  private inFlight: AbortController | undefined;
  private lastActivityAt = Date.now();
  private mutable = {
    requests: 0,
    errors: 0,
    consecutiveErrors: 0,
    restarts: 0,
    lastSuccessAt: null as number | null,
    lastChangeAt: null as number | null,
    lastError: null as string | null,
    knownLeader: null as boolean | null,
    lastContactMs: null as number | null,
  };

  constructor(
    private readonly options: BlockingQueryOptions<T>,
    private readonly signal: AbortSignal,
  ) {}

  get name(): string {
    return this.options.name;
  }

  status(): WatchStatus {
    const m = this.mutable;
    const state = m.consecutiveErrors > 0 ? 'failing' : m.lastSuccessAt === null ? 'starting' : 'ok';
    return { name: this.options.name, path: this.options.path, index: this.index, ...m, state };
  }

  /** How long the request in flight has gone unanswered (0 when none is); the watchdog's input. */
  silentForMs(now = Date.now()): number {
    return this.inFlight ? now - this.lastActivityAt : 0;
  }

  /** Aborts the request in flight; the loop restarts from index 0 (a full read). */
  interrupt(): void {
    this.inFlight?.abort(new WatchdogInterrupt('watch silent for too long'));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<WatchUpdate<T>> {
    const { name } = this.options;
    const backoff = new Backoff(this.options.backoff?.baseMs ?? 250, this.options.backoff?.capMs ?? 10_000);
    const refusalBackoff = new Backoff(
      this.options.refusalBackoff?.baseMs ?? REFUSAL_BACKOFF.baseMs,
      this.options.refusalBackoff?.capMs ?? REFUSAL_BACKOFF.capMs,
    );
    try {
      yield* this.loop(backoff, refusalBackoff);
    } finally {
      // A stopped watch no longer waits for Consul to accept it.
      this.options.gate?.forget(name);
    }
  }

  private async *loop(backoff: Backoff, refusalBackoff: Backoff): AsyncGenerator<WatchUpdate<T>> {
    const { path, waitMs, parse, name } = this.options;
    const bucket = new TokenBucket(this.options.rate?.burst ?? WATCH_BURST, this.options.rate?.intervalMs ?? WATCH_INTERVAL_MS);

    while (!this.signal.aborted) {
      await delay(bucket.take(), this.signal);
      if (this.signal.aborted) return;
      // Index 0 never blocks, and a blocking read on index 0 would return at once anyway.
      const polling = this.options.pollIntervalMs !== undefined;
      const blocking = this.index > 0 && !polling;
      // Reads that cannot block open connections in groups, and one at a time while Consul refuses.
      const admission = blocking ? undefined : await this.options.gate?.admit(this.signal);
      if (this.signal.aborted) {
        admission?.done('error');
        return;
      }

      const controller = new AbortController();
      const onAbort = (): void => controller.abort(this.signal.reason);
      this.signal.addEventListener('abort', onAbort, { once: true });
      this.inFlight = controller;
      this.lastActivityAt = Date.now();
      let pause = 0;
      try {
        this.mutable.requests += 1;
        this.options.onRequest?.(name);
        const res = await this.send(
          { ...this.options.query, index: blocking ? String(this.index) : undefined, wait: blocking ? formatConsulWait(waitMs) : undefined },
          { signal: controller.signal, timeoutMs: blocking ? blockingTimeoutMs(waitMs) : FIRST_READ_TIMEOUT_MS, unchangedFrom: this.lastText, rawText: this.options.rawText },
          admission,
        );
        this.lastActivityAt = Date.now();
        // The index can go backwards (server rebuild, KV tombstone reaping): a watcher that keeps
        // the higher index is blind for a whole wait, so start over with a full read.
        if (res.index < this.index) this.index = 0;
        else this.index = Math.max(1, res.index);
        backoff.reset();
        refusalBackoff.reset();
        this.mutable.consecutiveErrors = 0;
        this.mutable.lastError = null;
        this.mutable.lastSuccessAt = Date.now();
        // With --consistency stale a follower answers; these say how old its view may be.
        this.mutable.knownLeader = res.knownLeader ?? null;
        this.mutable.lastContactMs = res.lastContactMs ?? null;
        this.options.onSuccess?.(name);
        // Same text as last time: nothing to parse, hash or hand on. Otherwise parse, and hand
        // on only when the content differs (a check's output changed, say, is not a change).
        if (!res.unchanged) {
          const value = parse(this.options.rawText ? (res.status === 200 ? res.text : null) : res.body);
          this.lastText = res.text;
          const hash = this.options.consumerCompares ? res.text : contentHash(value);
          if (hash !== this.lastHash) {
            this.lastHash = hash;
            this.mutable.lastChangeAt = Date.now();
            yield { value, index: this.index };
          }
        }
        if (this.options.once) return;
        if (polling) pause = this.options.pollIntervalMs ?? 0;
      } catch (err) {
        this.lastActivityAt = Date.now();
        if (this.signal.aborted) return;
        // After any transport error or reconnect the old index may belong to another server.
        this.index = 0;
        if (controller.signal.reason instanceof WatchdogInterrupt) {
          this.mutable.restarts += 1;
          continue;
        }
        this.mutable.errors += 1;
        this.mutable.consecutiveErrors += 1;
        this.mutable.lastError = describeError(err);
        this.options.onError?.(name, err);
        // A refusal is paced by the gate (one probe at a time for the whole gateway).
        if (!(err instanceof ConsulRefusedError)) await delay(backoff.next(), this.signal);
        else if (!this.options.gate) await delay(refusalBackoff.next(), this.signal);
      } finally {
        admission?.done('error');
        this.signal.removeEventListener('abort', onAbort);
        if (this.inFlight === controller) this.inFlight = undefined;
      }
      // Outside the request: a poll pause is not a silent watch for the watchdog.
      if (pause > 0) await delay(pause, this.signal);
    }
  }

  /** One request; tells the gate at once whether Consul accepted it, before anything is handed on. */
  private async send(
    query: Record<string, string | undefined>,
    opts: { signal: AbortSignal; timeoutMs: number; unchangedFrom: string | undefined; rawText: boolean | undefined },
    admission: Admission | undefined,
  ): Promise<ConsulResponse> {
    const { gate, name } = this.options;
    try {
      const res = await this.options.client.get(this.options.path, query, opts);
      gate?.succeeded(name);
      admission?.done('ok');
      return res;
    } catch (err) {
      if (err instanceof ConsulRefusedError) {
        gate?.refused(name);
        admission?.done('refused');
      } else {
        admission?.done('error');
      }
      throw err;
    }
  }
}
