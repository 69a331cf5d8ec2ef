import type { z } from 'zod';
import { formatZodIssues, type ParseResult } from './canary.ts';
import { checkJsonBounds } from './value-bounds.ts';

/**
 * A JSON value from outside (a KV value another tool or gateway wrote), checked in the one order
 * every reader keeps: empty, then size and depth before any parser runs, then JSON, then the
 * schema. `notJson` says who writes such values, for the error a person reads.
 */
export function parseJsonValue<S extends z.ZodType>(text: string | null, schema: S, maxBytes: number, notJson = 'not JSON'): ParseResult<z.output<S>> {
  if (text === null || text.trim() === '') return { ok: false, error: 'value is empty' };
  const bounds = checkJsonBounds(text, maxBytes);
  if (!bounds.ok) return { ok: false, error: `value is ${bounds.error}; refused before parsing` };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, error: notJson };
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, error: formatZodIssues(parsed.error) };
}
