import type { ConsulClient } from '../consul/client.ts';
import { kvListSchema } from '../consul/schemas.ts';
import { encodeKey } from '../consul/session.ts';
import type { KvEntry } from '../core/types.ts';
import type { ServiceLookup } from '../state/canary-tags.ts';
import type { ControlStore } from './store.ts';

/** An operator waits for the answer: a Consul call that takes longer than this fails the request. */
const CALL_TIMEOUT_MS = 5_000;

/**
 * `ControlStore` over the gateway's own Consul client (a client of its own, outside the watches'
 * connection budget, so a write never queues behind parked blocking queries). Reads are
 * consistent-mode (never `stale`): a check-and-set must compare against the leader's index.
 * Failures throw; the caller answers 502.
 */
export class ConsulControlStore implements ControlStore {
  constructor(private readonly consul: ConsulClient) {}

  async list(prefix: string): Promise<KvEntry[]> {
    const res = await this.consul.get(`/v1/kv/${encodeKey(prefix)}`, { recurse: '' }, { timeoutMs: CALL_TIMEOUT_MS });
    return kvListSchema.parse(res.status === 404 ? null : res.body);
  }

  async get(key: string): Promise<KvEntry | undefined> {
    const res = await this.consul.get(`/v1/kv/${encodeKey(key)}`, {}, { timeoutMs: CALL_TIMEOUT_MS });
    return kvListSchema.parse(res.status === 404 ? null : res.body).find((e) => e.key === key);
  }

  set(key: string, value: string, cas: number, flags?: number): Promise<boolean> {
    return this.write('PUT', key, { cas: String(cas), ...(flags ? { flags: String(flags) } : {}) }, value);
  }

  del(key: string, cas: number): Promise<boolean> {
    return this.write('DELETE', key, { cas: String(cas) });
  }

  async service(name: string): Promise<ServiceLookup> {
    const res = await this.consul.get(`/v1/catalog/service/${encodeURIComponent(name)}`, {}, { timeoutMs: CALL_TIMEOUT_MS });
    const instances = Array.isArray(res.body) ? (res.body as { ServiceTags?: unknown }[]) : [];
    if (instances.length === 0) return { found: false, aclsEnabled: this.consul.options.token !== undefined };
    const tags = new Set<string>();
    for (const i of instances) for (const t of Array.isArray(i.ServiceTags) ? i.ServiceTags : []) if (typeof t === 'string') tags.add(t);
    return { found: true, instances: instances.length, tags: [...tags].sort() };
  }

  /** `/v1/health/service/<name>` as Consul answered it (validated by `analyzeFleet`). */
  async healthOf(name: string): Promise<unknown> {
    const res = await this.consul.get(`/v1/health/service/${encodeURIComponent(name)}`, {}, { timeoutMs: CALL_TIMEOUT_MS });
    return res.body ?? [];
  }

  /** X-Consul-Index of `/v1/catalog/services`: the index every gateway's catalog watch follows. */
  async catalogIndex(): Promise<number> {
    return (await this.consul.get('/v1/catalog/services', {}, { timeoutMs: CALL_TIMEOUT_MS, rawText: true })).index;
  }

  private async write(method: 'PUT' | 'DELETE', key: string, query: Record<string, string>, body?: string): Promise<boolean> {
    const res = await this.consul.write(method, `/v1/kv/${encodeKey(key)}`, query, body, CALL_TIMEOUT_MS);
    if (res.status !== 200) throw new Error(`Consul answered ${res.status} to a ${method} of ${key}: ${res.text.trim().slice(0, 200)}`);
    const answer = res.text.trim();
    if (answer !== 'true' && answer !== 'false') throw new Error(`Consul answered ${JSON.stringify(answer.slice(0, 60))} to a ${method} of ${key}, not true or false`);
    return answer === 'true';
  }
}
