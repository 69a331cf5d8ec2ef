import type { ConsulStore, KvItem, ServiceLookup } from '../../src/cli/consul-kv.ts';

/** A Consul-like store: one global index, ModifyIndex per key, cas semantics, a fixed catalog. */
export class MemoryConsul implements ConsulStore {
  readonly address = 'http://memory:8500';
  readonly items = new Map<string, KvItem>();
  readonly writes: string[] = [];
  index = 100;
  beforeWrite: (() => void) | undefined;
  constructor(readonly services: Record<string, string[][]> = {}) {}

  put(key: string, value: string, flags?: number): void {
    this.items.set(key, { key, value, modifyIndex: ++this.index, ...(flags ? { flags } : {}) });
  }
  async list(prefix: string): Promise<KvItem[]> {
    return [...this.items.values()].filter((i) => i.key.startsWith(prefix));
  }
  async get(key: string): Promise<KvItem | undefined> {
    return this.items.get(key);
  }
  async set(key: string, value: string, cas: number, flags?: number): Promise<boolean> {
    this.beforeWrite?.();
    if ((this.items.get(key)?.modifyIndex ?? 0) !== cas) return false;
    this.put(key, value, flags);
    this.writes.push(key);
    return true;
  }
  async del(key: string, cas: number): Promise<boolean> {
    this.beforeWrite?.();
    if ((this.items.get(key)?.modifyIndex ?? 0) !== cas) return false;
    this.items.delete(key);
    this.writes.push(`-${key}`);
    return true;
  }
  async service(name: string): Promise<ServiceLookup> {
    const instances = this.services[name];
    if (!instances || instances.length === 0) return { found: false, aclsEnabled: false };
    return { found: true, instances: instances.length, tags: [...new Set(instances.flat())].sort() };
  }
}

