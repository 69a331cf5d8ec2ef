import { Pool, errors as undiciErrors } from 'undici';
import type { Dispatcher } from 'undici';

/**
 * A small Consul HTTP client for watches, over one undici Pool. The `consul` npm package is used
 * for one-off reads and CAS writes (CLI) but not here: its transport has no connection budget and
 * hides `X-Consul-Index` / `X-Consul-LastContact` / `X-Consul-KnownLeader` (docs/consul-notes.md,
 * "The `consul` npm package").
 *
 * The pool's `connections` is the connection budget: the agent resets connections beyond
 * `limits.http_max_conns_per_client` (200), and each parked HTTP/1.1 blocking query holds one.
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
  /** Parsed JSON, or null for a 404 (e.g. a KV prefix with no keys). */
  readonly body: unknown;
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

export interface GetOptions {
  readonly signal?: AbortSignal;
  /** Maximum time to wait for response headers; must exceed `wait` plus Consul's jitter. */
  readonly timeoutMs: number;
}

export class ConsulClient {
  private readonly pool: Pool;
  private readonly headers: Record<string, string>;
  private readonly baseQuery: Record<string, string>;

  constructor(readonly options: ConsulClientOptions) {
    const url = new URL(options.address);
    this.pool = new Pool(url.origin, {
      connections: options.maxConnections,
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
    let res: Dispatcher.ResponseData;
    try {
      res = await this.pool.request({
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
      throw err;
    }
    const text = await res.body.text();
    const index = Number(header(res.headers, 'x-consul-index') ?? 0);
    const leader = header(res.headers, 'x-consul-knownleader');
    const lastContact = header(res.headers, 'x-consul-lastcontact');
    if (res.statusCode !== 200 && res.statusCode !== 404) throw new ConsulHttpError(res.statusCode, path, text.trim());
    if (res.statusCode === 404 && !header(res.headers, 'x-consul-index')) throw new ConsulHttpError(404, path, text.trim());
    let body: unknown = null;
    if (res.statusCode === 200) {
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
    };
  }

  /** Connections currently open to Consul (for the admin view and tests of the budget). */
  get openConnections(): number {
    return this.pool.stats.connected;
  }

  close(): Promise<void> {
    return this.pool.destroy();
  }
}

function header(headers: Dispatcher.ResponseData['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}
