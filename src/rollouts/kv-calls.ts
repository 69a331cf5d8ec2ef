import type { KvEntry } from '../core/types.ts';
import type { ConsulClient } from '../consul/client.ts';
import { kvListSchema, kvLockSchema } from '../consul/schemas.ts';
import { encodeKey } from '../consul/session.ts';

const CALL_TIMEOUT_MS = 5_000;

/**
 * The KV calls of the rollout driver and the guards: one attempt each, bounded in time, a failure
 * reported (operation and error) and turned into a result the caller's next round retries. Writes
 * carry the writer's Consul flags, so the configuration history names who made the change.
 */
export class KvCalls {
  constructor(
    private readonly consul: ConsulClient,
    private readonly flags: number,
    private readonly failed: (operation: string, err: unknown) => void,
  ) {}

  /** The entries at `key` (and under it with `recurse`); undefined when Consul could not be read. */
  async list(key: string, recurse: boolean, operation: string): Promise<KvEntry[] | undefined> {
    try {
      const res = await this.consul.get(`/v1/kv/${encodeKey(key)}`, { recurse: recurse ? '' : undefined }, { timeoutMs: CALL_TIMEOUT_MS });
      return kvListSchema.parse(res.status === 404 ? null : res.body);
    } catch (err) {
      this.failed(operation, err);
      return undefined;
    }
  }

  /** The entry at exactly `key`, undefined when absent, 'error' when Consul could not be read. */
  async get(key: string, operation: string): Promise<KvEntry | undefined | 'error'> {
    const entries = await this.list(key, false, operation);
    return entries === undefined ? 'error' : entries.find((e) => e.key === key);
  }

  /** The session holding the lock at `key`, if any. */
  async lockHolder(key: string, operation: string): Promise<{ session: string | undefined } | 'error'> {
    try {
      const res = await this.consul.get(`/v1/kv/${encodeKey(key)}`, {}, { timeoutMs: CALL_TIMEOUT_MS });
      return { session: kvLockSchema.parse(res.status === 404 ? null : res.body).session };
    } catch (err) {
      this.failed(operation, err);
      return 'error';
    }
  }

  /** A write; with `cas`, only over that ModifyIndex (0: only when absent). */
  async put(key: string, value: string, operation: string, cas?: number): Promise<boolean> {
    return this.send('PUT', key, { cas: cas === undefined ? undefined : String(cas), flags: String(this.flags) }, value, operation);
  }

  async remove(key: string, operation: string, options: { cas?: number; recurse?: boolean }): Promise<boolean> {
    return this.send('DELETE', key, { cas: options.cas === undefined ? undefined : String(options.cas), recurse: options.recurse ? '' : undefined }, undefined, operation);
  }

  private async send(method: 'PUT' | 'DELETE', key: string, query: Record<string, string | undefined>, body: string | undefined, operation: string): Promise<boolean> {
    try {
      const res = await this.consul.write(method, `/v1/kv/${encodeKey(key)}`, query, body, CALL_TIMEOUT_MS);
      if (res.status === 200 && res.text.trim() === 'true') return true;
      if (res.status !== 200) this.failed(operation, new Error(`Consul answered ${res.status}: ${res.text.slice(0, 200)}`));
      return false;
    } catch (err) {
      this.failed(operation, err);
      return false;
    }
  }
}
