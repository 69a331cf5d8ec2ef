import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every metric the gateway exports, on one registry (never prom-client's global one, so two
 * gateways in one process, as in tests, do not collide). Names are documented in the README.
 */
export function createMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  /** Set by the owners of lazily updated state, called when the matching metric is scraped. */
  const hooks: { beforeCircuitScrape?: () => void; beforeWebSocketScrape?: () => void; consulApplyLagSeconds?: () => number; stateFileAgeSeconds?: () => number } = {};
  // Standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes, ...), so stock Node.js
  // dashboards work unchanged.
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });

  const metrics = {
    registry,
    hooks,
    requests: new Counter({
      name: 'cgw_requests_total',
      help: 'Proxied requests by route, service and HTTP status code',
      labelNames: ['route', 'service', 'code'] as const,
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: 'cgw_request_duration_seconds',
      help: 'Time from request received to response headers sent upstream-side complete',
      labelNames: ['route', 'service'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    upstreamRetries: new Counter({
      name: 'cgw_upstream_retries_total',
      help: 'Requests retried on another endpoint (connect failure, reset, timeout or a retryable status)',
      labelNames: ['service'] as const,
      registers: [registry],
    }),
    stickySubsets: new Counter({
      name: 'cgw_sticky_subsets_total',
      help: 'Requests to a service with a stickiness policy and canary weights: kept on the subset the client holds, or assigned one by weight (none held, or the one held cannot hold clients now)',
      labelNames: ['service', 'outcome'] as const,
      registers: [registry],
    }),
    endpointsHealthy: new Gauge({
      name: 'cgw_service_endpoints_healthy',
      help: 'Endpoints of a service that receive traffic (health-filtered)',
      labelNames: ['service'] as const,
      registers: [registry],
      // Every worker sets the same value from the snapshot (or its own view of passive health): the maximum, not the sum.
      aggregator: 'max',
    }),
    endpointsTotal: new Gauge({
      name: 'cgw_service_endpoints_total',
      help: 'Endpoints of a service registered in Consul, whatever their health',
      labelNames: ['service'] as const,
      registers: [registry],
      // Every worker sets the same value from the snapshot (or its own view of passive health): the maximum, not the sum.
      aggregator: 'max',
    }),
    watchRequests: new Counter({
      name: 'cgw_watch_requests_total',
      help: 'HTTP requests sent to Consul by each watch',
      labelNames: ['watch'] as const,
      registers: [registry],
    }),
    watchErrors: new Counter({
      name: 'cgw_watch_errors_total',
      help: 'Failed Consul requests by watch',
      labelNames: ['watch'] as const,
      registers: [registry],
    }),
    watchLastSuccess: new Gauge({
      name: 'cgw_watch_last_success_timestamp_seconds',
      help: 'Unix time of the last successful Consul response per watch',
      labelNames: ['watch'] as const,
      registers: [registry],
    }),
    watchRestarts: new Counter({
      name: 'cgw_watch_restarts_total',
      help: 'Watches restarted by the watchdog after being silent too long',
      labelNames: ['watch'] as const,
      registers: [registry],
    }),
    watches: new Gauge({
      name: 'cgw_watches',
      help: 'Active Consul watches by kind',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    consulRefusals: new Counter({
      name: 'cgw_consul_refusals_total',
      help: 'Consul requests refused by the agent\'s per-client connection limit (reset at once, or 429)',
      registers: [registry],
    }),
    configRejected: new Counter({
      name: 'cgw_config_rejected_total',
      help: 'Rejected configuration items (bad tags, invalid KV values) by kind',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    problems: new Gauge({
      name: 'cgw_config_problems',
      help: 'Configuration problems currently in force, by kind',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    snapshotsPublished: new Counter({
      name: 'cgw_snapshots_published_total',
      help: 'Snapshots applied (content changed)',
      registers: [registry],
    }),
    snapshotTimestamp: new Gauge({
      name: 'cgw_snapshot_timestamp_seconds',
      help: 'Unix time the snapshot in force was applied',
      registers: [registry],
    }),
    routes: new Gauge({
      name: 'cgw_routes',
      help: 'Routes in force',
      registers: [registry],
    }),
    authRejections: new Counter({
      name: 'cgw_auth_rejections_total',
      help: 'Requests refused by authentication or authorization, by route and reason (token_expired, invalid_api_key, insufficient_scope, ...)',
      labelNames: ['route', 'reason'] as const,
      registers: [registry],
    }),
    rateLimitDecisions: new Counter({
      name: 'cgw_rate_limit_decisions_total',
      help: 'Rate limit decisions by route and result (allowed, limited, unavailable)',
      labelNames: ['route', 'result'] as const,
      registers: [registry],
    }),
    rateLimitBackend: new Gauge({
      name: 'cgw_rate_limit_backend',
      help: '1 for the rate-limit backend in use: redis, local (Redis unreachable, counting per gateway) or none (no --redis)',
      labelNames: ['state'] as const,
      registers: [registry],
      // Every worker sets the same value from the snapshot (or its own view of passive health): the maximum, not the sum.
      aggregator: 'max',
    }),
    requestLimitRejections: new Counter({
      name: 'cgw_request_limit_rejections_total',
      help: 'Requests refused for size, by route and kind (body, headers)',
      labelNames: ['route', 'kind'] as const,
      registers: [registry],
    }),
    ipDenied: new Counter({
      name: 'cgw_ip_denied_total',
      help: 'Requests refused by a route\'s allow= or deny= client IP rules (403 ip_denied), by route',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    retryBudgetExhausted: new Counter({
      name: 'cgw_retry_budget_exhausted_total',
      help: 'Retries not made because the retry budget of the route was spent (labelled with its service)',
      labelNames: ['service'] as const,
      registers: [registry],
    }),
    circuitState: new Gauge({
      name: 'cgw_circuit_state',
      help: 'Circuit breaker state per service: 0 closed, 1 open, 2 half-open',
      labelNames: ['service'] as const,
      registers: [registry],
      // Every worker sets the same value from the snapshot (or its own view of passive health): the maximum, not the sum.
      aggregator: 'max',
      // Breakers move from open to half-open lazily, on the next request; a scrape must not show a
      // circuit open for minutes on an idle service, so it asks them first.
      collect() {
        hooks.beforeCircuitScrape?.();
      },
    }),
    circuitTransitions: new Counter({
      name: 'cgw_circuit_transitions_total',
      help: 'Circuit breaker state changes by service and new state',
      labelNames: ['service', 'state'] as const,
      registers: [registry],
    }),
    outlierEjections: new Counter({
      name: 'cgw_outlier_ejections_total',
      help: 'Endpoints ejected by passive outlier detection',
      labelNames: ['service'] as const,
      registers: [registry],
    }),
    endpointsEjected: new Gauge({
      name: 'cgw_service_endpoints_ejected',
      help: 'Endpoints of a service currently ejected by outlier detection',
      labelNames: ['service'] as const,
      registers: [registry],
      // Every worker sets the same value from the snapshot (or its own view of passive health): the maximum, not the sum.
      aggregator: 'max',
    }),
    policyDocuments: new Gauge({
      name: 'cgw_policy_documents',
      help: 'Policy and route documents in force by kind and origin (file, kv)',
      labelNames: ['kind', 'origin'] as const,
      registers: [registry],
    }),
    canaryWeight: new Gauge({
      name: 'cgw_canary_weight_percent',
      help: 'Share of a service\'s traffic each canary subset gets in the snapshot in force (effective weight: subsets without a healthy endpoint are 0 and the rest renormalised)',
      labelNames: ['service', 'subset'] as const,
      registers: [registry],
    }),
    rolloutStep: new Gauge({
      name: 'cgw_rollout_step',
      help: 'Rollouts under way: the current step (0-based) by service and state (progressing, paused); gone once the rollout ends',
      labelNames: ['service', 'state'] as const,
      registers: [registry],
    }),
    rolloutCanaryWeight: new Gauge({
      name: 'cgw_rollout_canary_weight_percent',
      help: 'Rollouts under way: the canary\'s share at the current step, by service',
      labelNames: ['service'] as const,
      registers: [registry],
    }),
    consumers: new Gauge({
      name: 'cgw_consumers',
      help: 'API-key consumers in force',
      registers: [registry],
    }),
    internalErrors: new Counter({
      name: 'cgw_internal_errors_total',
      help: 'Bugs caught before they could end the process, by component (proxy, admin, snapshot, process)',
      labelNames: ['component'] as const,
      registers: [registry],
    }),
    otlpSpansExported: new Counter({
      name: 'cgw_otlp_spans_exported_total',
      help: 'Request spans the OTLP/HTTP receiver accepted (--otlp-endpoint)',
      registers: [registry],
    }),
    otlpExportFailures: new Counter({
      name: 'cgw_otlp_export_failures_total',
      help: 'Span batches the OTLP/HTTP receiver did not accept (down, slow, or an error status); requests are never affected',
      registers: [registry],
    }),
    otlpSpansDropped: new Counter({
      name: 'cgw_otlp_spans_dropped_total',
      help: 'Sampled request spans not exported, by reason: queue_full (the export queue was at its bound) or export_failed (their batch failed)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    clientConnections: new Gauge({
      name: 'cgw_client_connections',
      help: 'Client connections open on the proxy listener',
      registers: [registry],
    }),
    tlsHandshakeErrors: new Counter({
      name: 'cgw_tls_handshake_errors_total',
      help: 'TLS handshakes on --listen-tls that failed (no common version or cipher, no certificate for the name, the client gave up)',
      registers: [registry],
    }),
    tlsCertificateExpiry: new Gauge({
      name: 'cgw_tls_certificate_expiry_seconds',
      help: 'When each certificate in force expires (Unix seconds), by name and source: alert before it does',
      labelNames: ['name', 'source'] as const,
      registers: [registry],
      // Every data plane loads the same files: the same value from each, not their sum.
      aggregator: 'max',
    }),
    rolloutDecisions: new Counter({
      name: 'cgw_rollout_decisions_total',
      help: 'Rollout decisions this gateway took as its driver (advanced, promoted, rolled-back, waiting)',
      labelNames: ['service', 'event'] as const,
      registers: [registry],
    }),
    guardDecisions: new Counter({
      name: 'cgw_guard_decisions_total',
      help: 'Guarded configuration changes this gateway decided: reverted, passed, or refused (an invalid guard document)',
      labelNames: ['outcome'] as const,
      registers: [registry],
      aggregator: 'max',
    }),
    rolloutDriving: new Gauge({
      name: 'cgw_rollout_driving',
      help: "1 while this gateway holds the rollout's session lock and drives it",
      labelNames: ['service'] as const,
      registers: [registry],
      aggregator: 'max',
    }),
    rolloutFiguresWrites: new Counter({
      name: 'cgw_rollout_figures_writes_total',
      help: "This gateway's rollout figures written to Consul KV, by outcome (ok, failed)",
      labelNames: ['outcome'] as const,
      registers: [registry],
      aggregator: 'max',
    }),
    rolloutFiguresRejected: new Counter({
      name: 'cgw_rollout_figures_rejected_total',
      help: "Other gateways' figure records the driver refused (invalid, oversized)",
      registers: [registry],
      aggregator: 'max',
    }),
    rolloutDriverErrors: new Counter({
      name: 'cgw_rollout_driver_errors_total',
      help: 'Failed Consul calls of the rollout driver (session, lock, read, write); retried on the next tick',
      labelNames: ['operation'] as const,
      registers: [registry],
      aggregator: 'max',
    }),
    tlsCertificateRejections: new Counter({
      name: 'cgw_tls_certificate_rejections_total',
      help: 'Certificates refused (malformed, expired, key mismatch, unreadable); the last good one of the source keeps serving',
      labelNames: ['source'] as const,
      registers: [registry],
      aggregator: 'max',
    }),
    tlsClientCertificates: new Counter({
      name: 'cgw_tls_client_certificates_total',
      help: 'TLS connections by client certificate (--tls-client-auth): verified, unverified (request mode), absent, refused (handshake ended by require mode)',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    httpsRedirects: new Counter({
      name: 'cgw_https_redirects_total',
      help: 'Plain-HTTP requests answered with a redirect to HTTPS (redirect-https), by route',
      labelNames: ['route'] as const,
      registers: [registry],
    }),
    http2Sessions: new Counter({
      name: 'cgw_http2_sessions_total',
      help: 'HTTP/2 client sessions opened (h2 by ALPN on --listen-tls, prior-knowledge h2c with --h2c)',
      registers: [registry],
    }),
    http2SessionsOpen: new Gauge({
      name: 'cgw_http2_sessions_open',
      help: 'HTTP/2 client sessions open now',
      registers: [registry],
    }),
    http2Streams: new Counter({
      name: 'cgw_http2_streams_total',
      help: 'HTTP/2 streams (requests) clients opened',
      registers: [registry],
    }),
    http2StreamResets: new Counter({
      name: 'cgw_http2_stream_resets_total',
      help: 'HTTP/2 streams the client reset (RST_STREAM) before their response was complete',
      registers: [registry],
    }),
    http2SessionsRefused: new Counter({
      name: 'cgw_http2_sessions_refused_total',
      help: 'HTTP/2 sessions the gateway ended for abuse: rapid_reset (too many streams reset by the client, CVE-2023-44487), protocol (a frame or session error), idle (nothing sent in time)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    grpcResponses: new Counter({
      name: 'cgw_grpc_responses_total',
      help: 'gRPC calls on proto=grpc/grpcs routes by route, service and grpc-status (from the upstream trailers, or the gateway\'s own answer)',
      labelNames: ['route', 'service', 'grpc_status'] as const,
      registers: [registry],
    }),
    clientConnectionsRefused: new Counter({
      name: 'cgw_client_connections_refused_total',
      help: 'Client connections closed at once because --max-connections were open',
      registers: [registry],
    }),
    upstreamBusy: new Counter({
      name: 'cgw_upstream_busy_total',
      help: 'Requests refused with 503 upstream_busy: every endpoint of the service was at --max-requests-per-endpoint',
      labelNames: ['service'] as const,
      registers: [registry],
    }),
    workers: new Gauge({
      name: 'cgw_workers',
      help: 'Worker processes running the data plane (0 with --workers 1: the one process serves)',
      registers: [registry],
    }),
    workerRestarts: new Counter({
      name: 'cgw_worker_restarts_total',
      help: 'Workers that died and were replaced',
      registers: [registry],
    }),
    websocketConnections: new Gauge({
      name: 'cgw_websocket_connections',
      help: 'Upgraded (WebSocket) connections open, by route and service',
      labelNames: ['route', 'service'] as const,
      registers: [registry],
    }),
    websocketUpgrades: new Counter({
      name: 'cgw_websocket_upgrades_total',
      help: 'WebSocket handshakes by route and result (upgraded, refused by the gateway, upstream_refused: answered without 101, upstream_failed: unreachable or too slow, client_gone)',
      labelNames: ['route', 'result'] as const,
      registers: [registry],
    }),
    websocketBytes: new Counter({
      name: 'cgw_websocket_bytes_total',
      help: 'Bytes relayed on upgraded connections, by service and direction (to_upstream, to_client)',
      labelNames: ['service', 'direction'] as const,
      registers: [registry],
      // Relays count locally and add their counts when scraped, not per chunk.
      collect() {
        hooks.beforeWebSocketScrape?.();
      },
    }),
    websocketCloses: new Counter({
      name: 'cgw_websocket_closes_total',
      help: 'Upgraded connections ended, by service and reason (client, upstream, idle, lifetime, drain, protocol_error, error)',
      labelNames: ['service', 'reason'] as const,
      registers: [registry],
    }),
    mirrorRequests: new Counter({
      name: 'cgw_mirror_requests_total',
      help: 'Shadow (mirror) requests by route, target and outcome: sent, then ok (answered below 500), status_5xx, error (connection failed or reset), timeout; or not sent: dropped_cap (--mirror-max-in-flight reached), skipped_body (body streamed or over maxBodyBytes), no_target (no healthy instance)',
      labelNames: ['route', 'target', 'outcome'] as const,
      registers: [registry],
    }),
    mirrorDuration: new Histogram({
      name: 'cgw_mirror_duration_seconds',
      help: 'Time a shadow request took until its answer was complete (answered ones only), by route and target',
      labelNames: ['route', 'target'] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    mirrorInFlight: new Gauge({
      name: 'cgw_mirror_in_flight',
      help: 'Shadow (mirror) requests in flight now (at most --mirror-max-in-flight per process)',
      registers: [registry],
    }),
    historyWrites: new Counter({
      name: 'cgw_history_writes_total',
      help: 'Configuration history rounds by outcome: written (a new entry), recorded (another gateway wrote it), behind (a newer view is recorded), failed (retried), pruned (an old entry deleted)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    adminWrites: new Counter({
      name: 'cgw_admin_writes_total',
      help: 'Writes through the admin API (the dashboard) by action (canary_set, canary_clear, rollout_pause, ...) and outcome (ok, refused, unauthorized, conflict, failed)',
      labelNames: ['action', 'outcome'] as const,
      registers: [registry],
    }),
    adminEventClients: new Gauge({
      name: 'cgw_admin_event_clients',
      help: 'Clients reading the admin API event stream (GET /v1/events) now',
      registers: [registry],
    }),
    adminEventClientsRefused: new Counter({
      name: 'cgw_admin_event_clients_refused_total',
      help: 'Event stream clients refused (503) because as many as allowed were connected',
      registers: [registry],
    }),
    consulApplyLag: new Gauge({
      name: 'cgw_consul_apply_lag_seconds',
      help: 'How long Consul may have had a change this gateway has not applied: since a watch handed on a change not yet in the snapshot in force, or since the catalog or KV watch last succeeded while it fails; 0 when up to date',
      registers: [registry],
      // Only the process running the control plane sets it (workers leave it at 0).
      aggregator: 'max',
      collect() {
        this.set(hooks.consulApplyLagSeconds?.() ?? 0);
      },
    }),
    selfRegistrationFailures: new Counter({
      name: 'cgw_self_registration_failures_total',
      help: "Failed agent calls of the gateway's own Consul registration (register, pass, deregister); retried with backoff, serving is not affected",
      labelNames: ['operation'] as const,
      registers: [registry],
    }),
    snapshotBuildFailures: new Counter({
      name: 'cgw_snapshot_build_failures_total',
      help: 'Snapshot builds or runtime compilations that failed; the last good configuration stayed in force',
      registers: [registry],
    }),
    // --state-file: only the process running the control plane sets these (workers leave them at 0).
    stateFileInForce: new Gauge({
      name: 'cgw_state_file_in_force',
      help: '1 while the gateway serves the snapshot read from --state-file because Consul was not reached at start (stale); 0 once a live snapshot is in force',
      registers: [registry],
      aggregator: 'max',
    }),
    stateFileAge: new Gauge({
      name: 'cgw_state_file_age_seconds',
      help: 'While the state file is in force: seconds since its snapshot was written; 0 otherwise',
      registers: [registry],
      aggregator: 'max',
      collect() {
        this.set(hooks.stateFileAgeSeconds?.() ?? 0);
      },
    }),
    stateFileWrites: new Counter({
      name: 'cgw_state_file_writes_total',
      help: 'State file writes by outcome: written, failed (retried), not_ours (the file at the path is not this gateway\'s and is never overwritten)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    stateFileReads: new Counter({
      name: 'cgw_state_file_reads_total',
      help: 'State file reads at start by outcome: valid, absent, unreadable, corrupt, foreign, uncompilable (valid but the data plane refused it)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    cacheRequests: new Counter({
      name: 'cgw_cache_requests_total',
      help: 'Requests of routes with a cache policy by result: hit, stale (served within the client\'s max-stale), coalesced (served from the response of a concurrent miss), miss, bypass, not_modified (304 from an entry), only_if_cached (504)',
      labelNames: ['route', 'result'] as const,
      registers: [registry],
    }),
    cacheBytes: new Gauge({
      name: 'cgw_cache_bytes',
      help: 'Bytes (bodies and fields) held by the in-memory response cache of this process (each worker has its own)',
      registers: [registry],
    }),
    cacheEntries: new Gauge({
      name: 'cgw_cache_entries',
      help: 'Keys held by the in-memory response cache of this process (each with up to 8 Vary variants)',
      registers: [registry],
    }),
    cacheEvictions: new Counter({
      name: 'cgw_cache_evictions_total',
      help: 'Responses dropped from the in-memory cache: size (room for newer ones), purge (cgw cache purge), policy (the route\'s cache policy changed or went away)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    cacheL2: new Counter({
      name: 'cgw_cache_l2_requests_total',
      help: 'Calls to the Redis (L2) response cache by operation (get, set) and result (hit, miss, ok, error, timeout, invalid); failures fall back to memory and the upstream',
      labelNames: ['operation', 'result'] as const,
      registers: [registry],
    }),
  };
  return metrics;
}

export type Metrics = ReturnType<typeof createMetrics>;

/** Deletes every series of a metric whose labels match `subset`, e.g. all series of a removed service. */
export function removeSeriesMatching(
  metric: { get(): Promise<{ values: { labels: Record<string, string | number> }[] }>; remove(labels: Record<string, string | number>): void },
  subset: Record<string, string>,
): Promise<void> {
  return metric.get().then(({ values }) => {
    for (const { labels } of values) {
      if (Object.entries(subset).every(([k, v]) => labels[k] === v)) metric.remove(labels);
    }
  });
}
