import type { IncomingHttpHeaders } from 'node:http';
import { HOP_BY_HOP_FIELDS } from '../core/http-fields.ts';

const HOP_BY_HOP = HOP_BY_HOP_FIELDS;

/**
 * Fields a client may not remove by naming them in `Connection`: the Host routing used (RFC 9110
 * §7.2: the upstream must see the same authority) and the framing of the body being forwarded.
 */
const NOT_HOP_BY_HOP = new Set(['host', 'content-length']);

/** What nearly every `Connection` header says: nothing to remove besides the hop-by-hop set. */
const PLAIN_CONNECTION = /^\s*(?:keep-alive|close)\s*$/i;

function connectionTokens(value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined || (typeof value === 'string' && PLAIN_CONNECTION.test(value))) return undefined;
  const text = Array.isArray(value) ? value.join(',') : value;
  const tokens = text
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '' && t !== 'close' && t !== 'keep-alive' && !NOT_HOP_BY_HOP.has(t));
  return tokens.length > 0 ? new Set(tokens) : undefined;
}

/**
 * Headers the gateway sets to tell the upstream who called. Every incoming header with this
 * prefix is dropped first, on every route, so a client can never forge an identity.
 */
export const IDENTITY_PREFIX = 'x-cgw-';

/**
 * Node's server has already answered `Expect: 100-continue`; undici refuses to send the header at
 * all, and that local refusal must not read as a failing upstream.
 */
const EXPECT = 'expect';

/**
 * Also `x_cgw_subject` and other spellings with underscores: CGI-style frameworks (Rack, PHP,
 * WSGI) map `-` and `_` alike to `HTTP_X_CGW_SUBJECT`, so either spelling would forge the header.
 */
function isIdentityHeader(name: string): boolean {
  return name.length > 6 && (name.charCodeAt(0) | 0x20) === 0x78 && name.slice(0, 6).replace(/_/g, '-') === IDENTITY_PREFIX;
}

/**
 * Headers the gateway sets itself. Their underscore spellings (`x_real_ip`, `X_Forwarded_For`) read
 * the same to CGI-style frameworks, so a client could pass its own value beside ours: dropped.
 */
const SET_HERE = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-real-ip', 'x-request-id']);

function isUnderscoreSpellingOfOurs(name: string): boolean {
  return name.includes('_') && SET_HERE.has(name.replace(/_/g, '-'));
}

export interface ForwardedIdentity {
  readonly method: string;
  readonly subject: string;
  readonly consumer: string | null;
  readonly scopes: readonly string[];
  readonly plan: string | null;
}

export interface ForwardContext {
  readonly requestId: string;
  readonly clientIp: string;
  readonly proto: 'http' | 'https';
  /** W3C trace context sent upstream (the client's, or a new trace). */
  readonly trace?: { readonly traceparent: string; readonly tracestate: string | undefined };
  readonly identity?: ForwardedIdentity | null;
  /** Credential headers the upstream must not see (lower case). */
  readonly drop?: readonly string[];
}

/** Request headers for the upstream: hop-by-hop removed, X-Forwarded-* and X-Request-Id set. */
export function upstreamRequestHeaders(incoming: IncomingHttpHeaders, ctx: ForwardContext): Record<string, string | string[]> {
  const extra = connectionTokens(incoming.connection);
  const out: Record<string, string | string[]> = {};
  for (const name in incoming) {
    const value = incoming[name];
    // `:method`, `:authority`...: an HTTP/2 client's pseudo-headers are the request line, not fields.
    if (value === undefined || name.charCodeAt(0) === 58 /* ":" */ || HOP_BY_HOP.has(name) || extra?.has(name) || isIdentityHeader(name) || name === EXPECT || isUnderscoreSpellingOfOurs(name)) continue;
    out[name] = value;
  }
  if (ctx.drop) for (const name of ctx.drop) delete out[name];
  const id = ctx.identity;
  if (id) {
    out['x-cgw-auth-method'] = id.method;
    out['x-cgw-subject'] = headerSafe(id.subject);
    if (id.consumer !== null) out['x-cgw-consumer'] = id.consumer;
    if (id.scopes.length > 0) out['x-cgw-scopes'] = id.scopes.map(scopeSafe).join(' ');
    if (id.plan !== null) out['x-cgw-plan'] = headerSafe(id.plan);
  }
  // The client's chain is kept and our hop appended (X-Forwarded-For and RFC 7239 Forwarded
  // alike); X-Real-IP names one address, so a client's value is replaced, never passed on. The
  // chains are read from what is forwarded: one the client named in Connection is not.
  const prior = out['x-forwarded-for'];
  out['x-forwarded-for'] = prior ? `${Array.isArray(prior) ? prior.join(', ') : prior}, ${ctx.clientIp}` : ctx.clientIp;
  out['x-forwarded-proto'] = ctx.proto;
  // Ours alone, like X-Real-IP: without a Host (HTTP/1.0, or an empty one) a client's value must
  // not pass as the host the gateway was asked for.
  if (incoming.host) out['x-forwarded-host'] = incoming.host;
  else delete out['x-forwarded-host'];
  out['x-real-ip'] = ctx.clientIp;
  const forwarded = forwardedElement(ctx.clientIp, incoming.host, ctx.proto);
  const priorForwarded = out.forwarded;
  out.forwarded = priorForwarded ? `${Array.isArray(priorForwarded) ? priorForwarded.join(', ') : priorForwarded}, ${forwarded}` : forwarded;
  out['x-request-id'] = ctx.requestId;
  if (ctx.trace) {
    out.traceparent = ctx.trace.traceparent;
    if (ctx.trace.tracestate !== undefined) out.tracestate = ctx.trace.tracestate;
    else delete out.tracestate;
  }
  return out;
}

/** RFC 7239 §4: one `for=...;host=...;proto=...` element; IPv6 nodes and odd hosts are quoted. */
function forwardedElement(clientIp: string, host: string | undefined, proto: string): string {
  const node = clientIp.includes(':') ? `"[${clientIp}]"` : clientIp || 'unknown';
  const hostPart = host && /^[A-Za-z0-9.\-:[\]]+$/.test(host) ? (/^[A-Za-z0-9.\-]+$/.test(host) ? `;host=${host}` : `;host="${host}"`) : '';
  return `for=${node}${hostPart};proto=${proto}`;
}

/** Lengths of the hop-by-hop names: most response headers are kept after one length check. */
const HOP_LENGTHS = new Set([...HOP_BY_HOP].map((h) => h.length));

/**
 * The client's response head from undici's raw header list: hop-by-hop fields and those the
 * upstream's Connection names are dropped, and the gateway's own fields (`x-request-id`, rate
 * limit headers, `connection: close` while draining) take the place of any upstream field of the
 * same name. A flat name/value list, as Node's `writeHead` takes it, so repeated fields
 * (`set-cookie`) stay separate and no header object is built.
 */
export function responseHeaderList(raw: readonly Buffer[], requestId: string, own: readonly string[] | null, close: boolean): string[] {
  let named: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as Buffer;
    if (name.length === 10 && (name[0] === 0x63 || name[0] === 0x43) && name.toString('latin1').toLowerCase() === 'connection') named = connectionTokens(String(raw[i + 1])) ?? named;
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const rawName = raw[i] as Buffer;
    const name = rawName.toString('latin1');
    const lower = HOP_LENGTHS.has(name.length) || named !== undefined || name.length === 12 || own !== null ? name.toLowerCase() : name;
    if (HOP_BY_HOP.has(lower) || named?.has(lower) || lower === 'x-request-id' || (own !== null && isOwn(own, lower))) continue;
    out.push(name, (raw[i + 1] as Buffer).toString('latin1'));
  }
  out.push('x-request-id', requestId);
  if (own !== null) for (let i = 0; i < own.length; i++) out.push(own[i] as string);
  if (close) out.push('connection', 'close');
  return out;
}

/** Set-Cookie is the one field whose instances are separate (RFC 6265 §3): the gateway's cookie joins the upstream's, never replaces them. */
function isOwn(own: readonly string[], lower: string): boolean {
  if (lower === 'set-cookie') return false;
  for (let i = 0; i < own.length; i += 2) if ((own[i] as string).toLowerCase() === lower) return true;
  return false;
}

/** JWT subjects are arbitrary strings; a header value must be visible ASCII, so others are percent-encoded. */
function headerSafe(value: string): string {
  return /^[\x20-\x7e]*$/.test(value) ? value : percentEncode(value);
}

/**
 * JWT scopes are arbitrary strings too (a signed token may carry `scp: ["日本"]` or a newline).
 * undici refuses such a header value, which failed the request as a 502 counted against a healthy
 * endpoint. Each scope is encoded on its own, so the list stays space-separated (RFC 6749 §3.3).
 */
function scopeSafe(scope: string): string {
  return /^[\x21-\x7e]+$/.test(scope) ? scope : percentEncode(scope);
}

/** encodeURIComponent throws on a lone surrogate, which JSON (and so a JWT claim) can carry. */
function percentEncode(value: string): string {
  return encodeURIComponent(value.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD'));
}

const REQUEST_ID = /^[A-Za-z0-9._:\-]{1,128}$/;

/** A client's X-Request-Id is kept when it is a sane token; anything else is replaced. */
export function acceptableRequestId(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && REQUEST_ID.test(value) ? value : undefined;
}
