import type { DocumentInForce, PolicySet } from './resolve.ts';
import {
  outlierSchema,
  retriesSchema,
  websocketSchema,
  type AuthorizePolicy,
  type CachePolicy,
  type AuthPolicy,
  type CircuitBreakerPolicy,
  type DiscoveryPolicy,
  type HstsPolicy,
  type LimitsPolicy,
  type MirrorPolicy,
  type OutlierPolicy,
  type PolicyDocument,
  type RateLimitPolicy,
  type RetriesPolicy,
  type StickinessPolicy,
  type TimeoutsPolicy,
  type WebSocketPolicy,
} from './schema.ts';

/**
 * The policy a route or service actually runs with: each section taken whole from the most
 * specific document that has it (route → service → defaults), else the built-in default. The
 * `sources` record names the document each section came from, for `cgw policies` and `cgw routes`.
 */
export interface RoutePolicy {
  readonly auth: AuthPolicy | null;
  readonly authorize: AuthorizePolicy | null;
  readonly rateLimits: readonly RateLimitPolicy[];
  readonly timeouts: TimeoutsPolicy;
  readonly retries: RetriesPolicy;
  readonly limits: LimitsPolicy;
  /** Strict-Transport-Security for responses over TLS, or null. */
  readonly hsts: HstsPolicy | null;
  /** Plain-HTTP requests are redirected to HTTPS. */
  readonly redirectHttps: boolean;
  readonly websocket: WebSocketPolicy;
  /** Shadow traffic of the route, or null. */
  readonly mirror: MirrorPolicy | null;
  /** The response cache of the route, or null (no per-request work then). */
  readonly cache: CachePolicy | null;
  readonly sources: Readonly<Record<string, string>>;
}

export interface ServicePolicy {
  readonly outlierDetection: OutlierPolicy;
  readonly circuitBreaker: CircuitBreakerPolicy | null;
  readonly discovery: DiscoveryPolicy;
  /** Connections are pooled per service endpoint, so the connect timeout is a service setting. */
  readonly connectTimeout: number | null;
  /** Canary subsets held per client (cookie or header), or null. */
  readonly stickiness: StickinessPolicy | null;
  readonly sources: Readonly<Record<string, string>>;
}

/** The gateway's behaviour before issue 3: one retry elsewhere for safe requests that never reached the app. */
export const DEFAULT_RETRIES: RetriesPolicy = retriesSchema.parse({ attempts: 1, backoff: { base: '0ms', max: '0ms' }, maxBodyBytes: 0 });
export const DEFAULT_OUTLIER: OutlierPolicy = outlierSchema.parse({});
export const DEFAULT_WEBSOCKET: WebSocketPolicy = websocketSchema.parse({});
export const DEFAULT_DISCOVERY: DiscoveryPolicy = { mode: 'watch', interval: 30_000 };

export interface PolicyIndex {
  readonly defaults: DocumentInForce | undefined;
  readonly services: ReadonlyMap<string, DocumentInForce>;
  readonly routes: ReadonlyMap<string, DocumentInForce>;
}

export function indexPolicies(set: PolicySet): PolicyIndex {
  let defaults: DocumentInForce | undefined;
  const services = new Map<string, DocumentInForce>();
  const routes = new Map<string, DocumentInForce>();
  for (const d of set.documents) {
    if (d.parsed.kind !== 'policy') continue;
    const a = d.parsed.doc.appliesTo;
    if (a === 'defaults') defaults = d;
    else if ('service' in a) services.set(a.service, d);
    else routes.set(a.route, d);
  }
  return { defaults, services, routes };
}

type Chain = readonly (DocumentInForce | undefined)[];

function pick<K extends keyof PolicyDocument>(chain: Chain, section: K, sources: Record<string, string>): PolicyDocument[K] | undefined {
  for (const d of chain) {
    if (d?.parsed.kind !== 'policy') continue;
    const value = d.parsed.doc[section];
    if (value !== undefined) {
      sources[section] = d.id;
      return value;
    }
  }
  return undefined;
}

export function routePolicy(index: PolicyIndex, service: string, routeId: string): RoutePolicy {
  const chain: Chain = [index.routes.get(routeId), index.services.get(service), index.defaults];
  const sources: Record<string, string> = {};
  return {
    auth: pick(chain, 'auth', sources) ?? null,
    authorize: pick(chain, 'authorize', sources) ?? null,
    rateLimits: pick(chain, 'rateLimits', sources) ?? [],
    timeouts: pick(chain, 'timeouts', sources) ?? {},
    retries: pick(chain, 'retries', sources) ?? DEFAULT_RETRIES,
    limits: pick(chain, 'limits', sources) ?? {},
    hsts: pick(chain, 'hsts', sources) ?? null,
    redirectHttps: pick(chain, 'redirectHttps', sources) ?? false,
    websocket: pick(chain, 'websocket', sources) ?? DEFAULT_WEBSOCKET,
    mirror: pick(chain, 'mirror', sources) ?? null,
    cache: pick(chain, 'cache', sources) ?? null,
    sources,
  };
}

export function servicePolicy(index: PolicyIndex, service: string): ServicePolicy {
  const chain: Chain = [index.services.get(service), index.defaults];
  const sources: Record<string, string> = {};
  const breaker = pick(chain, 'circuitBreaker', sources);
  const connectSources: Record<string, string> = {};
  const connectTimeout = pick(chain, 'timeouts', connectSources)?.connect ?? null;
  if (connectTimeout !== null && connectSources.timeouts) sources.connectTimeout = connectSources.timeouts;
  return {
    outlierDetection: pick(chain, 'outlierDetection', sources) ?? DEFAULT_OUTLIER,
    circuitBreaker: breaker && breaker.enabled ? breaker : null,
    discovery: pick(chain, 'discovery', sources) ?? DEFAULT_DISCOVERY,
    connectTimeout,
    stickiness: pick(chain, 'stickiness', sources) ?? null,
    sources,
  };
}
