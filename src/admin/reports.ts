import type { DataPlaneReport, EndpointHealthReport, RolloutFiguresReport, ServiceHealthReport, SubsetCounts } from '../core/types.ts';

const BREAKER_RANK: Record<string, number> = { closed: 0, half_open: 1, open: 2 };

/**
 * One report from the reports of every data plane (one per worker): counts add up, ejections and
 * breakers show the worst worker (each worker learns passive health on its own), in-flight
 * requests add up.
 */
export function mergeReports(reports: readonly DataPlaneReport[]): DataPlaneReport | undefined {
  const [first, ...rest] = reports;
  if (!first || rest.length === 0) return first;
  const services: Record<string, ServiceHealthReport> = Object.create(null) as Record<string, ServiceHealthReport>;
  const busy: Record<string, { count: number; lastAt: string | null }> = Object.create(null) as Record<string, { count: number; lastAt: string | null }>;
  let maxConnections: number | null = 0;
  let open = 0;
  let refusedCount = 0;
  let refusedAt: string | null = null;
  let websocketsOpen = 0;
  const websocketsByRoute: Record<string, number> = Object.create(null) as Record<string, number>;
  for (const r of reports) {
    // Optional: a worker of an older build reports none.
    if (r.websocket) {
      websocketsOpen += r.websocket.open;
      for (const [route, n] of Object.entries(r.websocket.byRoute)) websocketsByRoute[route] = (websocketsByRoute[route] ?? 0) + n;
    }
    maxConnections = maxConnections === null || r.limits.maxConnections === null ? null : maxConnections + r.limits.maxConnections;
    open += r.limits.openConnections;
    refusedCount += r.limits.connectionsRefused.count;
    refusedAt = later(refusedAt, r.limits.connectionsRefused.lastAt);
    for (const [service, hit] of Object.entries(r.limits.upstreamBusy)) {
      const sum = busy[service] ?? { count: 0, lastAt: null };
      busy[service] = { count: sum.count + hit.count, lastAt: later(sum.lastAt, hit.lastAt) };
    }
    for (const [name, s] of Object.entries(r.services)) services[name] = Object.hasOwn(services, name) ? mergeService(services[name] as ServiceHealthReport, s) : s;
  }
  return {
    version: reports.every((r) => r.version === first.version) ? first.version : null,
    limits: { maxConnections, openConnections: open, connectionsRefused: { count: refusedCount, lastAt: refusedAt }, upstreamBusy: busy },
    rateLimiter: reports.every((r) => r.rateLimiter === first.rateLimiter) ? first.rateLimiter : reports.map((r) => r.rateLimiter).join(','),
    circuitsNotClosed: [...new Set(reports.flatMap((r) => r.circuitsNotClosed))].sort(),
    services,
    // Every worker loads the same certificate files: the first report that has them speaks for all.
    tls: reports.find((r) => r.tls !== null)?.tls ?? null,
    websocket: { open: websocketsOpen, byRoute: websocketsByRoute },
    rollouts: mergeRolloutFigures(reports),
    ...(reports.some((r) => r.routeTallies) ? { routeTallies: sumCounts(reports.map((r) => r.routeTallies ?? {})) } : {}),
  };
}

/** Counts by key (a subset, a route) added up over the workers. */
export function sumCounts(parts: readonly Readonly<Record<string, SubsetCounts>>[]): Record<string, SubsetCounts> {
  const out = Object.create(null) as Record<string, { requests: number; errors: number; buckets: number[] }>;
  for (const part of parts) {
    for (const [key, s] of Object.entries(part)) {
      const seen = Object.hasOwn(out, key) ? out[key] : undefined;
      out[key] = seen
        ? { requests: seen.requests + s.requests, errors: seen.errors + s.errors, buckets: seen.buckets.map((c, i) => c + (s.buckets[i] ?? 0)) }
        : { requests: s.requests, errors: s.errors, buckets: [...s.buckets] };
    }
  }
  return out;
}

/**
 * The workers' counts of one gateway added up, per service and subset. A worker still counting an
 * older window (it has not got the snapshot that moved the step) is left out of the newest one.
 */
export function mergeRolloutFigures(reports: readonly DataPlaneReport[]): Record<string, RolloutFiguresReport> {
  const out = Object.create(null) as Record<string, RolloutFiguresReport>;
  for (const r of reports) {
    for (const [service, figures] of Object.entries(r.rollouts ?? {})) {
      const sum = Object.hasOwn(out, service) ? out[service] : undefined;
      if (!sum || figures.window > sum.window) {
        out[service] = figures;
        continue;
      }
      if (figures.window < sum.window) continue;
      out[service] = { window: sum.window, subsets: sumCounts([sum.subsets, figures.subsets]), canaryCircuitOpen: sum.canaryCircuitOpen || figures.canaryCircuitOpen };
    }
  }
  return out;
}

function mergeService(a: ServiceHealthReport, b: ServiceHealthReport): ServiceHealthReport {
  const endpoints: Record<string, EndpointHealthReport> = Object.create(null) as Record<string, EndpointHealthReport>;
  for (const [key, e] of Object.entries(a.endpoints)) endpoints[key] = e;
  for (const [key, e] of Object.entries(b.endpoints)) {
    const x = Object.hasOwn(endpoints, key) ? endpoints[key] : undefined;
    endpoints[key] = x
      ? {
          ejected: x.ejected || e.ejected,
          ejectedUntil: Math.max(x.ejectedUntil ?? 0, e.ejectedUntil ?? 0) || null,
          consecutiveFailures: Math.max(x.consecutiveFailures, e.consecutiveFailures),
          inflight: x.inflight + e.inflight,
        }
      : e;
  }
  const worse = (BREAKER_RANK[b.breaker?.state ?? 'closed'] ?? 0) > (BREAKER_RANK[a.breaker?.state ?? 'closed'] ?? 0) ? b.breaker : a.breaker;
  return { picker: a.picker ?? b.picker, breaker: worse ?? b.breaker, ejected: Math.max(a.ejected, b.ejected), endpoints };
}

function later(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return a > b ? a : b;
}
