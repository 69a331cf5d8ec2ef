import { Client, errors as undiciErrors } from 'undici';
import type { Dispatcher } from 'undici';

/**
 * A small Consul HTTP client for watches, over one undici Pool. The `consul` npm package is used
 * for one-off reads and CAS writes (CLI) but not here: its transport has no connection budget and
 * hides `X-Consul-Index` / `X-Consul-LastContact` / `X-Consul-KnownLeader` (docs/consul-notes.md,
 * "The `consul` npm package").
 *
 * `maxConnections` is the connection budget: the agent resets connections beyond
 * `limits.http_max_conns_per_client` (200), and each parked HTTP/1.1 blocking query holds one.
 * Such a refusal is thrown as ConsulRefusedError, distinct from other failures.
 */
export interface ConsulClientOptions {
  readonly address: string;
  readonly token?: string;
  readonly dc?: string;
  readonly consistency?: 'default' | 'stale';
  readonly maxConnections: number;
  readonly tls?: { ca?: string; cert?: string; key?: string; servername?: string };
}

export interface ConsulResponse {
  readonly status: number;
  /** `X-Consul-Index`; 0 when absent. */
  readonly index: number;
  readonly knownLeader: boolean | undefined;
  readonly lastContactMs: number | undefined;
  /** Parsed JSON, or null for a 404 (e.g. a KV prefix with no keys); undefined when `unchanged`. */
  readonly body: unknown;
  /** The answer as received. */
  readonly text: string;
  /** Same text as `GetOptions.unchangedFrom`: not parsed again. */
  readonly unchanged: boolean;
}

export class ConsulHttpError extends Error {
  constructor(
    readonly status: number,
    readonly path: string,
    detail: string,
  ) {
    super(`Consul answered ${status} for ${path}${detail ? `: ${detail.slice(0, 200)}` : ''}`);
    this.name = 'ConsulHttpError';
  }
}

/**
 * The agent refused the request: it accepted the connection and dropped it at once because this
 * client IP already has `limits.http_max_conns_per_client` connections open (1.8: a reset or a close
 * before any response byte; newer agents: 429). Orphaned blocking queries of a killed gateway count
 * until they return, so this can last up to `wait` after a restart (docs/consul-notes.md, "Limits").
 */
export class ConsulRefusedError extends Error {
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`${REFUSED_TEXT}: ${describeCause(cause)}`, { cause });
    this.name = 'ConsulRefusedError';
  }
}

export const REFUSED_TEXT = 'Consul refused the connection (per-client connection limit, http_max_conns_per_client?)';

/**
 * A refused connection fails within milliseconds of being opened; a reset after this long is a
 * request that had a chance to block (an agent restart, a proxy cutting an idle socket), not a refusal.
 */
export const REFUSAL_WINDOW_MS = 3_000;

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET']);

/**
 * Whether a failed request was refused by the agent's per-client connection limit rather than
 * failing for another reason: HTTP 429, or a reset / close (`other side closed`) before any
 * response byte arrived on that socket, on a request that failed within REFUSAL_WINDOW_MS.
 * ECONNREFUSED (agent down), timeouts and aborts are not refusals.
 */
export function isRefusal(err: unknown, elapsedMs: number): boolean {
  if (err instanceof ConsulHttpError) return err.status === 429;
  if (elapsedMs > REFUSAL_WINDOW_MS) return false;
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 3; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code !== 'string' || !RESET_CODES.has(code)) continue;
    // undici reports the socket's counters with `other side closed`: a socket that already
    // delivered bytes was a kept-alive connection the agent accepted earlier, not a refusal.
    const bytesRead = (e as { socket?: { bytesRead?: unknown } }).socket?.bytesRead;
    return !(typeof bytesRead === 'number' && bytesRead > 0);
  }
  return false;
}

function describeCause(cause: unknown): string {
  if (cause instanceof ConsulHttpError) return `HTTP ${cause.status}`;
  if (!(cause instanceof Error)) return String(cause);
  const code = (cause as { code?: unknown }).code;
  return typeof code === 'string' && !cause.message.includes(code) ? `${code} ${cause.message}` : cause.message;
}

export interface GetOptions {
  readonly signal?: AbortSignal;
  /** Maximum time to wait for response headers; must exceed `wait` plus Consul's jitter. */
  readonly timeoutMs: number;
  /**
   * The text of the previous answer: an answer with the same text is not parsed again (`body` is
   * then undefined and `unchanged` true). Blocking queries wake on any index bump; at thousands of
   * services re-parsing an unchanged catalog on every registration would cost more than the rest
   * of the change.
   */
  readonly unchangedFrom?: string;
  /** Leave the text unparsed (`body` undefined): the caller reads it itself. */
  readonly rawText?: boolean;
}

/**
 * At most `max` connections, one request each at a time, and a request always goes to a connection
 * already open when one is free. undici's Pool picks the first client in its list that is not busy,
 * even one whose connection the agent just refused; at the agent's limit that turns a watch's next
 * read into another refusal while its own idle connection, still counted by the agent, goes unused.
 * A connection is handed back when its response has been read whole, so a watch's next blocking
 * read reuses it instead of opening a second one.
 */
class Connections {
  /** Open and free, most recently used last. */
  private readonly idle: Client[] = [];
  private readonly busy = new Set<Client>();
  private readonly connected = new Set<Client>();
  private readonly waiting: Array<{ resolve: (c: Client) => void; reject: (err: unknown) => void }> = [];
  private closed = false;

  constructor(
    private readonly origin: string,
    private readonly max: number,
    private readonly clientOptions: Client.Options,
  ) {}

  get open(): number {
    return this.connected.size;
  }

  acquire(signal?: AbortSignal): Promise<Client> {
    if (this.closed) return Promise.reject(new undiciErrors.ClientDestroyedError());
    signal?.throwIfAborted();
    const free = this.idle.pop() ?? (this.busy.size < this.max ? this.create() : undefined);
    if (free) {
      this.busy.add(free);
      return Promise.resolve(free);
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: (c: Client) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(c);
        },
        reject,
      };
      const onAbort = (): void => {
        const i = this.waiting.indexOf(waiter);
        if (i !== -1) this.waiting.splice(i, 1);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  release(client: Client): void {
    this.busy.delete(client);
    if (this.closed) return;
    if (!this.connected.has(client)) {
      // Refused, reset or closed: a new client connects afresh when one is needed.
      void client.destroy().catch(() => undefined);
      const waiter = this.waiting.shift();
      if (waiter) {
        const fresh = this.create();
        this.busy.add(fresh);
        waiter.resolve(fresh);
      }
      return;
    }
    const waiter = this.waiting.shift();
    if (waiter) {
      this.busy.add(client);
      waiter.resolve(client);
    } else {
      this.idle.push(client);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.waiting.splice(0)) w.reject(new undiciErrors.ClientDestroyedError());
    const all = [...this.idle, ...this.busy];
    this.idle.length = 0;
    this.busy.clear();
    await Promise.allSettled(all.map((c) => c.destroy()));
  }

  private create(): Client {
    const client = new Client(this.origin, this.clientOptions);
    client.on('connect', () => this.connected.add(client));
    client.on('disconnect', () => {
      this.connected.delete(client);
      const i = this.idle.indexOf(client);
      if (i !== -1) {
        // Closed while free (keep-alive timeout, agent restart): drop it.
        this.idle.splice(i, 1);
        void client.destroy().catch(() => undefined);
      }
    });
    return client;
  }
}

export class ConsulClient {
  private readonly connections: Connections;
  private readonly headers: Record<string, string>;
  private readonly baseQuery: Record<string, string>;

  constructor(readonly options: ConsulClientOptions) {
    const url = new URL(options.address);
    this.connections = new Connections(url.origin, options.maxConnections, {
      pipelining: 1,
      keepAliveTimeout: 30_000,
      connect: options.tls ? { ...options.tls, rejectUnauthorized: true } : undefined,
    });
    this.headers = { accept: 'application/json' };
    if (options.token) this.headers['x-consul-token'] = options.token;
    this.baseQuery = {};
    if (options.dc) this.baseQuery.dc = options.dc;
    if (options.consistency === 'stale') this.baseQuery.stale = '';
  }

  async get(path: string, query: Record<string, string | undefined>, opts: GetOptions): Promise<ConsulResponse> {
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...this.baseQuery, ...query })) if (v !== undefined) search.set(k, v);
    const qs = search.toString().replace(/=(&|$)/g, '$1');
    const fullPath = qs ? `${path}?${qs}` : path;
    const connection = await this.connections.acquire(opts.signal);
    try {
      return await this.send(connection, path, fullPath, opts);
    } finally {
      this.connections.release(connection);
    }
  }

  /**
   * A write (sessions, locks, figures, registrations): one attempt, bounded by `timeoutMs`, never
   * retried here (the callers' loops decide, since a write may have landed). The status and text
   * are the caller's to judge; only transport failures throw.
   */
  async write(method: 'PUT' | 'DELETE', path: string, query: Record<string, string | undefined>, body: string | undefined, timeoutMs: number): Promise<{ status: number; text: string }> {
    const search = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...(this.options.dc ? { dc: this.options.dc } : {}), ...query })) if (v !== undefined) search.set(k, v);
    const qs = search.toString();
    const connection = await this.connections.acquire(AbortSignal.timeout(timeoutMs));
    try {
      const res = await connection.request({
        method,
        path: qs ? `${path}?${qs}` : path,
        headers: body === undefined ? this.headers : { ...this.headers, 'content-type': 'application/json' },
        body,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: AbortSignal.timeout(timeoutMs),
      });
      return { status: res.statusCode, text: await res.body.text() };
    } finally {
      this.connections.release(connection);
    }
  }

  private async send(connection: Client, path: string, fullPath: string, opts: GetOptions): Promise<ConsulResponse> {
    let res: Dispatcher.ResponseData;
    const startedAt = Date.now();
    try {
      res = await connection.request({
        method: 'GET',
        path: fullPath,
        headers: this.headers,
        signal: opts.signal,
        headersTimeout: opts.timeoutMs,
        bodyTimeout: opts.timeoutMs,
      });
    } catch (err) {
      if (err instanceof undiciErrors.HeadersTimeoutError) {
        throw new Error(`Consul did not answer ${path} within ${opts.timeoutMs}ms`, { cause: err });
      }
      if (!opts.signal?.aborted && isRefusal(err, Date.now() - startedAt)) throw new ConsulRefusedError(path, err);
      throw err;
    }
    const text = await res.body.text();
    const index = Number(header(res.headers, 'x-consul-index') ?? 0);
    const leader = header(res.headers, 'x-consul-knownleader');
    const lastContact = header(res.headers, 'x-consul-lastcontact');
    if (res.statusCode === 429) throw new ConsulRefusedError(path, new ConsulHttpError(429, path, text.trim()));
    if (res.statusCode !== 200 && res.statusCode !== 404) throw new ConsulHttpError(res.statusCode, path, text.trim());
    if (res.statusCode === 404 && !header(res.headers, 'x-consul-index')) throw new ConsulHttpError(404, path, text.trim());
    const unchanged = opts.unchangedFrom !== undefined && text === opts.unchangedFrom;
    let body: unknown = unchanged || opts.rawText ? undefined : null;
    if (res.statusCode === 200 && !unchanged && !opts.rawText) {
      try {
        body = JSON.parse(text);
      } catch {
        throw new ConsulHttpError(res.statusCode, path, 'response is not JSON');
      }
    }
    return {
      status: res.statusCode,
      index: Number.isFinite(index) ? index : 0,
      knownLeader: leader === undefined ? undefined : leader === 'true',
      lastContactMs: lastContact === undefined ? undefined : Number(lastContact),
      body,
      text,
      unchanged,
    };
  }

  /**
   * One agent write (`PUT`, e.g. `/v1/agent/service/register`): resolves on 200, throws
   * ConsulHttpError otherwise (403 for an ACL denial, 400 for a definition the agent refuses).
   */
  async put(path: string, body: unknown, opts: { readonly timeoutMs: number; readonly signal?: AbortSignal }): Promise<void> {
    // Agent endpoints act on the local agent: no `dc`, no `stale`.
    const connection = await this.connections.acquire(opts.signal);
    try {
      const res = await connection.request({
        method: 'PUT',
        path,
        headers: { ...this.headers, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: opts.signal,
        headersTimeout: opts.timeoutMs,
        bodyTimeout: opts.timeoutMs,
      });
      const text = await res.body.text();
      if (res.statusCode !== 200) throw new ConsulHttpError(res.statusCode, path, text.trim());
    } finally {
      this.connections.release(connection);
    }
  }

  /**
   * Whether the address is a Consul agent: `/v1/status/leader` answers 200 with the leader's
   * address as a JSON string (needs no ACL). A server that answers something else is not one, and
   * the gateway refuses to start against it; one that does not answer yet may be a Consul agent
   * still starting, so the watches keep trying.
   */
  async identify(timeoutMs: number): Promise<{ kind: 'consul' } | { kind: 'unreachable'; error: string } | { kind: 'not-consul'; error: string }> {
    try {
      const res = await this.get('/v1/status/leader', {}, { timeoutMs, signal: AbortSignal.timeout(timeoutMs) });
      return typeof res.body === 'string' ? { kind: 'consul' } : { kind: 'not-consul', error: `GET /v1/status/leader answered ${JSON.stringify(res.body)?.slice(0, 60) ?? 'nothing'}, not the leader's address` };
    } catch (err) {
      if (err instanceof ConsulHttpError && err.status !== 403 && err.status < 500) return { kind: 'not-consul', error: err.message };
      return { kind: 'unreachable', error: describeCause(err) };
    }
  }

  /** Connections currently open to Consul (for the admin view and tests of the budget). */
  get openConnections(): number {
    return this.connections.open;
  }

  close(): Promise<void> {
    return this.connections.close();
  }
}

function header(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}
