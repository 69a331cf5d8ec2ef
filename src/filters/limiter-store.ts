import { Cluster, Redis } from 'ioredis';
import type { ClusterOptions, RedisOptions as IORedisOptions } from 'ioredis';
import { describeError } from '../core/errors.ts';
import type { Logger } from '../core/logger.ts';

/**
 * Rate limit counters: GCRA (the generic cell rate algorithm, as in ATM traffic shaping and
 * redis-cell). A key holds one number, its theoretical arrival time (TAT): the instant at which
 * the bucket would be empty again if no other request came. With emission interval T =
 * window/limit and burst B, a request at `now` is allowed when `max(TAT, now) + T - B·T <= now`,
 * and then TAT moves on by T. A fresh key therefore takes exactly B requests at once, then one
 * per T, and a key costs one small string in Redis no matter how high the limit is.
 *
 * Time is counted in whole microseconds and T is rounded to a whole microsecond (at least 1), so
 * the arithmetic is exact integer arithmetic in both Lua and JavaScript (all values stay far
 * below 2^53): with fractional T the B-th request of a burst could be refused by a rounding error.
 * The price is that one key cannot go faster than 1,000,000 requests/s, far beyond what one
 * Redis key serves anyway.
 */

export interface RateDecision {
  readonly allowed: boolean;
  readonly limit: number;
  /** Requests allowed right now after this one. */
  readonly remaining: number;
  /** Until the bucket is full again. */
  readonly resetMs: number;
  /** Until the next request would be allowed; 0 when this one was. */
  readonly retryAfterMs: number;
}

export interface RateQuotaMs {
  readonly limit: number;
  readonly windowMs: number;
  readonly burst: number;
}

export type BackendState = 'redis' | 'local' | 'none';

export type RedisOptions =
  | { url: string }
  | { sentinels: { host: string; port: number }[]; name: string }
  | { cluster: { host: string; port: number }[] };

/** Keeps B·T (and so every TAT and TTL) inside exact double integers even for absurd bursts. */
const MAX_TOLERANCE_US = 2 ** 50;

export interface GcraParams {
  /** Emission interval, whole µs. */
  readonly intervalUs: number;
  /** B·T: how far ahead of now the TAT may run, whole µs. */
  readonly toleranceUs: number;
}

export function gcraParams(quota: RateQuotaMs): GcraParams {
  const intervalUs = Math.max(1, Math.round((quota.windowMs * 1000) / quota.limit));
  return { intervalUs, toleranceUs: Math.min(intervalUs * quota.burst, MAX_TOLERANCE_US) };
}

export interface GcraStep {
  readonly allowed: boolean;
  readonly remaining: number;
  /** µs until the bucket is full. */
  readonly resetUs: number;
  /** µs until the next request would be allowed (0 when allowed). */
  readonly retryAfterUs: number;
  /** The TAT to store when allowed (unchanged TAT when refused: nothing is written). */
  readonly tatUs: number;
}

/** One GCRA decision. `GCRA_LUA` is the same function, line for line; keep them in step. */
export function gcra(storedTatUs: number | undefined, nowUs: number, p: GcraParams): GcraStep {
  const tat = storedTatUs === undefined || storedTatUs < nowUs ? nowUs : storedTatUs;
  const newTat = tat + p.intervalUs;
  const allowAt = newTat - p.toleranceUs;
  if (nowUs < allowAt) return { allowed: false, remaining: 0, resetUs: tat - nowUs, retryAfterUs: allowAt - nowUs, tatUs: tat };
  return { allowed: true, remaining: Math.floor((nowUs - allowAt) / p.intervalUs), resetUs: newTat - nowUs, retryAfterUs: 0, tatUs: newTat };
}

/**
 * Redis' own clock (TIME) is used, not the gateway's, so gateways with skewed clocks share one
 * timeline. Before Redis 5, a script that read TIME could not write unless it switched to effects
 * replication first; from 5 on that is the default and from 7 the call is a no-op, so it is made
 * only where it exists. TAT and TTL go through string.format('%d') because Lua would otherwise
 * render large numbers as 1.7e+15, which SET ... PX refuses.
 * Reply: {allowed 0/1, remaining, reset µs, retry-after µs}.
 */
export const GCRA_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '')
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', math.ceil((new_tat - now) / 1000)))
return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}
`;

function toDecision(limit: number, allowed: boolean, remaining: number, resetUs: number, retryAfterUs: number): RateDecision {
  return { allowed, limit, remaining, resetMs: Math.ceil(resetUs / 1000), retryAfterMs: Math.ceil(retryAfterUs / 1000) };
}

export interface LocalStoreOptions {
  /** Entries kept at most; beyond it the least recently used key is forgotten. */
  readonly maxEntries?: number;
  /** Milliseconds on a monotonic clock (injectable for tests). */
  readonly now?: () => number;
  /**
   * Processes that count on their own (`--workers N`): each allows 1/N of the rate and of the
   * burst (at least 1), so the gateway as a whole keeps close to the limit without Redis.
   */
  readonly shares?: number;
}

/**
 * The same GCRA in process memory: the whole story without Redis, and the fail-open fallback
 * with it. Map order doubles as recency order (a key is re-inserted on every write), so the
 * head holds the stalest keys: each write drops up to two expired ones from there, and a full map
 * evicts its head. That keeps memory bounded with O(1) work per request and no timer to close.
 */
export class LocalRateStore {
  readonly #tats = new Map<string, number>();
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #shares: number;
  readonly #scaled = new WeakMap<RateQuotaMs, RateQuotaMs>();

  constructor(options: LocalStoreOptions = {}) {
    this.#maxEntries = Math.max(1, options.maxEntries ?? 100_000);
    this.#now = options.now ?? (() => performance.now());
    this.#shares = Math.max(1, Math.floor(options.shares ?? 1));
  }

  get size(): number {
    return this.#tats.size;
  }

  decide(key: string, quota: RateQuotaMs): RateDecision {
    const nowUs = Math.floor(this.#now() * 1000);
    const step = gcra(this.#tats.get(key), nowUs, gcraParams(this.#share(quota)));
    if (step.allowed) this.#write(key, step.tatUs, nowUs);
    return toDecision(quota.limit, step.allowed, step.remaining, step.resetUs, step.retryAfterUs);
  }

  /** This process's part of a quota; quotas are compiled once per route, so it is kept per object. */
  #share(quota: RateQuotaMs): RateQuotaMs {
    if (this.#shares === 1) return quota;
    let part = this.#scaled.get(quota);
    if (!part) {
      part = { limit: quota.limit / this.#shares, windowMs: quota.windowMs, burst: Math.max(1, Math.floor(quota.burst / this.#shares)) };
      this.#scaled.set(quota, part);
    }
    return part;
  }

  #write(key: string, tatUs: number, nowUs: number): void {
    const tats = this.#tats;
    tats.delete(key);
    for (let i = 0; i < 2; i++) {
      const head = tats.entries().next();
      if (head.done || head.value[1] > nowUs) break;
      tats.delete(head.value[0]);
    }
    if (tats.size >= this.#maxEntries) {
      const oldest = tats.keys().next();
      if (!oldest.done) tats.delete(oldest.value);
    }
    tats.set(key, tatUs);
  }
}

type RedisClient = Redis | Cluster;
type GcraReply = [number, number, number, number];
interface GcraCommand {
  cgwGcra(key: string, intervalUs: string, toleranceUs: string): Promise<GcraReply>;
}

export interface BackendOptions {
  readonly redis?: RedisOptions | undefined;
  readonly logger: Logger;
  readonly onStateChange?: (state: BackendState) => void;
  /** Longest a decision waits for Redis before it falls back (default 100 ms). */
  readonly commandTimeoutMs?: number;
  /** After a command failed on a connection that still looks up, how long before Redis is probed again. */
  readonly probeIntervalMs?: number;
  readonly local?: LocalStoreOptions;
}

const backoff = (times: number): number => Math.min(100 * 2 ** Math.max(0, times - 1), 2000);

/**
 * Failed probes in a row, on a connection that still claims to be up, after which it is dropped
 * and made again. A master that hangs (frozen VM, SIGSTOP, a partition that drops packets) never
 * closes its socket, so ioredis would stay on it after Sentinel promoted a replica; a new
 * connection asks the sentinels again.
 */
const RECONNECT_AFTER_FAILED_PROBES = 3;

/**
 * A client that has not served a decision for this long while requests kept asking is thrown away
 * and made again. ioredis recovers from a dead master by itself almost always; in a CI run a
 * Sentinel client, whose reconnect met a failover in progress (the sentinels still naming the
 * dead master, then +switch-master), never became ready again, and fail-closed rules answered 503
 * for over a minute. A new client asks the sentinels (or the cluster) from scratch.
 */
const REMAKE_CLIENT_AFTER_MS = 10_000;

/**
 * Distinct reasons logged at warn level per outage: the first one is often only "connection
 * closed" or a timeout, the telling one ("cluster support disabled", "No such master with that
 * name") may come next; beyond a handful it would be noise.
 */
const MAX_REASONS_PER_OUTAGE = 5;

/**
 * Cluster node connections also carry ioredis' own CLUSTER SLOTS reads, which a 100 ms limit
 * fails on a busy machine; decisions still stop waiting after commandTimeoutMs (the race in
 * decide), this only bounds how long ioredis keeps a command to a silent node.
 */
const CLUSTER_NODE_COMMAND_TIMEOUT_MS = 1000;

/**
 * Long-lived, one per gateway process: owns the ioredis client and the local fallback store.
 *
 * The request path must never wait on a sick Redis, so the client neither queues commands while
 * disconnected (`enableOfflineQueue: false`) nor retries them (`maxRetriesPerRequest: 0`), and
 * every command is raced against `commandTimeoutMs`. The connection, on the other hand, is
 * retried forever with capped backoff: state goes back to 'redis' on ioredis' 'ready' without
 * anyone having to notice. A Redis that hangs without dropping the connection (SIGSTOP, a
 * blocked event loop) gives no such event, so after a failed command only one probe at a time,
 * at most one per `probeIntervalMs`, goes to Redis until one succeeds.
 */
export class RateLimiterBackend {
  readonly #logger: Logger;
  readonly #onStateChange: ((state: BackendState) => void) | undefined;
  readonly #timeoutMs: number;
  readonly #probeIntervalMs: number;
  readonly #local: LocalRateStore;
  #client: RedisClient | undefined;
  #gcra: GcraCommand | undefined;
  readonly #redisOptions: RedisOptions | undefined;
  /** Since when decisions have been failing (or the client not ready), while requests asked; 0: healthy. */
  #failingSince = 0;
  #state: BackendState;
  /** A command failed while the connection still claimed to be ready. */
  #degraded = false;
  #probing = false;
  #nextProbeAt = 0;
  /** Reasons already logged at warn level during this outage (a new reason is news; repeats are not). */
  readonly #outageReasons = new Set<string>();
  #closed = false;
  #failedProbes = 0;

  constructor(options: BackendOptions) {
    this.#logger = options.logger;
    this.#onStateChange = options.onStateChange;
    this.#timeoutMs = options.commandTimeoutMs ?? 100;
    this.#probeIntervalMs = options.probeIntervalMs ?? 1000;
    this.#local = new LocalRateStore(options.local);
    if (!options.redis) {
      this.#state = 'none';
      return;
    }
    this.#state = 'local';
    this.#redisOptions = options.redis;
    this.#connect(options.redis);
  }

  #connect(redis: RedisOptions): void {
    const client = createClient(redis, this.#timeoutMs);
    client.defineCommand('cgwGcra', { numberOfKeys: 1, lua: GCRA_LUA });
    this.#client = client;
    this.#gcra = client as unknown as GcraCommand;
    client.on('ready', () => {
      if (client !== this.#client) return;
      this.#degraded = false;
      this.#failingSince = 0;
      this.#outageReasons.clear();
      this.#setState('redis');
    });
    // Without an 'error' listener ioredis prints every failed reconnect to stderr.
    client.on('error', (err: unknown) => {
      if (client === this.#client) this.#outage(err);
    });
    client.on('close', () => {
      if (client === this.#client) this.#outage(new Error('connection closed'));
    });
  }

  /** Decisions have failed for REMAKE_CLIENT_AFTER_MS while asked for: a new client, from scratch. */
  #remakeIfStuck(now: number): void {
    if (this.#failingSince === 0) {
      this.#failingSince = now;
      return;
    }
    if (now - this.#failingSince < REMAKE_CLIENT_AFTER_MS || this.#closed || !this.#redisOptions) return;
    this.#failingSince = now;
    const old = this.#client;
    this.#logger.warn({ seconds: REMAKE_CLIENT_AFTER_MS / 1000 }, 'rate limiter: Redis unusable for a while; making a new connection from scratch');
    this.#connect(this.#redisOptions);
    this.#degraded = false;
    this.#failedProbes = 0;
    old?.disconnect();
  }

  get state(): BackendState {
    return this.#state;
  }

  /**
   * Resolves true once Redis answers, false after `timeoutMs`. The gateway waits on it (bounded)
   * before it reports ready, so fail-closed routes do not answer 503 during the first connect.
   */
  whenConnected(timeoutMs: number): Promise<boolean> {
    const client = this.#client;
    if (!client) return Promise.resolve(false);
    if (this.#state === 'redis') return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(false), timeoutMs);
      const onReady = (): void => done(true);
      function done(connected: boolean): void {
        clearTimeout(timer);
        client?.off('ready', onReady);
        resolve(connected);
      }
      client.once('ready', onReady);
    });
  }

  /** Resolves within about commandTimeoutMs whatever Redis does; never rejects. */
  async decide(key: string, quota: RateQuotaMs, failureMode: 'open' | 'closed'): Promise<RateDecision | 'unavailable'> {
    const gcraCommand = this.#gcra;
    const client = this.#client;
    if (!gcraCommand || !client) return this.#local.decide(key, quota);
    const fallback = (): RateDecision | 'unavailable' => (failureMode === 'open' ? this.#local.decide(key, quota) : 'unavailable');
    if (this.#closed) return fallback();
    if (client.status !== 'ready') {
      this.#remakeIfStuck(performance.now());
      return fallback();
    }
    const probe = this.#degraded;
    if (probe) {
      if (this.#probing || performance.now() < this.#nextProbeAt) return fallback();
      this.#probing = true;
    }
    const p = gcraParams(quota);
    let timer: NodeJS.Timeout | undefined;
    try {
      const reply = await Promise.race([
        gcraCommand.cgwGcra(key, String(p.intervalUs), String(p.toleranceUs)),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer from Redis within ${this.#timeoutMs} ms`)), this.#timeoutMs);
        }),
      ]);
      this.#failingSince = 0;
      if (this.#degraded) {
        this.#degraded = false;
        this.#outageReasons.clear();
        this.#failedProbes = 0;
      }
      if (client.status === 'ready') this.#setState('redis');
      const [allowed, remaining, resetUs, retryAfterUs] = reply;
      return toDecision(quota.limit, allowed === 1, remaining, resetUs, retryAfterUs);
    } catch (err) {
      this.#degraded = true;
      this.#nextProbeAt = performance.now() + this.#probeIntervalMs;
      this.#remakeIfStuck(performance.now());
      this.#outage(err);
      if (probe || this.#failedProbes === 0) this.#findMasterAgain(client);
      return fallback();
    } finally {
      clearTimeout(timer);
      if (probe) this.#probing = false;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const client = this.#client;
    if (!client) return;
    // quit() would wait for a Redis that may be gone; nothing in flight is worth keeping.
    client.disconnect();
  }

  /**
   * After a failed command: the key's master may have been replaced. A Cluster client learns the
   * new slot owners only from a MOVED answer, which a dead or hung master never gives, so the
   * slot map is read again (CLUSTER SLOTS from any node that answers, ioredis runs one refresh at
   * a time); a plain or Sentinel client is reconnected once its socket has stayed silent for a
   * few probes. Called at most once per probe interval.
   */
  #findMasterAgain(client: RedisClient): void {
    this.#failedProbes++;
    if (client instanceof Cluster) {
      client.refreshSlotsCache();
      return;
    }
    if (this.#failedProbes >= RECONNECT_AFTER_FAILED_PROBES && client.status === 'ready') {
      this.#failedProbes = 0;
      this.#logger.warn('rate limiter: Redis connection up but silent; reconnecting');
      client.disconnect(true);
    }
  }

  #outage(err: unknown): void {
    if (this.#closed) return;
    const reason = describeRedisError(err);
    // "Retrying from scratch after 400ms" and the like: the same reason with other figures.
    const kind = reason.replace(/\d+/g, '#');
    if (this.#outageReasons.size < MAX_REASONS_PER_OUTAGE && !this.#outageReasons.has(kind)) {
      this.#outageReasons.add(kind);
      this.#logger.warn({ err: reason }, 'rate limiter: Redis unavailable; rules with failureMode open count per gateway, closed ones answer 503');
    } else {
      this.#logger.debug({ err: reason }, 'rate limiter: Redis still unavailable');
    }
    this.#setState('local');
  }

  #setState(state: BackendState): void {
    if (this.#closed || this.#state === state) return;
    this.#state = state;
    if (state === 'redis') this.#logger.info('rate limiter: using Redis; limits are global across gateways');
    try {
      this.#onStateChange?.(state);
    } catch (err) {
      this.#logger.error({ err: describeError(err) }, 'rate limiter: onStateChange threw');
    }
  }
}

/**
 * ioredis' Cluster reports only "Failed to refresh slots cache." when no node gave it a slot map;
 * the reason (for example "This instance has cluster support disabled" when --redis-cluster names
 * a plain Redis) is the last node's error, which it keeps on the error object.
 */
function describeRedisError(err: unknown): string {
  const nodeError = err instanceof Error ? (err as Error & { lastNodeError?: unknown }).lastNodeError : undefined;
  return nodeError === undefined ? describeError(err) : `${describeError(err)} (last node: ${describeError(nodeError)})`;
}

function createClient(options: RedisOptions, commandTimeout: number): RedisClient {
  const common = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout,
    connectTimeout: 2000,
    lazyConnect: false,
    retryStrategy: backoff,
    // A master demoted to replica (a Sentinel failover it survived, a manual one) refuses writes
    // with READONLY while the socket stays up: reconnect, which asks the sentinels for the master.
    reconnectOnError: (err: Error) => err.message.startsWith('READONLY'),
  } satisfies IORedisOptions;
  if ('cluster' in options) {
    const clusterOptions: ClusterOptions = {
      enableOfflineQueue: false,
      lazyConnect: false,
      clusterRetryStrategy: backoff,
      redisOptions: { ...common, commandTimeout: Math.max(commandTimeout, CLUSTER_NODE_COMMAND_TIMEOUT_MS) },
    };
    return new Cluster(options.cluster, clusterOptions);
  }
  if ('sentinels' in options) {
    // failoverDetector: subscribe to the sentinels' +switch-master and reconnect at once when the
    // master changes, instead of waiting for the old master's socket to fail.
    return new Redis({ ...common, sentinels: options.sentinels, name: options.name, sentinelRetryStrategy: backoff, failoverDetector: true });
  }
  return new Redis(options.url, common);
}
