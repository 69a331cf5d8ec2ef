import type { Freshness } from './freshness.ts';

/** One stored response: plain data, shared read-only by every answer made from it. */
export interface CacheEntry {
  readonly routeId: string;
  /** The request path (no query), for `cgw cache purge --path`. */
  readonly path: string;
  readonly status: number;
  /** Response fields as [name, value, name, value, ...], lower-case names, nothing hop-by-hop. */
  readonly fields: readonly string[];
  readonly body: Buffer;
  readonly freshness: Freshness;
  /** Request fields that select this entry (the response's Vary and the policy's `vary`), sorted. */
  readonly varyNames: readonly string[];
  /** Their values in the request that filled it (see selectingValues). */
  readonly varyValues: string;
  readonly etag: string | undefined;
  readonly lastModified: string | undefined;
}

/** Bytes an entry is charged: body, fields and a fixed overhead for the objects around them. */
export function entryBytes(fields: readonly string[], body: Buffer, varyValues: string): number {
  let n = body.length + varyValues.length + 256;
  for (const f of fields) n += f.length;
  return n;
}

/** What tells absent from empty in the selecting values: a byte no header value may hold. */
const ABSENT = '\u0000';

/**
 * The values of the selecting fields in a request (RFC 9111 §4.1): repeated fields joined by
 * commas, surrounding whitespace dropped; an absent field differs from an empty one.
 */
export function selectingValues(names: readonly string[], header: (name: string) => string | readonly string[] | undefined): string {
  if (names.length === 0) return '';
  let out = '';
  for (const name of names) {
    const v = header(name);
    out += (v === undefined ? ABSENT : typeof v === 'string' ? v.trim() : v.map((x) => x.trim()).join(',')) + '\u0001';
  }
  return out;
}

/** A field's value in an entry, first occurrence. */
export function fieldOf(fields: readonly string[], name: string): string | undefined {
  for (let i = 0; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}
