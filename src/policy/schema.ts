import { z } from 'zod';
import { durationField } from '../core/duration-field.ts';
import { algorithmsForPem } from './keys.ts';
import { unmatchableRoutePath } from '../core/url-path.ts';
import { hstsSchema, mtlsSchema } from './tls-schema.ts';
import { stickinessSchema } from './stickiness.ts';
import { canaryTag } from './canary.ts';
import { cacheSchema } from './cache-schema.ts';

export { MAX_ALLOWED_NAMES, type HstsPolicy, type MtlsPolicy } from './tls-schema.ts';
export type { StickinessPolicy } from './stickiness.ts';
export type { CachePolicy } from './cache-schema.ts';

/**
 * Policy and route documents: the data operators write in `policies/` and Consul KV. Every field
 * is validated here, once, so the gateway, `cgw policy validate` and `cgw policy push` agree on
 * what is valid. Durations are strings (`500ms`, `30s`, `5m`) and come out as milliseconds.
 *
 * Inheritance is by section: the effective policy of a route takes each section (auth,
 * rateLimits, timeouts, ...) whole from the most specific document that has it
 * (route → service → defaults). Sections are never merged field by field, so every document is
 * valid on its own and a route can never end up with half of an auth setup.
 */

/** Consul service names: DNS-compatible labels (Consul warns on anything else). */
export const serviceName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/, 'service names are letters, digits, - and _');
export const headerName = z
  .string()
  .regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/, 'not an HTTP header name')
  .transform((h) => h.toLowerCase());
const hostName = z
  .string()
  .transform((h) => h.toLowerCase())
  .pipe(z.string().regex(/^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, 'not a host name'));
const pathPrefix = z
  .string()
  .regex(/^\/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$/, 'must start with / and hold only URL path characters')
  .refine((p) => !/(^|\/)\.{1,2}(\/|$)/.test(p), 'must not contain . or .. segments')
  .transform((p) => (p.length > 1 ? p.replace(/\/+$/, '') : p))
  .superRefine((p, ctx) => {
    const problem = unmatchableRoutePath(p);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  });
/** A route id as `cgw routes` shows it: `[host]/path`. */
export const routeId = z
  .string()
  // As routes are normalised: host lower-cased (paths stay case-sensitive), no trailing slash.
  .transform((id) => {
    const slash = id.indexOf('/');
    return slash === -1 ? id : id.slice(0, slash).toLowerCase() + id.slice(slash).replace(/(.)\/+$/, '$1');
  })
  .pipe(z.string().regex(/^([a-z0-9.-]+)?\/[^\s]*$/, 'route ids look like /path or host/path (as `cgw routes` shows them)'));
export const planName = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'plan names are lower-case letters, digits, - and _');
const scope = z.string().regex(/^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/, 'scopes are printable characters without spaces, quotes or backslashes');

export const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'HS256', 'HS384', 'HS512'] as const;
const SYMMETRIC = new Set(['HS256', 'HS384', 'HS512']);

export const jwtSchema = z
  .object({
    /** Keys from a JWKS document, cached and refreshed when a token names an unknown `kid`. */
    jwksUrl: z.url({ protocol: /^https?$/, error: 'jwksUrl must be an http(s) URL' }).optional(),
    /** One static public key (SPKI PEM) for the asymmetric algorithms listed. */
    publicKey: z.string().includes('-----BEGIN PUBLIC KEY-----', { error: 'publicKey must be an SPKI PEM (-----BEGIN PUBLIC KEY-----)' }).optional(),
    /** Shared secret for HS256/384/512, at least 32 characters. */
    secret: z.string().min(32, 'secret must be at least 32 characters').optional(),
    /** Accepted algorithms, explicitly: a token whose header names another (or `none`) is refused. */
    algorithms: z.array(z.enum(JWT_ALGORITHMS, { error: `algorithms are ${JWT_ALGORITHMS.join(', ')} ("none" is never accepted)` })).min(1).max(13),
    issuer: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    clockTolerance: durationField(0, 300_000).prefault('30s'),
    /** Tokens without `exp` never expire; refuse them unless told otherwise. */
    requireExpiry: z.boolean().default(true),
    /** How long fetched keys are trusted before a refetch. */
    jwksCacheMaxAge: durationField(1000, 86_400_000).prefault('10m'),
    /** Minimum time between two JWKS fetches, so a flood of unknown `kid`s cannot hammer the IdP. */
    jwksCooldown: durationField(0, 3_600_000).prefault('30s'),
    jwksTimeout: durationField(100, 60_000).prefault('5s'),
  })
  .strict()
  .superRefine((jwt, ctx) => {
    const sources = [jwt.jwksUrl, jwt.publicKey, jwt.secret].filter((s) => s !== undefined).length;
    if (sources !== 1) ctx.addIssue({ code: 'custom', message: 'set exactly one of jwksUrl, publicKey, secret' });
    const symmetric = jwt.algorithms.filter((a) => SYMMETRIC.has(a));
    if (jwt.secret !== undefined && symmetric.length !== jwt.algorithms.length) {
      ctx.addIssue({ code: 'custom', path: ['algorithms'], message: 'a secret only verifies HS256/HS384/HS512' });
    }
    if (jwt.secret === undefined && symmetric.length > 0) {
      ctx.addIssue({ code: 'custom', path: ['algorithms'], message: `${symmetric.join(', ')} need a secret; public keys never verify HMAC tokens` });
    }
    if (jwt.publicKey !== undefined) {
      const usable = algorithmsForPem(jwt.publicKey);
      if (usable === undefined) ctx.addIssue({ code: 'custom', path: ['publicKey'], message: 'publicKey does not parse as an SPKI public key' });
      else if (!jwt.algorithms.some((a) => usable.has(a))) {
        ctx.addIssue({ code: 'custom', path: ['algorithms'], message: `the publicKey verifies ${[...usable].join(', ') || 'no JWT algorithm'}; none of these is listed` });
      }
    }
  });

export const AUTH_METHODS = ['jwt', 'apiKey', 'mtls'] as const;

export const authSchema = z
  .object({
    /** Credentials accepted, any one suffices; `[]` makes the route public. */
    methods: z.array(z.enum(AUTH_METHODS)).max(AUTH_METHODS.length),
    jwt: jwtSchema.optional(),
    /** A client certificate verified by --tls-client-ca, its subject CN or a SAN on the allow list. */
    mtls: mtlsSchema.optional(),
    apiKey: z
      .object({ header: headerName.prefault('x-api-key') })
      .strict()
      .prefault({}),
    /** Pass the credential on to the upstream (off: the Authorization / API key header is removed). */
    forwardCredentials: z.boolean().default(false),
  })
  .strict()
  .superRefine((auth, ctx) => {
    if (auth.methods.includes('jwt') && !auth.jwt) ctx.addIssue({ code: 'custom', path: ['jwt'], message: 'methods includes jwt, so jwt settings are required' });
    if (auth.methods.includes('mtls') && !auth.mtls) ctx.addIssue({ code: 'custom', path: ['mtls'], message: 'methods includes mtls, so mtls settings (subjects, sans or anyVerified) are required' });
    if (new Set(auth.methods).size !== auth.methods.length) ctx.addIssue({ code: 'custom', path: ['methods'], message: 'a method is listed twice' });
  });

export const authorizeSchema = z
  .object({
    /** Every scope listed must be granted (JWT `scope`/`scp`, or the consumer's scopes). */
    scopes: z.array(scope).max(32).default([]),
    /** JWT claims that must equal the value (or one of the values). */
    claims: z.record(z.string().min(1), z.union([z.string(), z.array(z.string()).min(1)])).default({}),
  })
  .strict();

export const rateQuota = z
  .object({
    limit: z.number().int().min(1).max(1_000_000_000),
    window: durationField(1000, 86_400_000),
    /** Requests that may arrive at once; defaults to `limit`. */
    burst: z.number().int().min(1).max(1_000_000_000).optional(),
  })
  .strict();

export const rateLimitSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'names are lower-case letters, digits, - and _'),
    /** What is counted: the consumer (API key / JWT subject / client certificate subject), the client IP, or a header's value. */
    by: z.union([z.literal('consumer'), z.literal('ip'), z.string().regex(/^header:[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$/, 'by is consumer, ip or header:<name>')]),
    limit: z.number().int().min(1).max(1_000_000_000),
    window: durationField(1000, 86_400_000),
    burst: z.number().int().min(1).max(1_000_000_000).optional(),
    /** One counter per route, or one shared by every route of the service. */
    scope: z.enum(['route', 'service']).default('route'),
    /** Per plan quotas for `by: consumer`; a consumer's own limits win over its plan's. */
    plans: z.record(planName, rateQuota).optional(),
    /** Redis unreachable: `open` counts locally per gateway, `closed` answers 503. */
    failureMode: z.enum(['open', 'closed']).default('open'),
  })
  .strict()
  .superRefine((r, ctx) => {
    if (r.plans && r.by !== 'consumer') ctx.addIssue({ code: 'custom', path: ['plans'], message: 'plans only apply with by: consumer' });
  });

export const timeoutsSchema = z
  .object({
    connect: durationField(10, 60_000).optional(),
    /** Until the upstream's response headers arrive. */
    responseHeaders: durationField(10, 3_600_000).optional(),
    /** The whole exchange, retries included. */
    request: durationField(10, 3_600_000).optional(),
  })
  .strict();

export const RETRY_ON = ['connect-failure', 'reset', 'timeout'] as const;

export const retriesSchema = z
  .object({
    /** Retries after the first attempt, each on a different endpoint when one is left. */
    attempts: z.number().int().min(0).max(5),
    on: z.array(z.enum(RETRY_ON)).default(['connect-failure', 'reset']),
    statuses: z.array(z.number().int().min(500).max(599)).max(20).default([]),
    backoff: z
      .object({ base: durationField(0, 10_000).prefault('25ms'), max: durationField(0, 30_000).prefault('250ms') })
      .strict()
      .prefault({}),
    /** Also retry POST/PATCH; only when the upstream is known to tolerate duplicates. */
    nonIdempotent: z.boolean().default(false),
    /** Request bodies up to this size are buffered so they can be sent again; larger ones are not retried. */
    maxBodyBytes: z.number().int().min(0).max(10 * 1024 * 1024).default(65_536),
    /** Retries allowed: at most `ratio` of requests over the last 10 s, but at least `minPerSecond`. */
    budget: z
      .object({ ratio: z.number().min(0).max(1).default(0.2), minPerSecond: z.number().int().min(0).max(10_000).default(5) })
      .strict()
      .prefault({}),
  })
  .strict();

const failureStatuses = z.array(z.number().int().min(500).max(599)).max(20);

export const outlierSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** Consecutive failures (connect errors, timeouts, `statuses`) that eject an endpoint. */
    consecutiveFailures: z.number().int().min(1).max(1000).default(5),
    statuses: failureStatuses.default([502, 503, 504]),
    /** First ejection; each repeat doubles it up to `maxEjection`. */
    baseEjection: durationField(100, 3_600_000).prefault('30s'),
    maxEjection: durationField(100, 86_400_000).prefault('5m'),
    /** Never eject more than this share of a service's endpoints. */
    maxEjectedPercent: z.number().min(0).max(100).default(50),
  })
  .strict();

export const circuitBreakerSchema = z
  .object({
    enabled: z.boolean().default(true),
    window: durationField(1000, 600_000).prefault('10s'),
    /** Requests in the window before the ratio is judged. */
    minRequests: z.number().int().min(1).max(1_000_000).default(20),
    failureRatio: z.number().gt(0).max(1).default(0.5),
    openFor: durationField(100, 3_600_000).prefault('5s'),
    /** Requests let through while half-open; all must succeed to close. */
    halfOpenProbes: z.number().int().min(1).max(100).default(3),
    statuses: failureStatuses.default([500, 502, 503, 504]),
  })
  .strict();

export const limitsSchema = z
  .object({
    maxBodyBytes: z.number().int().min(0).max(10 * 1024 * 1024 * 1024).optional(),
    maxHeaderBytes: z.number().int().min(256).max(1024 * 1024).optional(),
  })
  .strict();

/**
 * Upgraded (WebSocket) connections of a route. Both ends close with code 1001 at the limit: an
 * idle connection holds a client slot and an upstream socket for nothing, and a bounded lifetime
 * moves long-lived clients onto new instances and certificates.
 */
export const websocketSchema = z
  .object({
    /** No byte in either direction for this long closes the connection. */
    idleTimeout: durationField(1000, 86_400_000).prefault('5m'),
    /** The longest a connection lives, however busy. */
    maxLifetime: durationField(1000, 604_800_000).prefault('24h'),
  })
  .strict();

export const discoverySchema = z
  .object({
    /** watch: blocking query; poll: one plain read per interval; pinned: keep the last endpoints read. */
    mode: z.enum(['watch', 'poll', 'pinned']),
    interval: durationField(1000, 3_600_000).prefault('30s'),
  })
  .strict();

/**
 * Shadow traffic: a share of a route's requests copied to other instances, whose answers are
 * dropped. The shadow never changes what the client gets; see proxy/mirror.ts.
 */
export const mirrorSchema = z
  .object({
    /** The healthy instances of the route's own service carrying this tag... */
    subset: canaryTag.optional(),
    /** ...or another Consul service (watched for this even when nothing routes to it). */
    service: serviceName.optional(),
    /** Share of requests copied, sampled at random per request: 0 < percent <= 100, decimals allowed. */
    percent: z.number({ error: 'percent is a number above 0 and at most 100' }).gt(0, 'percent must be above 0 (remove the mirror section to stop mirroring)').max(100, 'percent must be at most 100'),
    /** Buffered bodies up to this size are mirrored; larger ones, and streamed ones, are not. */
    maxBodyBytes: z.number().int().min(0).max(64 * 1024 * 1024).default(65_536),
    /** How long a shadow request may take; default the route's request timeout (else its response timeout) capped at 5 s. */
    timeout: durationField(10, 30_000).optional(),
  })
  .strict()
  .superRefine((m, ctx) => {
    if ((m.subset === undefined) === (m.service === undefined)) ctx.addIssue({ code: 'custom', message: 'set exactly one of subset (a tag of the route\'s service) or service (another Consul service)' });
  });

const SERVICE_ONLY_SECTIONS = ['outlierDetection', 'circuitBreaker', 'discovery', 'stickiness'] as const;

export const appliesToSchema = z.union([
  z.literal('defaults'),
  z.object({ service: z.string().min(1) }).strict(),
  z.object({ route: routeId }).strict(),
], { error: 'appliesTo is "defaults", {"service": "<name>"} or {"route": "<route id>"}' });

export const policyDocumentSchema = z
  .object({
    description: z.string().max(1000).optional(),
    appliesTo: appliesToSchema,
    auth: authSchema.optional(),
    authorize: authorizeSchema.optional(),
    rateLimits: z.array(rateLimitSchema).max(8).optional(),
    timeouts: timeoutsSchema.optional(),
    retries: retriesSchema.optional(),
    outlierDetection: outlierSchema.optional(),
    circuitBreaker: circuitBreakerSchema.optional(),
    limits: limitsSchema.optional(),
    websocket: websocketSchema.optional(),
    discovery: discoverySchema.optional(),
    /** Strict-Transport-Security on this route's responses over TLS (never over plain HTTP, RFC 6797 §7.2). */
    hsts: hstsSchema.optional(),
    /** On the plain-HTTP listener, answer with a redirect to the first --listen-tls port instead of serving. */
    redirectHttps: z.boolean().optional(),
    /** Keep a client on the canary subset it first got (a cookie or a header it sends back); service or defaults only. */
    stickiness: stickinessSchema.optional(),
    /** Copy a share of requests to shadow instances; their answers are dropped. */
    mirror: mirrorSchema.optional(),
    /** Store responses and answer from them (RFC 9111); see policy/cache-schema.ts. */
    cache: cacheSchema.optional(),
  })
  .strict()
  .superRefine((doc, ctx) => {
    if (typeof doc.appliesTo === 'object' && 'route' in doc.appliesTo) {
      for (const section of SERVICE_ONLY_SECTIONS) {
        if (doc[section] !== undefined) ctx.addIssue({ code: 'custom', path: [section], message: `${section} applies to a whole service; put it in a service or defaults document` });
      }
      if (doc.timeouts?.connect !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['timeouts', 'connect'], message: 'connections are pooled per service, so the connect timeout is set in a service or defaults document' });
      }
    }
    if (doc.appliesTo === 'defaults' && doc.discovery !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['discovery'], message: 'discovery is chosen per service, not in defaults' });
    }
    if (doc.appliesTo === 'defaults' && doc.mirror !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['mirror'], message: 'mirror is set per route or service, not in defaults' });
    }
    if (typeof doc.appliesTo === 'object' && 'service' in doc.appliesTo && doc.mirror?.service === doc.appliesTo.service) {
      ctx.addIssue({ code: 'custom', path: ['mirror', 'service'], message: 'a service cannot mirror to itself; use subset: <tag> for some of its instances' });
    }
    const names = (doc.rateLimits ?? []).map((r) => r.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup !== undefined) ctx.addIssue({ code: 'custom', path: ['rateLimits'], message: `rate limit name "${dup}" is used twice` });
  });

const upstreamUrl = z
  .url({ protocol: /^https?$/, error: 'upstreams are http(s) URLs such as http://10.0.0.5:8080' })
  .refine((u) => {
    const url = new URL(u);
    return (url.pathname === '/' || url.pathname === '') && !url.search && !url.hash && !url.username;
  }, 'an upstream URL is scheme://host:port only, without path, query or credentials');

export const routeDocumentSchema = z
  .object({
    description: z.string().max(1000).optional(),
    host: hostName.optional(),
    path: pathPrefix,
    /** Removed from the path before forwarding (like fabio's `strip=`). */
    strip: pathPrefix.optional(),
    /** A Consul service (watched even when it has no urlprefix- tag)... */
    service: serviceName.optional(),
    /** ...or fixed upstream URLs for APIs not registered in Consul (passive health only). */
    upstreams: z
      .array(
        // A bare URL is shorthand for {url}; normalised first so a bad URL gets its own message, not "invalid union".
        z.preprocess(
          (v) => (typeof v === 'string' ? { url: v } : v),
          z.object({ url: upstreamUrl, weight: z.number().int().min(1).max(1000).default(1) }).strict(),
        ),
      )
      .min(1)
      .max(256)
      .optional(),
  })
  .strict()
  .superRefine((r, ctx) => {
    if ((r.service === undefined) === (r.upstreams === undefined)) ctx.addIssue({ code: 'custom', message: 'set exactly one of service, upstreams' });
    if (r.strip !== undefined && !(r.path === r.strip || r.path.startsWith(r.strip === '/' ? '/' : `${r.strip}/`))) {
      ctx.addIssue({ code: 'custom', path: ['strip'], message: `strip "${r.strip}" is not a prefix of path "${r.path}"` });
    }
  });

export type PolicyDocument = z.output<typeof policyDocumentSchema>;
export type RouteDocument = z.output<typeof routeDocumentSchema>;
export type AuthPolicy = z.output<typeof authSchema>;
export type JwtPolicy = z.output<typeof jwtSchema>;
export type AuthorizePolicy = z.output<typeof authorizeSchema>;
export type RateLimitPolicy = z.output<typeof rateLimitSchema>;
export type RateQuota = z.output<typeof rateQuota>;
export type TimeoutsPolicy = z.output<typeof timeoutsSchema>;
export type RetriesPolicy = z.output<typeof retriesSchema>;
export type OutlierPolicy = z.output<typeof outlierSchema>;
export type CircuitBreakerPolicy = z.output<typeof circuitBreakerSchema>;
export type LimitsPolicy = z.output<typeof limitsSchema>;
export type WebSocketPolicy = z.output<typeof websocketSchema>;
export type DiscoveryPolicy = z.output<typeof discoverySchema>;
export type AppliesTo = z.output<typeof appliesToSchema>;
export type MirrorPolicy = z.output<typeof mirrorSchema>;

/** Sections that can appear in a policy and are inherited route → service → defaults. */
export const POLICY_SECTIONS = ['auth', 'authorize', 'rateLimits', 'timeouts', 'retries', 'outlierDetection', 'circuitBreaker', 'limits', 'websocket', 'discovery', 'hsts', 'redirectHttps', 'stickiness', 'mirror', 'cache'] as const;
export type PolicySection = (typeof POLICY_SECTIONS)[number];
