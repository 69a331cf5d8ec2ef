/**
 * One gateway-wide answer to Consul refusing connections (its per-client connection limit,
 * `limits.http_max_conns_per_client`, 200 by default; docs/consul-notes.md, "Limits").
 *
 * The refusals of a restarted gateway come from the parked blocking queries of its killed
 * predecessors, which the agent counts until they return (up to `wait` × 17/16). Retrying every
 * watch on its own would hammer an agent that has no room, and when room appears every watch
 * would rush for it at once and most would be refused again. So every read that cannot block
 * (first reads, reads after an error, polls, bulk fetches) is admitted here:
 *
 * - normally up to `maxAtOnce` at a time (a restart opens its connections in small groups);
 * - while refusing, one probe at a time after a backoff longer than for ordinary errors
 *   (doubling from `baseMs` to `capMs`, jittered between half and all of it, so gateways on one
 *   host do not probe in lockstep); each success doubles the number admitted at once (slow start)
 *   and cuts the backoff short, so the gateway fills the room Consul frees within a few round trips.
 *
 * Blocking reads are never held here: they reuse the connection of the read before them.
 * "Refusing" lasts from the first refusal until every watch and fetch refused has succeeded (or
 * stopped).
 */
export type Outcome = 'ok' | 'refused' | 'error';

export interface RefusalState {
  /** Epoch ms of the first refusal of this episode. */
  readonly since: number;
  /** Refusals in this episode. */
  readonly count: number;
  readonly lastAt: number;
  /** Watches and fetches whose last request was refused. */
  readonly waiting: number;
}

export interface RefusalGateOptions {
  /** Reads that cannot block admitted at once while Consul accepts connections. */
  readonly maxAtOnce: number;
  readonly baseMs: number;
  readonly capMs: number;
  readonly onRefusal?: (key: string) => void;
  readonly onEpisodeStart?: (key: string) => void;
  readonly onEpisodeEnd?: (episode: RefusalState) => void;
  readonly random?: () => number;
  readonly now?: () => number;
}

/**
 * Returned by `admit`: report how the admitted request ended, exactly once (later calls are
 * ignored); report a refusal with `refused(key)` first, so the next probe waits for the backoff.
 */
export interface Admission {
  done(outcome: Outcome): void;
}

export const FIRST_READS_AT_ONCE = 8;
export const REFUSAL_BACKOFF_BASE_MS = 1_000;
export const REFUSAL_BACKOFF_CAP_MS = 8_000;

const NO_ADMISSION: Admission = { done: () => undefined };

export class RefusalGate {
  private readonly refusedKeys = new Set<string>();
  private episode: { since: number; count: number; lastAt: number } | null = null;
  /** Probes refused since the last success: the exponent of the backoff. */
  private attempt = 0;
  /** Admissions at once while refusing. */
  private window = 1;
  private active = 0;
  /** While refusing, no probe before this time. */
  private notBefore = 0;
  private readonly queue: Array<(admission: Admission) => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(private readonly options: RefusalGateOptions) {
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
  }

  get refusing(): boolean {
    return this.episode !== null;
  }

  status(): RefusalState | null {
    return this.episode ? { ...this.episode, waiting: this.refusedKeys.size } : null;
  }

  /** Resolves when the caller may send its read; with the signal aborted (or the gate closed), at once. */
  admit(signal?: AbortSignal): Promise<Admission> {
    if (this.closed || signal?.aborted) return Promise.resolve(NO_ADMISSION);
    return new Promise((resolve) => {
      const waiter = (admission: Admission): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve(admission);
      };
      const onAbort = (): void => {
        const i = this.queue.indexOf(waiter);
        if (i !== -1) this.queue.splice(i, 1);
        resolve(NO_ADMISSION);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiter);
      this.pump();
    });
  }

  /** A request of `key` (a watch or fetch name) was refused, admitted here or not. */
  refused(key: string): void {
    const now = this.now();
    this.options.onRefusal?.(key);
    this.refusedKeys.add(key);
    if (!this.episode) {
      this.episode = { since: now, count: 0, lastAt: now };
      this.options.onEpisodeStart?.(key);
    }
    this.episode.count += 1;
    this.episode.lastAt = now;
    this.window = 1;
    // Requests refused together (a burst sent before the first refusal) count as one probe.
    if (now >= this.notBefore) {
      this.attempt += 1;
      this.notBefore = now + this.backoffMs();
    }
  }

  /** A request of `key` succeeded: Consul accepted its connection. */
  succeeded(key: string): void {
    this.refusedKeys.delete(key);
    this.endIfClear();
  }

  /** `key` stopped (service no longer routed, mode change): it no longer waits for Consul. */
  forget(key: string): void {
    this.refusedKeys.delete(key);
    this.endIfClear();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    for (const waiter of this.queue.splice(0)) waiter(NO_ADMISSION);
  }

  /** The delay before the next probe: capped doubling, jittered between half and all of it. */
  private backoffMs(): number {
    const ceiling = Math.min(this.options.capMs, this.options.baseMs * 2 ** Math.min(this.attempt - 1, 30));
    return Math.round(ceiling * (0.5 + this.random() / 2));
  }

  private endIfClear(): void {
    if (!this.episode || this.refusedKeys.size > 0) return;
    const ended = { ...this.episode, waiting: 0 };
    this.episode = null;
    this.attempt = 0;
    this.notBefore = 0;
    this.window = 1;
    this.options.onEpisodeEnd?.(ended);
    this.pump();
  }

  /** `probe`: admitted while refusing. Reads sent before the first refusal prove nothing about room now. */
  private settle(outcome: Outcome, probe: boolean): void {
    this.active -= 1;
    if (outcome === 'ok' && probe && this.episode) {
      // Room is appearing: admit twice as many, at once.
      this.window = Math.min(this.options.maxAtOnce, this.window * 2);
      this.attempt = 0;
      this.notBefore = 0;
    }
    this.pump();
  }

  private pump(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (!this.closed && this.queue.length > 0 && this.active < (this.episode ? this.window : this.options.maxAtOnce)) {
      const wait = this.episode ? this.notBefore - this.now() : 0;
      if (wait > 0) {
        this.timer = setTimeout(() => this.pump(), wait);
        return;
      }
      const waiter = this.queue.shift();
      if (!waiter) return;
      this.active += 1;
      const probe = this.episode !== null;
      let settled = false;
      waiter({
        done: (outcome) => {
          if (settled) return;
          settled = true;
          this.settle(outcome, probe);
        },
      });
    }
  }
}
