import type { KvEntry } from '../core/types.ts';
import type { ServiceLookup } from '../state/canary-tags.ts';

/**
 * What the operator's writes need from Consul: KV reads, check-and-set writes and the catalog's
 * tags of a service. Two implementations: the CLI's (the `consul` package, `cli/consul-kv.ts`) and
 * the gateway's (its own Consul client, `consul-store.ts`), so `cgw canary`/`cgw rollout` and the
 * admin API run the same code over either.
 */
export interface ControlKv {
  /** Every key under `prefix` (recursive); [] when there is none. */
  list(prefix: string): Promise<KvEntry[]>;
  get(key: string): Promise<KvEntry | undefined>;
  /** Check-and-set write; false when the key's ModifyIndex is no longer `cas` (0: the key exists). `flags` marks the writer. */
  set(key: string, value: string, cas: number, flags?: number): Promise<boolean>;
  /** Check-and-set delete; false when the key changed since ModifyIndex `cas`. */
  del(key: string, cas: number): Promise<boolean>;
}

export interface ControlStore extends ControlKv {
  service(name: string): Promise<ServiceLookup>;
}

/** Keys under the watched prefix (already normalised: empty or ending in `/`). */
export const controlKeys = {
  canary: (kvPrefix: string, service: string) => `${kvPrefix}canary/${service}`,
  rollout: (kvPrefix: string, service: string) => `${kvPrefix}rollouts/${service}`,
  rollouts: (kvPrefix: string) => `${kvPrefix}rollouts/`,
} as const;
