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

/**
 * Why a Consul service of this name can never be routed, or null. `__proto__` cannot be a key of
 * the plain objects snapshots are made of; `.` and `..` cannot be a path segment of Consul's HTTP
 * API (`/v1/health/service/..` is answered with a redirect, `/.` with 400), so their health can
 * never be read. Consul registers all three without complaint.
 */
export function unroutableServiceName(name: string): string | null {
  if (isPrototypeName(name)) return 'it is reserved in JavaScript objects';
  if (name === '.' || name === '..') return "Consul's HTTP API cannot address it, so its health can never be read";
  return null;
}
