import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { RateLimitPolicy } from '../policy/schema.ts';
import type { RateDecision, RateLimiterBackend, RateQuotaMs } from './limiter-store.ts';

export { RateLimiterBackend, LocalRateStore, gcra, gcraParams, GCRA_LUA } from './limiter-store.ts';
export type { RateDecision, BackendState, RedisOptions, RateQuotaMs, BackendOptions, LocalStoreOptions } from './limiter-store.ts';

export interface RateLimitSubject {
  /** Consumer id or identity subject; null when the request is anonymous. */
  readonly consumer: string | null;
  readonly plan: string | null;
  /** The consumer's own quota (window in ms), which beats its plan's. */
  readonly limits: { limit: number; window: number; burst?: number | undefined } | null;
  readonly ip: string;
  readonly headers: IncomingHttpHeaders;
}

export type RateLimitOutcome =
  | { readonly ok: true; readonly headers: Readonly<Record<string, string>> }
  | { readonly ok: false; readonly status: 429; readonly code: 'rate_limited'; readonly headers: Readonly<Record<string, string>>; readonly message: string }
  | { readonly ok: false; readonly status: 503; readonly code: 'rate_limiter_unavailable'; readonly headers: Readonly<Record<string, string>>; readonly message: string };

export interface RouteRateLimits {
  readonly count: number;
  check(subject: RateLimitSubject): Promise<RateLimitOutcome>;
}

interface CompiledQuota {
  readonly quota: RateQuotaMs;
  /** `RateLimit-Policy` value, built once. */
  readonly policy: string;
}

interface CompiledRule {
  readonly name: string;
  /** 'consumer' | 'ip' | the lower-cased header name. */
  readonly by: 'consumer' | 'ip' | { readonly header: string };
  /** Everything of the key before the subject. */
  readonly prefix: string;
  readonly quota: CompiledQuota;
  readonly plans: ReadonlyMap<string, CompiledQuota>;
  readonly failureMode: 'open' | 'closed';
}

interface Verdict {
  readonly rule: CompiledRule;
  readonly quota: CompiledQuota;
  readonly decision: RateDecision | 'unavailable';
}

const HEADER_VALUE_RAW_MAX = 64;

const NO_RULES: RouteRateLimits = Object.freeze({
  count: 0,
  check: () => Promise.resolve<RateLimitOutcome>({ ok: true, headers: {} }),
});

function compileQuota(limit: number, windowMs: number, burst: number | undefined): CompiledQuota {
  const b = burst ?? limit;
  return {
    quota: { limit, windowMs, burst: b },
    // The draft's `w` is whole seconds; windows are at least 1 s, and a 1.5 s window reads as 2.
    policy: `${limit};w=${Math.ceil(windowMs / 1000)};burst=${b}`,
  };
}

/**
 * Route ids may contain `:` in their path, which would let `route:/a:x` + rule `y` and
 * `route:/a` + rule `x` build overlapping keys; escaping `%` and `:` keeps the layout readable and
 * unambiguous.
 */
function escapeScope(text: string): string {
  return text.replace(/%/g, '%25').replace(/:/g, '%3A');
}

function compileRule(rule: RateLimitPolicy, scope: { routeId: string; service: string }): CompiledRule {
  const scopePart = rule.scope === 'service' ? `service:${scope.service}` : `route:${escapeScope(scope.routeId)}`;
  const plans = new Map<string, CompiledQuota>();
  for (const [plan, q] of Object.entries(rule.plans ?? {})) plans.set(plan, compileQuota(q.limit, q.window, q.burst));
  return {
    name: rule.name,
    by: rule.by === 'consumer' || rule.by === 'ip' ? rule.by : { header: rule.by.slice('header:'.length).toLowerCase() },
    // Braces are a Redis Cluster hash tag: the key's slot comes from what they enclose.
    prefix: `cgw:rl:{${scopePart}:${rule.name}:`,
    quota: compileQuota(rule.limit, rule.window, rule.burst),
    plans,
    failureMode: rule.failureMode,
  };
}

/**
 * Subjects carry a kind prefix so that no client-chosen value can land on another kind's counter:
 * a consumer named `ip:10.0.0.1` or a header saying so must not share the anonymous counter of
 * that address.
 */
function subjectOf(rule: CompiledRule, s: RateLimitSubject): string {
  if (rule.by === 'consumer') return s.consumer !== null ? `c:${s.consumer}` : `ip:${s.ip}`;
  if (rule.by === 'ip') return `ip:${s.ip}`;
  const raw = s.headers[rule.by.header];
  const first = Array.isArray(raw) ? raw[0] : raw;
  if (first === undefined || first === '') return `ip:${s.ip}`;
  // Long values (tokens, user agents) would bloat every key; a digest keeps keys short and distinct.
  // The whole value is hashed: JWTs of one issuer share a long common head, so any prefix would
  // put different tokens on one counter (Node caps the header block, so the input stays bounded).
  return first.length > HEADER_VALUE_RAW_MAX ? `hs:${createHash('sha256').update(first).digest('hex')}` : `h:${first}`;
}

/**
 * A consumer's own quota, compiled once per limits object: the object belongs to the consumer
 * record of a snapshot, so it is stable while the snapshot is in force and is collected with it.
 */
const ownQuotas = new WeakMap<NonNullable<RateLimitSubject['limits']>, CompiledQuota>();

function ownQuotaOf(limits: NonNullable<RateLimitSubject['limits']>): CompiledQuota {
  let quota = ownQuotas.get(limits);
  if (quota === undefined) {
    quota = compileQuota(limits.limit, limits.window, limits.burst);
    ownQuotas.set(limits, quota);
  }
  return quota;
}

/** A consumer's own limits beat its plan's, which beat the rule's; anonymous callers get the rule's. */
function quotaOf(rule: CompiledRule, s: RateLimitSubject): CompiledQuota {
  if (rule.by !== 'consumer' || s.consumer === null) return rule.quota;
  if (s.limits) return ownQuotaOf(s.limits);
  if (s.plan !== null) return rule.plans.get(s.plan) ?? rule.quota;
  return rule.quota;
}

async function decideRule(rule: CompiledRule, subject: RateLimitSubject, backend: RateLimiterBackend): Promise<Verdict> {
  const quota = quotaOf(rule, subject);
  const decision = await backend.decide(`${rule.prefix}${subjectOf(rule, subject)}}`, quota.quota, rule.failureMode);
  return { rule, quota, decision };
}

function rateHeaders(v: Verdict, d: RateDecision): Record<string, string> {
  return {
    'RateLimit-Limit': String(d.limit),
    'RateLimit-Remaining': String(d.remaining),
    'RateLimit-Reset': String(Math.ceil(d.resetMs / 1000)),
    'RateLimit-Policy': v.quota.policy,
  };
}

/**
 * Every rule must allow. A refusal wins over an unavailable limiter (the answer is just as final
 * and tells the client when to come back); among refusals the longest wait is reported, since the
 * request cannot pass before every rule allows it. Otherwise the headers describe the rule with
 * the fewest requests left.
 */
function combine(verdicts: readonly Verdict[]): RateLimitOutcome {
  let denied: { v: Verdict; d: RateDecision } | undefined;
  let tightest: { v: Verdict; d: RateDecision } | undefined;
  let unavailable: Verdict | undefined;
  for (const v of verdicts) {
    const d = v.decision;
    if (d === 'unavailable') {
      unavailable ??= v;
    } else if (!d.allowed) {
      if (!denied || d.retryAfterMs > denied.d.retryAfterMs) denied = { v, d };
    } else if (!tightest || d.remaining < tightest.d.remaining) {
      tightest = { v, d };
    }
  }
  if (denied) {
    const retryAfter = Math.max(1, Math.ceil(denied.d.retryAfterMs / 1000));
    return {
      ok: false,
      status: 429,
      code: 'rate_limited',
      headers: { ...rateHeaders(denied.v, denied.d), 'Retry-After': String(retryAfter) },
      message: `rate limit "${denied.v.rule.name}" exceeded; retry in ${retryAfter} s`,
    };
  }
  if (unavailable) {
    return {
      ok: false,
      status: 503,
      code: 'rate_limiter_unavailable',
      headers: { 'Retry-After': '1' },
      message: `rate limit "${unavailable.rule.name}" cannot be checked (Redis unavailable) and fails closed`,
    };
  }
  return { ok: true, headers: tightest ? rateHeaders(tightest.v, tightest.d) : {} };
}

/**
 * Compiled when the runtime is built: keys, quotas and header values are prepared once, so a
 * request costs one key concatenation and one backend decision per rule.
 */
export function compileRateLimits(
  rules: readonly RateLimitPolicy[],
  scope: { routeId: string; service: string },
  backend: RateLimiterBackend,
): RouteRateLimits {
  if (rules.length === 0) return NO_RULES;
  const compiled = rules.map((r) => compileRule(r, scope));
  const only = compiled.length === 1 ? compiled[0] : undefined;
  return {
    count: compiled.length,
    check: only
      ? async (subject) => combine([await decideRule(only, subject, backend)])
      : async (subject) => combine(await Promise.all(compiled.map((r) => decideRule(r, subject, backend)))),
  };
}
