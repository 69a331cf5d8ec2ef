/**
 * A record's own value for `key`, never an inherited one: names from outside (Consul service
 * names, admin paths, KV keys) can be `constructor`, `toString` or `__proto__`.
 */
export function own<V>(record: Readonly<Record<string, V>>, key: string): V | undefined {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

/** Names that cannot be keys of plain objects without changing their prototype. */
export function isPrototypeName(name: string): boolean {
  return name === '__proto__';
}

/**
 * Sets `record[key]` as an own property, also for `__proto__`, which a plain assignment would take
 * as a new prototype (dropping the entry and changing what every other key inherits).
 */
export function setOwn<V>(record: Record<string, V>, key: string, value: V): void {
  if (isPrototypeName(key)) Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
  else record[key] = value;
}
