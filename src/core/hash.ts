import { createHash } from 'node:crypto';
import { setOwn } from './own.ts';

/** JSON with object keys sorted, so equal data always serialises to equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      const sorted: Record<string, unknown> = {};
      // setOwn: a `__proto__` key (a Consul service may be named so) must be hashed, not made a prototype.
      for (const k of Object.keys(v).sort()) setOwn(sorted, k, (v as Record<string, unknown>)[k]);
      return sorted;
    }
    return v;
  });
}

/** Content hash used as snapshot version and for "same content → skip" comparisons. */
export function contentHash(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value)).digest('hex').slice(0, 16);
}
