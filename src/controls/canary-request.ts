import { z } from 'zod';
import { describeError } from '../core/errors.ts';
import { canaryTag, formatZodIssues, parseCanaryArgs, type CanaryWeights } from '../policy/canary.ts';
import { checkJsonBounds } from '../policy/value-bounds.ts';

/**
 * The bodies of `PUT /v1/canary/<service>` and `DELETE /v1/canary/<service>`, the pure part.
 * Weights go through `parseCanaryArgs`, the very check `cgw canary set web v1=90 v2=10` makes, so
 * the dashboard can never write what the CLI (or the gateway reading it back) would refuse. On top,
 * a weight must be a whole number: the dashboard's fields are whole percentages, and a float here
 * is a client bug rather than an intent.
 *
 * `modifyIndex` is the ModifyIndex of `<prefix>canary/<service>` the client read (GET /v1/canary;
 * 0 when it had none): the write is a check-and-set on it, so a change made since is never
 * overwritten. It may come as the body's `modifyIndex` or as `If-Match: "<index>"`.
 */

/** Bodies are small: a few tags and a number. */
export const MAX_CONTROL_BODY_BYTES = 16 * 1024;

const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

const indexField = z.number().int('modifyIndex must be a whole number').min(0, 'modifyIndex must be >= 0').max(Number.MAX_SAFE_INTEGER);

const putBodySchema = z
  .object({
    weights: z.record(z.string(), z.number().int('weight must be a whole number').min(0, 'weight must be >= 0').max(100, 'weight must be <= 100')),
    modifyIndex: indexField.optional(),
  })
  .strict();

const deleteBodySchema = z.object({ modifyIndex: indexField.optional() }).strict();

export type RequestRefusal = { readonly ok: false; readonly status: 400 | 413 | 428; readonly code: 'bad_request' | 'payload_too_large' | 'index_required'; readonly message: string };

export type CanaryPut = { readonly ok: true; readonly weights: CanaryWeights['weights']; readonly modifyIndex: number } | RequestRefusal;
export type CanaryDelete = { readonly ok: true; readonly modifyIndex: number } | RequestRefusal;

export function parseCanaryPut(text: string, ifMatch: string | undefined): CanaryPut {
  const json = parseJsonBody(text, true);
  if (!json.ok) return json;
  const body = putBodySchema.safeParse(json.value);
  if (!body.success) return bad(`invalid body: ${formatZodIssues(body.error)} (expected {"weights": {"v1": 90, "v2": 10}, "modifyIndex": <index read>})`);
  for (const tag of Object.keys(body.data.weights)) {
    const checked = canaryTag.safeParse(tag);
    if (!checked.success) return bad(`invalid weights: tag ${JSON.stringify(tag.slice(0, 80))}: ${checked.error.issues[0]?.message ?? 'invalid tag'}`);
  }
  const weights = parseCanaryArgs(Object.entries(body.data.weights).map(([tag, w]) => `${tag}=${w}`));
  if (!weights.ok) return bad(`invalid weights: ${weights.error}`);
  const index = expectedIndex(body.data.modifyIndex, ifMatch);
  return index.ok ? { ok: true, weights: weights.value.weights, modifyIndex: index.value } : index;
}

/** A DELETE may carry no body (then If-Match names the index) or `{"modifyIndex": n}`. */
export function parseCanaryDelete(text: string, ifMatch: string | undefined): CanaryDelete {
  let bodyIndex: number | undefined;
  if (text.trim() !== '') {
    const json = parseJsonBody(text, true);
    if (!json.ok) return json;
    const body = deleteBodySchema.safeParse(json.value);
    if (!body.success) return bad(`invalid body: ${formatZodIssues(body.error)} (expected {"modifyIndex": <index read>})`);
    bodyIndex = body.data.modifyIndex;
  }
  const index = expectedIndex(bodyIndex, ifMatch);
  return index.ok ? { ok: true, modifyIndex: index.value } : index;
}

/** JSON of bounded size and depth, with no key that names a prototype (refused, not dropped). */
export function parseJsonBody(text: string, mustBeObject: boolean): { ok: true; value: unknown } | RequestRefusal {
  if (Buffer.byteLength(text) > MAX_CONTROL_BODY_BYTES) return { ok: false, status: 413, code: 'payload_too_large', message: `the body is larger than ${MAX_CONTROL_BODY_BYTES} bytes` };
  const bounds = checkJsonBounds(text, MAX_CONTROL_BODY_BYTES);
  if (!bounds.ok) return bad(`the body is ${bounds.error}`);
  let forbidden: string | undefined;
  let value: unknown;
  try {
    value = JSON.parse(text, (key, v: unknown) => {
      if (FORBIDDEN_KEYS.has(key)) forbidden ??= key;
      return v;
    });
  } catch (err) {
    return bad(`the body is not JSON: ${describeError(err)}`);
  }
  if (forbidden !== undefined) return bad(`the body names "${forbidden}", which is not a tag or field name`);
  if (mustBeObject && (typeof value !== 'object' || value === null || Array.isArray(value))) return bad('the body must be a JSON object');
  return { ok: true, value };
}

/** `"12"`, `12` or `W/"12"` (an ETag-like ModifyIndex); undefined when absent, null when not an index. */
export function ifMatchIndex(header: string | undefined): number | undefined | null {
  if (header === undefined) return undefined;
  const m = /^\s*(?:W\/)?"?(\d{1,16})"?\s*$/.exec(header);
  if (!m) return null;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : null;
}

function expectedIndex(bodyIndex: number | undefined, ifMatch: string | undefined): { ok: true; value: number } | RequestRefusal {
  const header = ifMatchIndex(ifMatch);
  if (header === null) return bad('If-Match must be the ModifyIndex read, e.g. "42"');
  if (header !== undefined && bodyIndex !== undefined && header !== bodyIndex) return bad(`If-Match (${header}) and the body's modifyIndex (${bodyIndex}) differ`);
  const index = bodyIndex ?? header;
  if (index === undefined) {
    return {
      ok: false,
      status: 428,
      code: 'index_required',
      message: 'say which version you change: the ModifyIndex read from GET /v1/canary as "modifyIndex" in the body or If-Match (0 when there were no weights)',
    };
  }
  return { ok: true, value: index };
}

function bad(message: string): RequestRefusal {
  return { ok: false, status: 400, code: 'bad_request', message };
}
