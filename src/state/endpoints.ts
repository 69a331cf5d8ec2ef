import { isIP } from 'node:net';
import type { HealthStatus, Problem, ServiceInstance } from '../core/types.ts';
import type { RouteDocument } from '../policy/schema.ts';

/** One instance as the data plane dials it. */
export interface EndpointSnapshot {
  readonly id: string;
  readonly node: string;
  readonly address: string;
  readonly port: number;
  /** `address:port` (`[v6]:port`); endpoints with the same key share one connection pool. */
  readonly key: string;
  readonly tags: readonly string[];
  readonly status: HealthStatus;
  /** Traffic weight: Consul's `Weights.Passing` or `Weights.Warning`, 0 when not admitted. */
  readonly weight: number;
  /** https: static https upstreams, and instances of a service routed with proto=https/grpcs; absent means http. */
  readonly scheme?: 'https';
  /** `tlsskipverify=true`: the instance's certificate is not verified. */
  readonly tlsSkipVerify?: true;
  /** TLS server name (SNI, and the name verified) when a `host=` option names one; else the address. */
  readonly serverName?: string;
}

/**
 * How a service's instances are dialled, from its route tags (`proto=`, `tlsskipverify=`, `host=`).
 * One per service: a service's port speaks one protocol, and its endpoints share one balancer.
 */
export interface UpstreamTransport {
  readonly scheme: 'http' | 'https';
  readonly tlsSkipVerify: boolean;
  readonly serverName: string | null;
}

export const PLAIN_HTTP: UpstreamTransport = Object.freeze({ scheme: 'http', tlsSkipVerify: false, serverName: null });

export function transportKey(t: UpstreamTransport): string {
  return t.scheme === 'http' ? 'http' : `https|${t.tlsSkipVerify ? 'insecure' : 'verify'}|${t.serverName ?? ''}`;
}

const STATUS_RANK: Record<HealthStatus, number> = { passing: 0, warning: 1, critical: 2 };

/** An instance is as healthy as its worst check: service checks, node checks, maintenance. */
export function instanceStatus(instance: ServiceInstance): HealthStatus {
  let worst: HealthStatus = 'passing';
  for (const c of instance.checks) if (STATUS_RANK[c.status] > STATUS_RANK[worst]) worst = c.status;
  return worst;
}

const LABEL = '[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?';
const HOST_NAME = new RegExp(`^(?=.{1,253}\\.?$)${LABEL}(?:\\.${LABEL})*\\.?$`);
/** Largest weight honoured; Consul does not bound it, and a schedule has to be built from it. */
const MAX_WEIGHT = 1_000_000;

/**
 * Why an address and port cannot be dialled, or null. Consul accepts any string as an address
 * (`127.0.0.1:9`, `http://x`, a blank) and any port; one such instance must be skipped, never
 * allowed to fail the build of every service.
 */
export function undialable(address: string, port: number): string | null {
  if (!Number.isInteger(port) || port < 1 || port > 65535) return `port ${String(port)} is not 1-65535`;
  if (address === '') return 'no address (neither the service nor its node has one)';
  const family = isIP(address);
  if (family === 0) {
    // A name whose last label is all digits is read as a (bad) IPv4 address by URL parsers.
    if (!HOST_NAME.test(address) || /(^|\.)\d+\.?$/.test(address)) return `address ${quoted(address)} is not an IP address or host name`;
  } else if (address.includes('%')) {
    return `address ${quoted(address)} has a zone id, which cannot be used in a URL`;
  }
  try {
    new URL(`http://${family === 6 ? `[${address}]` : address}:${port}`);
  } catch {
    return `address ${quoted(address)} cannot be used in a URL`;
  }
  return null;
}

export function endpointKey(address: string, port: number): string {
  return isIP(address) === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * The address as a quoted, escaped string: it is shown by `cgw status` in a terminal, and a
 * registration can put newlines or escape sequences in it.
 */
function quoted(text: string): string {
  const short = text.length > 80 ? `${text.slice(0, 77)}...` : text;
  return JSON.stringify(short).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The instances of one service as endpoints, sorted so the version does not depend on the order
 * Consul lists them in. Instances that cannot be dialled are left out and reported.
 */
export function buildEndpoints(
  service: string,
  instances: readonly ServiceInstance[],
  allowWarning: boolean,
  problems: Problem[],
  transport: UpstreamTransport = PLAIN_HTTP,
): EndpointSnapshot[] {
  // https endpoints get their own key (as static https upstreams do), so http and https routes to
  // the same address:port never share a pool, a connection or outlier state.
  const tls =
    transport.scheme === 'https'
      ? { scheme: 'https' as const, ...(transport.tlsSkipVerify ? { tlsSkipVerify: true as const } : {}), ...(transport.serverName !== null ? { serverName: transport.serverName } : {}) }
      : undefined;
  const out: EndpointSnapshot[] = [];
  for (const i of instances) {
    const why = undialable(i.address, i.port);
    if (why !== null) {
      problems.push({ kind: 'instance', subject: `${service}/${i.id}`, message: `${why}; instance skipped (node ${i.node})` });
      continue;
    }
    const status = instanceStatus(i);
    const raw = status === 'passing' ? i.weights.passing : status === 'warning' && allowWarning ? i.weights.warning : 0;
    const weight = Number.isFinite(raw) && raw > 0 ? Math.min(MAX_WEIGHT, Math.floor(raw)) : 0;
    const key = endpointKey(i.address, i.port);
    out.push({ id: i.id, node: i.node, address: i.address, port: i.port, key: tls ? `https://${key}` : key, tags: [...i.tags], status, weight, ...tls });
  }
  return out.sort((a, b) => (a.node + '\u0000' + a.id < b.node + '\u0000' + b.id ? -1 : a.node === b.node && a.id === b.id ? 0 : 1));
}

/** Upstream URLs of a route document (validated by its schema) as endpoints. */
export function staticEndpoints(upstreams: NonNullable<RouteDocument['upstreams']>): EndpointSnapshot[] {
  return upstreams.map((u) => {
    const url = new URL(u.url);
    const https = url.protocol === 'https:';
    const address = url.hostname.replace(/^\[|\]$/g, '');
    const port = url.port ? Number(url.port) : https ? 443 : 80;
    const hostPort = `${url.hostname}:${port}`;
    return {
      id: u.url,
      node: '',
      address,
      port,
      key: https ? `https://${hostPort}` : hostPort,
      tags: [],
      status: 'passing',
      weight: u.weight,
      ...(https ? { scheme: 'https' as const } : {}),
    };
  });
}
