/** Timers the writer runs on; tests pass a fake one and advance it instead of sleeping. */
export interface WriterClock {
  now(): number;
  setTimer(run: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

export const SYSTEM_CLOCK: WriterClock = {
  now: () => Date.now(),
  setTimer: (run, ms) => {
    const timer = setTimeout(run, ms);
    // A pending write never keeps the process alive; drain flushes it.
    timer.unref();
    return timer;
  },
  clearTimer: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface RateBoundedWriterOptions<T> {
  /** Writes start at least this far apart. */
  readonly minIntervalMs: number;
  /** One write; a rejection is retried (with the newest value by then) after the interval. */
  readonly write: (value: T) => Promise<void>;
  readonly onWritten?: (value: T) => void;
  /** Return false when retrying cannot help (the value itself is unwritable): it is then dropped. */
  readonly onFailed?: (value: T, err: unknown) => boolean | void;
  readonly clock?: WriterClock;
}

/**
 * Writes the newest value offered, at most once per interval: a burst of values ends with the
 * last one written when the quiet time is over, never dropped. One write at a time; values
 * offered meanwhile replace each other and the newest is written next. `flush()` (on drain) writes
 * the pending value at once.
 */
export class RateBoundedWriter<T> {
  private pending: { value: T } | undefined;
  private timer: unknown;
  private writing: Promise<void> | undefined;
  private lastStartAt = Number.NEGATIVE_INFINITY;
  private closed = false;
  private readonly clock: WriterClock;

  constructor(private readonly options: RateBoundedWriterOptions<T>) {
    this.clock = options.clock ?? SYSTEM_CLOCK;
  }

  offer(value: T): void {
    if (this.closed) return;
    this.pending = { value };
    this.schedule();
  }

  /** A value is waiting for its turn or being written. */
  get busy(): boolean {
    return this.pending !== undefined || this.writing !== undefined;
  }

  /** Writes what is pending now, whatever the interval; resolves when nothing is left to write. */
  async flush(): Promise<void> {
    this.cancelTimer();
    while (this.writing || this.pending) {
      if (this.writing) await this.writing;
      else {
        this.cancelTimer();
        this.start(true);
      }
    }
  }

  /** Flushes, then takes no more values. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    this.cancelTimer();
  }

  private schedule(): void {
    if (this.timer !== undefined || this.writing || !this.pending || this.closed) return;
    const delay = Math.max(0, this.lastStartAt + this.options.minIntervalMs - this.clock.now());
    this.timer = this.clock.setTimer(() => {
      this.timer = undefined;
      this.start(false);
    }, delay);
  }

  private cancelTimer(): void {
    if (this.timer === undefined) return;
    this.clock.clearTimer(this.timer);
    this.timer = undefined;
  }

  private start(flushing: boolean): void {
    const next = this.pending;
    if (!next || this.writing) return;
    this.pending = undefined;
    this.lastStartAt = this.clock.now();
    const run = async (): Promise<void> => {
      try {
        await this.options.write(next.value);
        this.options.onWritten?.(next.value);
      } catch (err) {
        const retry = this.options.onFailed?.(next.value, err) !== false;
        // Never lose the last value: retried unless a newer one arrived meanwhile. A flush tries once.
        if (retry && !flushing) this.pending ??= next;
      }
    };
    this.writing = run().finally(() => {
      this.writing = undefined;
      if (!flushing) this.schedule();
    });
  }
}
