import type { IncomingMessage, ServerResponse } from 'node:http';

/**
 * The admin API's event stream (`GET /v1/events`, server-sent events, WHATWG HTML §9.2): a
 * `snapshot` event when a new snapshot is published, with its version, and a `tick` every few
 * seconds so pages refresh data-plane figures (requests in flight, ejections, breakers) that move
 * without a new snapshot. Bounded: at most `maxClients` streams (further ones get 503), and a
 * client that does not read (its unsent bytes pass `MAX_BUFFERED_BYTES`) is dropped rather than
 * buffered for.
 *
 * Hand-written: an event stream is a header and `event:`/`data:` lines, and a library would add
 * a dependency for twenty lines.
 */

/** What a reconnecting EventSource waits (the `retry:` field). */
const RETRY_MS = 3_000;
const MAX_BUFFERED_BYTES = 256 * 1024;

export interface AdminEventsOptions {
  readonly maxClients: number;
  readonly tickMs: number;
  /** The snapshot version in force now, sent on connect and with each tick. */
  readonly version: () => string | null;
  readonly onClients?: (count: number) => void;
  readonly onRefused?: () => void;
}

export class AdminEvents {
  private readonly clients = new Set<ServerResponse>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: AdminEventsOptions) {}

  get count(): number {
    return this.clients.size;
  }

  /** Takes over the response as a stream; false (nothing written) when full or closed. */
  attach(req: IncomingMessage, res: ServerResponse): boolean {
    if (this.closed || this.clients.size >= this.options.maxClients) {
      this.options.onRefused?.();
      return false;
    }
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      // Proxies in front (nginx) would otherwise hold events back in a buffer.
      'x-accel-buffering': 'no',
    });
    // The request is complete; the stream lives as long as the client keeps it.
    req.socket.setTimeout(0);
    this.clients.add(res);
    this.options.onClients?.(this.clients.size);
    const drop = (): void => {
      if (this.clients.delete(res)) this.options.onClients?.(this.clients.size);
    };
    res.on('close', drop);
    res.on('error', drop);
    res.write(`retry: ${RETRY_MS}\n`);
    this.send(res, 'hello', { version: this.options.version(), at: new Date().toISOString() });
    this.timer ??= setInterval(() => this.tick(), this.options.tickMs).unref();
    return true;
  }

  /** A new snapshot is in force. */
  snapshot(version: string): void {
    this.broadcast('snapshot', { version, at: new Date().toISOString() });
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    this.timer = undefined;
    for (const res of this.clients) res.end();
    this.clients.clear();
    this.options.onClients?.(0);
  }

  private tick(): void {
    if (this.clients.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    this.broadcast('tick', { version: this.options.version(), at: new Date().toISOString() });
  }

  private broadcast(event: string, data: unknown): void {
    for (const res of this.clients) this.send(res, event, data);
  }

  private send(res: ServerResponse, event: string, data: unknown): void {
    if (res.writableLength > MAX_BUFFERED_BYTES) {
      res.destroy();
      return;
    }
    // JSON has no raw newline, so one data line carries it whole.
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }
}
