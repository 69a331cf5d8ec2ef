/**
 * A task the control plane runs on a timer, never on the request path. A round still running when
 * the next is due is not started again (a slow Consul must not pile rounds up); a round that
 * throws is reported and the next one retries.
 */
export class Rounds {
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private stopped = false;

  constructor(
    private readonly intervalMs: number,
    private readonly round: () => Promise<void>,
    private readonly failed: (err: unknown) => void,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.run(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** One round now (tests and the timer). */
  async run(): Promise<void> {
    if (this.running || this.stopped) return;
    this.running = true;
    try {
      await this.round();
    } catch (err) {
      this.failed(err);
    } finally {
      this.running = false;
    }
  }
}
