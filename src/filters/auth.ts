import { timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { errors, jwtVerify } from 'jose';
import type { CryptoKey, JWTPayload, JWTVerifyGetKey, JWTVerifyOptions } from 'jose';
import type { AuthPolicy, AuthorizePolicy, JwtPolicy } from '../policy/schema.ts';
import { consumerIdOfKey, hashApiKey } from '../policy/consumers.ts';
import { algorithmsForPem } from '../policy/keys.ts';
import { canonicalJson } from '../core/hash.ts';
import type { ConsumerRecord } from '../policy/consumers.ts';
import type { JwtKeyCache } from './jwks-cache.ts';
import { compileMtls, type ClientCertificate, type MtlsReason } from './mtls.ts';

export { JwtKeyCache } from './jwks-cache.ts';
export type { JwksTiming, JwtKeyCacheOptions } from './jwks-cache.ts';
export { clientCertificateFrom, type ClientCertificate } from './mtls.ts';

export interface Identity {
  readonly method: 'jwt' | 'apiKey' | 'mtls';
  /** JWT `sub`, the consumer id, or the client certificate's subject CN (see mtls.ts subjectOf). */
  readonly subject: string;
  /** Consumer id for API keys; null for JWTs. */
  readonly consumer: string | null;
  readonly scopes: readonly string[];
  readonly plan: string | null;
  readonly limits: ConsumerRecord['limits'] | null;
}

/** Stable reasons: they end up in logs, metrics labels and `error_description`. */
export type AuthReason =
  | 'missing_credentials'
  | 'malformed_token'
  | 'token_expired'
  | 'token_not_yet_valid'
  | 'wrong_audience'
  | 'wrong_issuer'
  | 'missing_claim'
  | 'bad_signature'
  | 'unknown_key'
  | 'alg_not_allowed'
  | 'invalid_token'
  | 'invalid_api_key'
  | 'jwks_unavailable'
  | 'key_unavailable'
  | 'missing_scope'
  | 'claim_mismatch'
  | 'claims_required'
  | MtlsReason;

export type AuthOutcome =
  | { readonly ok: true; readonly identity: Identity | null }
  | {
      readonly ok: false;
      readonly status: 401 | 403 | 503;
      readonly code: 'unauthorized' | 'insufficient_scope' | 'auth_unavailable' | 'certificate_not_allowed';
      readonly reason: AuthReason;
      readonly message: string;
      /** `WWW-Authenticate` value, or null when none applies (503). */
      readonly challenge: string | null;
    };

export interface RouteAuth {
  readonly required: boolean;
  /** Header names (lower case) to delete before forwarding when forwardCredentials is false. */
  readonly credentialHeaders: readonly string[];
  /** The mtls method is on: the proxy reads the connection's client certificate for `authenticate`. */
  readonly needsClientCertificate: boolean;
  /** `clientCertificate`: the connection's, or null (none sent, plain HTTP, or not needed). */
  authenticate(headers: IncomingHttpHeaders, clientCertificate?: ClientCertificate | null): Promise<AuthOutcome>;
}

/** Consumer id → record. */
export type ConsumerIndex = ReadonlyMap<string, ConsumerRecord>;

export interface AuthDeps {
  readonly keys: JwtKeyCache;
  readonly consumers: ConsumerIndex;
}

/** Longer than any token a real IdP issues; refused before jose spends time decoding it. */
export const MAX_TOKEN_LENGTH = 8192;

const MESSAGES: Readonly<Record<AuthReason, string>> = {
  missing_credentials: 'credentials are required',
  malformed_token: 'the bearer token is malformed',
  token_expired: 'the token has expired',
  token_not_yet_valid: 'the token is not valid yet',
  wrong_audience: 'the token is not meant for this API',
  wrong_issuer: 'the token was issued by an untrusted issuer',
  missing_claim: 'the token lacks a required claim',
  bad_signature: 'the token signature does not verify',
  unknown_key: 'the token is signed with an unknown key',
  alg_not_allowed: 'the token signing algorithm is not accepted',
  invalid_token: 'the token is invalid',
  invalid_api_key: 'the API key is invalid',
  jwks_unavailable: 'the identity provider keys could not be fetched',
  key_unavailable: 'the verification key of this route is unusable',
  missing_scope: 'the credential lacks a required scope',
  claim_mismatch: 'the token does not satisfy the required claims',
  claims_required: 'this route requires a token with specific claims',
  client_certificate_required: 'a client certificate is required (TLS with a certificate issued by a trusted CA)',
  client_certificate_unverified: 'the client certificate could not be verified against the trusted CAs',
  client_certificate_not_allowed: 'the client certificate is not allowed on this route',
};

const ANONYMOUS: AuthOutcome = Object.freeze({ ok: true, identity: null });
const PUBLIC: RouteAuth = Object.freeze({
  required: false,
  credentialHeaders: Object.freeze([]) as readonly string[],
  needsClientCertificate: false,
  authenticate: () => Promise.resolve(ANONYMOUS),
});

type Rejection = Extract<AuthOutcome, { ok: false }>;
type Verified = { readonly identity: Identity; readonly claims: JWTPayload | null };

export function compileRouteAuth(auth: AuthPolicy | null, authorize: AuthorizePolicy | null, deps: AuthDeps): RouteAuth {
  if (auth === null || auth.methods.length === 0) return PUBLIC;

  const jwtPolicy = auth.methods.includes('jwt') ? auth.jwt : undefined;
  const apiKeyHeader = auth.methods.includes('apiKey') ? auth.apiKey.header : undefined;
  const verifyJwt = jwtPolicy === undefined ? undefined : compileJwt(jwtPolicy, deps.keys);
  const checkApiKey = apiKeyHeader === undefined ? undefined : compileApiKey(deps.consumers);
  const checkMtls = auth.methods.includes('mtls') && auth.mtls !== undefined ? compileMtls(auth.mtls) : undefined;
  /** The only method: an absent certificate is named as such, not as missing credentials in general. */
  const mtlsOnly = checkMtls !== undefined && verifyJwt === undefined && checkApiKey === undefined;

  const bearerChallenge = 'Bearer realm="cgw"';
  const apiKeyChallenge = apiKeyHeader === undefined ? undefined : `ApiKey realm="cgw", header="${apiKeyHeader}"`;
  const challengeFor = (rejectedJwt: AuthReason | null): string =>
    [
      verifyJwt === undefined ? undefined : rejectedJwt === null ? bearerChallenge : `${bearerChallenge}, error="invalid_token", error_description="${rejectedJwt}"`,
      apiKeyChallenge,
      // No scheme is registered for TLS client certificates; RFC 9110 §11.6.1 still wants a
      // challenge on every 401, and this one names what to present.
      checkMtls === undefined ? undefined : 'ClientCertificate realm="cgw"',
    ]
      .filter((c) => c !== undefined)
      .join(', ');
  const plainChallenge = challengeFor(null);
  const unauthorized = (reason: AuthReason, tokenPresented: boolean): Rejection =>
    reason === 'jwks_unavailable' || reason === 'key_unavailable'
      ? { ok: false, status: 503, code: 'auth_unavailable', reason, message: MESSAGES[reason], challenge: null }
      : { ok: false, status: 401, code: 'unauthorized', reason, message: MESSAGES[reason], challenge: tokenPresented ? challengeFor(reason) : plainChallenge };
  const missing = Object.freeze(unauthorized('missing_credentials', false));
  const mtlsRejections: Readonly<Record<MtlsReason, Rejection>> = {
    client_certificate_required: Object.freeze(mtlsOnly ? unauthorized('client_certificate_required', false) : missing),
    client_certificate_unverified: Object.freeze(unauthorized('client_certificate_unverified', false)),
    client_certificate_not_allowed: Object.freeze({
      ok: false,
      status: 403,
      code: 'certificate_not_allowed',
      reason: 'client_certificate_not_allowed',
      message: MESSAGES.client_certificate_not_allowed,
      challenge: null,
    } as const),
  };

  const authorizeIdentity = compileAuthorize(authorize, verifyJwt === undefined);

  const credentialHeaders: string[] = [];
  if (!auth.forwardCredentials) {
    if (verifyJwt !== undefined) credentialHeaders.push('authorization');
    if (apiKeyHeader !== undefined && !credentialHeaders.includes(apiKeyHeader)) credentialHeaders.push(apiKeyHeader);
  }

  return Object.freeze({
    required: true,
    credentialHeaders: Object.freeze(credentialHeaders),
    needsClientCertificate: checkMtls !== undefined,
    async authenticate(headers: IncomingHttpHeaders, clientCertificate: ClientCertificate | null = null): Promise<AuthOutcome> {
      let verified: Verified;
      const token = verifyJwt === undefined ? undefined : bearerToken(headers.authorization);
      if (token !== undefined && verifyJwt !== undefined) {
        const result = await verifyJwt(token);
        if (typeof result === 'string') return unauthorized(result, true);
        verified = result;
      } else {
        // Credentials in headers are the request's own choice and win; the connection's
        // certificate is the fallback when none is sent.
        const key = apiKeyHeader === undefined ? undefined : headerValue(headers[apiKeyHeader]);
        if (key !== undefined && checkApiKey !== undefined) {
          const identity = checkApiKey(key);
          if (identity === undefined) return unauthorized('invalid_api_key', false);
          verified = { identity, claims: null };
        } else if (checkMtls !== undefined) {
          const outcome = checkMtls(clientCertificate);
          if (!outcome.ok) return mtlsRejections[outcome.reason];
          verified = { identity: mtlsIdentity(outcome.subject), claims: null };
        } else {
          return missing;
        }
      }
      return authorizeIdentity(verified);
    },
  });
}

/** The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235), else undefined. */
function bearerToken(value: string | undefined): string | undefined {
  if (value === undefined || value.length < 6 || value.slice(0, 6).toLowerCase() !== 'bearer') return undefined;
  // `Bearerx` would be another scheme; a bare `Bearer` is a presented but empty token.
  if (value.length > 6 && value[6] !== ' ' && value[6] !== '\t') return undefined;
  return value.slice(7).trim();
}

/** Joined the way node:http joins repeated headers, so two keys never pass as one. */
function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

// ---------------------------------------------------------------------------------------------
// JWT

type JwtCheck = (token: string) => Promise<Verified | AuthReason>;

function compileJwt(policy: JwtPolicy, keys: JwtKeyCache): JwtCheck {
  const configured = policy.algorithms.filter((a) => (a as string) !== 'none');
  const base: JWTVerifyOptions = {
    clockTolerance: policy.clockTolerance / 1000,
    requiredClaims: policy.requireExpiry ? ['exp'] : [],
    ...(policy.issuer === undefined ? {} : { issuer: policy.issuer }),
    ...(policy.audience === undefined ? {} : { audience: policy.audience }),
  };

  let getKey: JWTVerifyGetKey | Uint8Array;
  let algorithms: readonly string[] = configured;
  if (policy.jwksUrl !== undefined) {
    const set = keys.remote(policy.jwksUrl, { cacheMaxAge: policy.jwksCacheMaxAge, cooldown: policy.jwksCooldown, timeout: policy.jwksTimeout });
    getKey = async (header, token) => {
      try {
        return await set(header, token);
      } catch (err) {
        // A missing kid is the token's problem; anything else (timeout, refused connection,
        // non-200, invalid JWKS) is the IdP's, and must not read as a bad token.
        if (codeOf(err) === 'ERR_JWKS_NO_MATCHING_KEY' || codeOf(err) === 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw err;
        throw keySourceDown(err);
      }
    };
  } else if (policy.publicKey !== undefined) {
    const pem = policy.publicKey;
    const usable = algorithmsForPem(pem);
    if (usable === undefined) return () => Promise.resolve('key_unavailable');
    // The token picks its alg among the configured ones; an alg the key cannot do is refused by
    // jose's allow-list (alg_not_allowed) instead of failing inside the key import.
    algorithms = configured.filter((a) => usable.has(a));
    // No listed algorithm fits the key: a config error, reported as such rather than as bad tokens.
    if (algorithms.length === 0) return () => Promise.resolve('key_unavailable');
    getKey = (header) => keys.publicKey(pem, header.alg ?? '');
  } else if (policy.secret !== undefined) {
    getKey = new TextEncoder().encode(policy.secret);
  } else {
    return () => Promise.resolve('key_unavailable');
  }
  const options: JWTVerifyOptions = { ...base, algorithms: [...algorithms] };
  const verified = keys.remembered<{ readonly result: Verified; readonly until: number }>(canonicalJson(policy));

  return async (token) => {
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) return 'malformed_token';
    const now = Date.now();
    const hit = verified.get(token);
    if (hit !== undefined) {
      if (now < hit.until) return hit.result;
      verified.delete(token);
    }
    let payload: JWTPayload;
    try {
      payload = await verifyWithKey(token, getKey, options);
    } catch (err) {
      return reasonOf(err);
    }
    // Rate limits and logs key on the subject; a token that names nobody cannot be told apart.
    if (typeof payload.sub !== 'string' || payload.sub === '') return 'missing_claim';
    const result: Verified = { identity: jwtIdentity(payload, payload.sub), claims: payload };
    remember(verified, token, result, typeof payload.exp === 'number' ? Math.min(payload.exp * 1000, now + VERIFIED_TOKEN_TTL_MS) : now + VERIFIED_TOKEN_TTL_MS);
    return result;
  };
}

/**
 * A signature check (RS256) costs more than the rest of the proxy path, and clients send the same
 * token many times. A verified token is remembered per route for at most 30 s and never past its
 * `exp`: a key the IdP withdraws stops working at most 30 s after the JWKS cache (jwksCacheMaxAge)
 * lets go of it. The map belongs to the jwt configuration (JwtKeyCache.remembered), so it survives
 * snapshot rebuilds and a policy change starts empty. Rejections are never remembered.
 */
const VERIFIED_TOKEN_TTL_MS = 30_000;
const VERIFIED_TOKENS_MAX = 10_000;

function remember(cache: Map<string, { readonly result: Verified; readonly until: number }>, token: string, result: Verified, until: number): void {
  if (cache.size >= VERIFIED_TOKENS_MAX) {
    // Oldest first (a Map iterates in insertion order); a burst of distinct tokens cannot grow it.
    const oldest = cache.keys().next();
    if (!oldest.done) cache.delete(oldest.value);
  }
  cache.set(token, { result, until });
}

async function verifyWithKey(token: string, key: JWTVerifyGetKey | Uint8Array, options: JWTVerifyOptions): Promise<JWTPayload> {
  try {
    return (await jwtVerify(token, key, options)).payload;
  } catch (err) {
    if (codeOf(err) !== 'ERR_JWKS_MULTIPLE_MATCHING_KEYS') throw err;
    // A token without `kid` while the IdP publishes several keys (mid-rotation): jose leaves it
    // to the caller to try each candidate (see createRemoteJWKSet's docs).
    for await (const candidate of err as AsyncIterable<CryptoKey>) {
      try {
        return (await jwtVerify(token, candidate, options)).payload;
      } catch (inner) {
        if (codeOf(inner) !== 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') throw inner;
      }
    }
    throw new errors.JWSSignatureVerificationFailed();
  }
}

const keySourceFailures = new WeakSet<object>();

function keySourceDown(cause: unknown): Error {
  const err = new Error('JWKS unavailable', { cause });
  keySourceFailures.add(err);
  return err;
}

function codeOf(err: unknown): unknown {
  return typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
}

/** jose error → reason; jose 6 sets a stable `code` on every error it throws (util/errors). */
function reasonOf(err: unknown): AuthReason {
  if (typeof err === 'object' && err !== null && keySourceFailures.has(err)) return 'jwks_unavailable';
  switch (codeOf(err)) {
    case 'ERR_JWT_EXPIRED':
      return 'token_expired';
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED': {
      const { claim, reason } = err as { claim?: unknown; reason?: unknown };
      if (reason === 'invalid') return 'malformed_token';
      if (claim === 'aud') return 'wrong_audience';
      if (claim === 'iss') return 'wrong_issuer';
      if (claim === 'nbf') return 'token_not_yet_valid';
      if (reason === 'missing') return 'missing_claim';
      return 'invalid_token';
    }
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return 'bad_signature';
    case 'ERR_JWKS_NO_MATCHING_KEY':
      return 'unknown_key';
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
      return 'alg_not_allowed';
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return 'malformed_token';
    default:
      return 'invalid_token';
  }
}

function jwtIdentity(payload: JWTPayload, subject: string): Identity {
  return {
    method: 'jwt',
    subject,
    consumer: null,
    scopes: scopesOf(payload),
    plan: typeof payload.plan === 'string' ? payload.plan : null,
    limits: null,
  };
}

/** RFC 8693 `scope` (space separated) first, else the `scp` many IdPs use (array or string). */
function scopesOf(payload: JWTPayload): readonly string[] {
  const value = typeof payload.scope === 'string' ? payload.scope : payload.scp;
  if (typeof value === 'string') return value.split(' ').filter((s) => s !== '');
  if (Array.isArray(value)) return value.filter((s): s is string => typeof s === 'string');
  return [];
}

// ---------------------------------------------------------------------------------------------
// API keys

interface CompiledConsumer {
  readonly hash: Buffer;
  readonly identity: Identity;
}

/** Records are immutable snapshot data; shared by every route and rebuild that sees them. */
const compiledConsumers = new WeakMap<ConsumerRecord, CompiledConsumer>();
/** Compared against when the id is unknown, so every refusal costs one hash and one comparison. */
const NO_CONSUMER_HASH = Buffer.from(`sha256:${'0'.repeat(64)}`);

function compiledConsumer(id: string, record: ConsumerRecord): CompiledConsumer {
  let compiled = compiledConsumers.get(record);
  if (compiled === undefined) {
    compiled = {
      hash: Buffer.from(record.keyHash),
      identity: Object.freeze({
        method: 'apiKey',
        subject: id,
        consumer: id,
        scopes: Object.freeze([...record.scopes]),
        plan: record.plan ?? null,
        limits: record.limits ?? null,
      }),
    };
    compiledConsumers.set(record, compiled);
  }
  return compiled;
}

function compileApiKey(consumers: ConsumerIndex): (key: string) => Identity | undefined {
  return (key) => {
    const id = consumerIdOfKey(key);
    const record = id === undefined ? undefined : consumers.get(id);
    const compiled = id === undefined || record === undefined ? undefined : compiledConsumer(id, record);
    const expected = compiled?.hash ?? NO_CONSUMER_HASH;
    const presented = Buffer.from(hashApiKey(key));
    const same = presented.length === expected.length && timingSafeEqual(presented, expected);
    return same && compiled !== undefined ? compiled.identity : undefined;
  };
}

/** A small object per request: keeping one per certificate subject would be a cache to bound. */
function mtlsIdentity(subject: string): Identity {
  return { method: 'mtls', subject, consumer: null, scopes: NO_SCOPES, plan: null, limits: null };
}

const NO_SCOPES: readonly string[] = Object.freeze([]);

// ---------------------------------------------------------------------------------------------
// Authorization

function compileAuthorize(authorize: AuthorizePolicy | null, withoutJwt: boolean): (verified: Verified) => AuthOutcome {
  const scopes = authorize?.scopes ?? [];
  const claims = Object.entries(authorize?.claims ?? {}).map(([name, want]) => [name, typeof want === 'string' ? [want] : want] as const);
  if (scopes.length === 0 && claims.length === 0) return ({ identity }) => ({ ok: true, identity });

  const needed = scopes.join(' ');
  const scopeMessage = `${MESSAGES.missing_scope}: ${needed}`;
  const scopeDenied = (method: Identity['method']): Rejection => ({
    ok: false,
    status: 403,
    code: 'insufficient_scope',
    reason: 'missing_scope',
    message: scopeMessage,
    challenge: method === 'mtls' ? null : `${method === 'jwt' ? 'Bearer' : 'ApiKey'} error="insufficient_scope", scope="${needed}"`,
  });
  const claimsDenied = (reason: 'claim_mismatch' | 'claims_required'): Rejection => ({
    ok: false,
    status: 403,
    code: 'insufficient_scope',
    reason,
    message: MESSAGES[reason],
    challenge: withoutJwt ? null : 'Bearer error="insufficient_scope"',
  });

  return ({ identity, claims: payload }) => {
    for (const scope of scopes) if (!identity.scopes.includes(scope)) return scopeDenied(identity.method);
    if (claims.length > 0) {
      if (payload === null) return claimsDenied('claims_required');
      for (const [name, allowed] of claims) {
        const value = payload[name];
        const matches = typeof value === 'string' ? allowed.includes(value) : Array.isArray(value) && value.some((v) => typeof v === 'string' && allowed.includes(v));
        if (!matches) return claimsDenied('claim_mismatch');
      }
    }
    return { ok: true, identity };
  };
}
