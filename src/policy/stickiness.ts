import { z } from 'zod';
import { durationField } from '../core/duration-field.ts';
import { HOP_BY_HOP_FIELDS, HTTP_TOKEN } from '../core/http-fields.ts';

/**
 * The `stickiness` section of a service policy: keep a client on the canary subset it first got
 * while the weights move. The client carries its subset (a cookie or a header it sends back), so
 * every gateway of the fleet honours it without any state of its own.
 */


/**
 * Names that would mean something else to the gateway, the upstream or the client: hop-by-hop
 * fields (RFC 9110 §7.6.1), fields that frame or route the message, the gateway's own fields, and
 * the request fields the gateway reads for other purposes (a client must not be told to send back
 * its `cookie` or `authorization` through us).
 */
const RESERVED_HEADERS = new Set([
  ...HOP_BY_HOP_FIELDS,
  'host',
  'content-length',
  'content-type',
  'content-encoding',
  'content-range',
  'expect',
  'cookie',
  'set-cookie',
  'authorization',
  'www-authenticate',
  'location',
  'date',
  'server',
  'via',
  'vary',
  'age',
  'cache-control',
  'retry-after',
  'strict-transport-security',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-real-ip',
  'x-request-id',
  'x-canary',
  'grpc-status',
  'grpc-message',
  'grpc-timeout',
]);

/** Not reserved by HTTP, but names a careless reader of a plain object would resolve on its prototype. */
const PROTOTYPE_NAMES = new Set(['__proto__', 'constructor', 'prototype']);

const cookieName = z
  .string()
  .max(64, 'cookie names are at most 64 characters')
  .regex(HTTP_TOKEN, 'a cookie name is a token (RFC 6265 §4.1.1: letters, digits and !#$%&\'*+.^_`|~-)')
  .refine((n) => !PROTOTYPE_NAMES.has(n), 'this name is reserved');

const headerName = z
  .string()
  .max(64, 'header names are at most 64 characters')
  .regex(HTTP_TOKEN, 'a header name is a token (RFC 9110 §5.6.2: letters, digits and !#$%&\'*+.^_`|~-)')
  .transform((h) => h.toLowerCase())
  .superRefine((h, ctx) => {
    if (RESERVED_HEADERS.has(h) || h.startsWith('x-cgw-') || PROTOTYPE_NAMES.has(h)) {
      ctx.addIssue({ code: 'custom', message: `header "${h}" is reserved (hop-by-hop, framing, routing, credentials or one the gateway sets itself); choose a name of your own such as x-subset` });
    }
  });

export const DEFAULT_STICKY_TTL_MS = 86_400_000;
const MIN_TTL_MS = 1000;
const MAX_TTL_MS = 30 * 86_400_000;

export const stickinessSchema = z
  .object({
    /** Browsers: the subset in a cookie the gateway sets. */
    cookie: cookieName.optional(),
    /** How long the cookie lives (its Max-Age); only with `cookie`. */
    ttl: durationField(MIN_TTL_MS, MAX_TTL_MS).optional(),
    /** Other clients: the gateway names the subset in this response header, the client sends it back. */
    header: headerName.optional(),
  })
  .strict()
  .superRefine((s, ctx) => {
    if ((s.cookie === undefined) === (s.header === undefined)) ctx.addIssue({ code: 'custom', message: 'set exactly one of cookie, header' });
    if (s.header !== undefined && s.ttl !== undefined) ctx.addIssue({ code: 'custom', path: ['ttl'], message: 'ttl is the cookie\'s lifetime; a header has none (the client decides how long it sends it back)' });
  })
  .transform((s): StickinessPolicy => (s.cookie !== undefined ? { cookie: s.cookie, ttl: s.ttl ?? DEFAULT_STICKY_TTL_MS } : { header: s.header as string }));

export type StickinessPolicy = { readonly cookie: string; readonly ttl: number } | { readonly header: string };
