import { z } from 'zod';
import { durationField } from '../core/duration-field.ts';
import { HTTP_TOKEN } from '../core/http-fields.ts';

/** Request fields a route's cache may never be keyed on: they carry credentials or belong to one hop. */
const UNVARIABLE = new Set(['authorization', 'proxy-authorization', 'connection', 'keep-alive', 'te', 'transfer-encoding', 'upgrade']);

const varyField = z
  .string()
  .max(64, 'vary names are at most 64 characters')
  .regex(HTTP_TOKEN, 'vary names are HTTP header names')
  .transform((h) => h.toLowerCase())
  .refine((h) => !UNVARIABLE.has(h), 'authorization and hop-by-hop fields cannot be cache keys (use cacheAuthorized for per-consumer entries)');

/**
 * A route's response cache (RFC 9111 for a shared cache). Responses are stored only for GET, when
 * both the request and the response allow it; `ttl` is the freshness given to a storable response
 * that states none (no max-age, s-maxage or Expires).
 */
export const cacheSchema = z
  .object({
    /** Freshness when the upstream gives none (RFC 9111 §4.2.2 lets a cache choose one). */
    ttl: durationField(1000, 86_400_000),
    /** Responses whose body and headers exceed this are streamed to the client and not stored. */
    maxEntryBytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024),
    /** Request fields that always select the entry, besides the response's own Vary. */
    vary: z.array(varyField).max(16).default([]),
    /** Responses to authenticated requests are stored per consumer (the key holds the identity); off: never stored. */
    cacheAuthorized: z.boolean().default(false),
    /** Store responses carrying Set-Cookie (every client then gets that cookie): off by default. */
    cacheSetCookie: z.boolean().default(false),
    /** Also keep entries in Redis (`--redis`), shared by every gateway of the fleet. */
    l2: z.boolean().default(false),
    /** How long concurrent misses for one key wait for the first one's response; 0 sends each upstream. */
    coalesceTimeout: durationField(0, 60_000).prefault('5s'),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (new Set(c.vary).size !== c.vary.length) ctx.addIssue({ code: 'custom', path: ['vary'], message: 'a field is listed twice' });
  });

export type CachePolicy = z.output<typeof cacheSchema>;
