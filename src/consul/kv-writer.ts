import { Client } from 'undici';
import { z } from 'zod';
import type { ConsulClientOptions } from './client.ts';

/**
 * The gateway's own KV reads and check-and-set writes under the runtime prefix (the configuration
 * history). One undici connection of its own, outside the watches' budget: a write must never
 * wait behind a parked blocking query, and a slow write must never delay a watch. The `consul`
 * package is not used: the gateway loads it nowhere else, and these are four plain requests.
 * Every answer is checked: an entry list must be JSON strings, a write must answer true or false.
 */

export interface StoredValue {
  readonly value: string | null;
  readonly modifyIndex: number;
}

/** Longest time a single request may take; history writes are off the request path and retried. */
const REQUEST_TIMEOUT_MS = 10_000;
/** Largest answer read: a key list or entry beyond it is refused, never buffered whole. */
const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

const keyListSchema = z.array(z.string()).nullable();
const entrySchema = z.array(z.object({ Value: z.string().nullable(), ModifyIndex: z.number().int() }).loose()).min(1);

export class ConsulKvWriter {
  private readonly client: Client;
  private readonly headers: Record<string, string>;
  private readonly dc: string | undefined;

  constructor(options: Pick<ConsulClientOptions, 'address' | 'token' | 'dc' | 'tls'>) {
    const url = new URL(options.address);
    this.client = new Client(url.origin, {
      pipelining: 1,
      keepAliveTimeout: 10_000,
      headersTimeout: REQUEST_TIMEOUT_MS,
      bodyTimeout: REQUEST_TIMEOUT_MS,
      connect: options.tls ? { ...options.tls, rejectUnauthorized: true } : undefined,
    });
    this.headers = { accept: 'application/json', ...(options.token ? { 'x-consul-token': options.token } : {}) };
    this.dc = options.dc;
  }

  /** Every key under `prefix` (names only: `?keys`). */
  async keys(prefix: string): Promise<string[]> {
    const { status, text } = await this.send('GET', prefix, { keys: '' });
    if (status === 404) return [];
    if (status !== 200) throw failure('list', prefix, status, text);
    return keyListSchema.parse(parseJson(text, prefix)) ?? [];
  }

  async get(key: string): Promise<StoredValue | undefined> {
    const { status, text } = await this.send('GET', key, {});
    if (status === 404) return undefined;
    if (status !== 200) throw failure('read', key, status, text);
    const [entry] = entrySchema.parse(parseJson(text, key));
    return { value: entry?.Value == null ? null : Buffer.from(entry.Value, 'base64').toString('utf8'), modifyIndex: entry?.ModifyIndex ?? 0 };
  }

  /** Check-and-set write (`cas` 0: only if the key does not exist); false when another writer came first. */
  async set(key: string, value: string, cas: number): Promise<boolean> {
    return this.write('PUT', key, cas, value);
  }

  /** Check-and-set delete; false when the key changed since `cas`. */
  async del(key: string, cas: number): Promise<boolean> {
    return this.write('DELETE', key, cas);
  }

  /** Ends the connection at once, a request in flight included (the recorder retries nothing after close). */
  close(): Promise<void> {
    return this.client.destroy().catch(() => undefined);
  }

  private async write(method: 'PUT' | 'DELETE', key: string, cas: number, body?: string): Promise<boolean> {
    const { status, text } = await this.send(method, key, { cas: String(cas) }, body);
    if (status !== 200) throw failure(method === 'PUT' ? 'write' : 'delete', key, status, text);
    const answer = text.trim();
    if (answer !== 'true' && answer !== 'false') throw new Error(`Consul answered ${JSON.stringify(answer.slice(0, 60))} to a ${method} of ${key}, not true or false`);
    return answer === 'true';
  }

  private async send(method: 'GET' | 'PUT' | 'DELETE', key: string, query: Record<string, string>, body?: string): Promise<{ status: number; text: string }> {
    const search = new URLSearchParams({ ...query, ...(this.dc ? { dc: this.dc } : {}) }).toString().replace(/=(&|$)/g, '$1');
    const path = `/v1/kv/${key.split('/').map(encodeURIComponent).join('/')}${search ? `?${search}` : ''}`;
    const res = await this.client.request({ method, path, headers: this.headers, body, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length;
      if (size > MAX_ANSWER_BYTES) {
        res.body.destroy();
        throw new Error(`Consul's answer for ${key} is larger than ${MAX_ANSWER_BYTES} bytes; refused`);
      }
      chunks.push(chunk as Buffer);
    }
    return { status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') };
  }
}

function parseJson(text: string, key: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`Consul's answer for ${key} is not JSON`);
  }
}

function failure(what: string, key: string, status: number, text: string): Error {
  return new Error(`Consul answered ${status} when asked to ${what} ${key}${text.trim() ? `: ${text.trim().slice(0, 200)}` : ''}`);
}
