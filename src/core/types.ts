/** Domain types shared by several rooms. Everything here is plain, readonly, JSON-serialisable. */

export type HealthStatus = 'passing' | 'warning' | 'critical';

export type ProblemKind = 'tag' | 'route' | 'canary' | 'catalog' | 'policy' | 'consumer' | 'instance' | 'service' | 'build' | 'kv' | 'certificate' | 'fabio-kv' | 'rollout' | 'guard' | 'state-file';

/**
 * Something from outside that was rejected. Problems never stop the rest of a snapshot: the bad
 * item is skipped (or its last good value kept) and the problem is shown in `cgw status`.
 */
export interface Problem {
  readonly kind: ProblemKind;
  /** What it concerns: a service, a KV key, a watch name. */
  readonly subject: string;
  readonly message: string;
  /** When set, the last good value of `subject` is still in force. */
  readonly keptLastGood?: boolean;
}

export function problemKey(p: Problem): string {
  return `${p.kind}\u0000${p.subject}\u0000${p.message}`;
}

/** One registered instance of a service, as read from `/v1/health/service/<name>`. */
export interface ServiceInstance {
  readonly id: string;
  readonly service: string;
  readonly node: string;
  readonly address: string;
  readonly port: number;
  readonly tags: readonly string[];
  /** Consul service weights (`Weights.Passing`, `Weights.Warning`); Consul's default is 1/1. */
  readonly weights: { readonly passing: number; readonly warning: number };
  /** Service checks and node checks (serfHealth, maintenance); output is left out on purpose. */
  readonly checks: readonly { readonly id: string; readonly status: HealthStatus; readonly serviceId: string }[];
}

/** Service name → tags, from `/v1/catalog/services`. */
export type CatalogView = Readonly<Record<string, readonly string[]>>;

export interface KvEntry {
  readonly key: string;
  readonly value: string | null;
  readonly modifyIndex: number;
  /** Consul's opaque Flags when not 0 (cgw's commands mark what they write, core/kv-layout.ts). */
  readonly flags?: number;
  /** The stored bytes are not UTF-8 (set only by readers that check, see consul/schemas.ts). */
  readonly undecodable?: true;
}

/** Everything the watchers have seen; the only input of `buildSnapshot` besides options. */
export interface ConsulViews {
  readonly catalog: CatalogView;
  readonly health: ReadonlyMap<string, readonly ServiceInstance[]>;
  readonly kv: readonly KvEntry[];
  /** fabio's route keys (`--fabio-kv-key` and the keys under it); absent when not read. */
  readonly fabio?: readonly KvEntry[];
}

/** State of one Consul watch, for the admin API, `cgw status` and the watchdog. */
export interface WatchStatus {
  readonly name: string;
  readonly path: string;
  readonly index: number;
  readonly requests: number;
  readonly errors: number;
  readonly consecutiveErrors: number;
  readonly restarts: number;
  readonly lastSuccessAt: number | null;
  readonly lastChangeAt: number | null;
  readonly lastError: string | null;
  /** `X-Consul-KnownLeader` of the last answer: false means the cluster had no leader. */
  readonly knownLeader: boolean | null;
  /** `X-Consul-LastContact`: ms since the answering server last heard from the leader. */
  readonly lastContactMs: number | null;
  readonly state: 'starting' | 'ok' | 'failing';
}

/** How often a limit was reached and when last, for `cgw status`. */
export interface LimitHits {
  readonly count: number;
  readonly lastAt: string | null;
}

/** The proxy listener's limits as operators see them. */
export interface ListenerLimitsView {
  readonly maxConnections: number | null;
  readonly openConnections: number;
  readonly connectionsRefused: LimitHits;
  /** Per service: requests refused with 503 upstream_busy. */
  readonly upstreamBusy: Readonly<Record<string, LimitHits>>;
}

/** One endpoint as a data plane sees it: passive health and load. */
export interface EndpointHealthReport {
  readonly ejected: boolean;
  readonly ejectedUntil: number | null;
  readonly consecutiveFailures: number;
  readonly inflight: number;
}

/** One service as a data plane sees it: picker, breaker, ejections. */
export interface ServiceHealthReport {
  readonly picker: string | null;
  /** The circuit breaker's status (plain data), or null when the service has none yet. */
  readonly breaker: { readonly enabled: boolean; readonly state: string; readonly retryAfterMs: number; readonly [field: string]: unknown } | null;
  readonly ejected: number;
  readonly endpoints: Readonly<Record<string, EndpointHealthReport>>;
}

/**
 * What a data plane (this process, or one worker) reports to the admin API on request. Plain
 * data, so a worker can send it over IPC; detail per service only when asked for.
 */
export interface DataPlaneReport {
  readonly version: string | null;
  readonly limits: ListenerLimitsView;
  readonly rateLimiter: string;
  readonly circuitsNotClosed: readonly string[];
  readonly services: Readonly<Record<string, ServiceHealthReport>>;
  /** Certificates of the HTTPS listeners; null without --listen-tls. */
  readonly tls: TlsView | null;
  /** Upgraded (WebSocket) connections open now. */
  readonly websocket: WebSocketView;
  /** Per service under rollout, what this data plane counted in the rollout's window (absent from older workers). */
  readonly rollouts?: Readonly<Record<string, RolloutFiguresReport>>;
  /** With scope `figures`: every route's counts since the data plane started (requests, 5xx, cumulative latency buckets). */
  readonly routeTallies?: Readonly<Record<string, SubsetCounts>>;
}

export interface SubsetCounts {
  readonly requests: number;
  readonly errors: number;
  readonly buckets: readonly number[];
}

/** One service's rollout figures as a data plane counted them (see state/rollout-figures.ts). */
export interface RolloutFiguresReport {
  readonly window: string;
  /** By subset tag: requests, 5xx answers and cumulative latency bucket counts. */
  readonly subsets: Readonly<Record<string, { readonly requests: number; readonly errors: number; readonly buckets: readonly number[] }>>;
  /** Every canary endpoint is ejected by outlier detection in this data plane. */
  readonly canaryCircuitOpen: boolean;
}

/** Open upgraded connections: all of them, and per route id. */
export interface WebSocketView {
  readonly open: number;
  readonly byRoute: Readonly<Record<string, number>>;
}

/** A certificate in force (never its key). */
export interface CertificateInfo {
  /** The name it was loaded under (file base name). */
  readonly name: string;
  /** Where it came from, e.g. `file:/etc/cgw/api.pem`. */
  readonly source: string;
  readonly subject: string;
  /** DNS names it serves (subjectAltName; the CN only when it has none), lower case. */
  readonly names: readonly string[];
  readonly notBefore: string;
  readonly notAfter: string;
  /** `notAfter` as epoch milliseconds (for the expiry metric). */
  readonly expiresAtMs: number;
  readonly serial: string;
  readonly fingerprint256: string;
}

/** A certificate source that failed its checks; what served before keeps serving. */
export interface CertificateRejection {
  readonly source: string;
  readonly name: string;
  readonly error: string;
  /** When it was refused (ISO time). */
  readonly at: string;
  /** A good version of the same source keeps serving. */
  readonly keptLastGood: boolean;
}

export interface TlsView {
  readonly certificates: readonly CertificateInfo[];
  readonly rejected: readonly CertificateRejection[];
  /** The certificate for clients without a matching server name, by name. */
  readonly default: string | null;
  /** Client certificates (`--tls-client-auth`); absent when none are asked for. */
  readonly clientAuth?: ClientAuthView;
}

/** How HTTPS listeners ask for client certificates, and the CAs they must chain to. */
export interface ClientAuthView {
  readonly mode: 'request' | 'require';
  /** The --tls-client-ca file. */
  readonly caFile: string;
  readonly authorities: readonly { readonly subject: string; readonly notAfter: string; readonly fingerprint256: string }[];
  /** The file changed into something refused; the authorities above keep verifying. */
  readonly refused?: { readonly error: string; readonly at: string };
}

/** Which services a report details: none, all, or one. */
export type ReportScope = { readonly kind: 'summary' } | { readonly kind: 'figures' } | { readonly kind: 'services' } | { readonly kind: 'service'; readonly name: string };
