import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { isLoopbackHost } from '../core/net.ts';

/**
 * Who may use the admin API. With a token (`--admin-token`, `--admin-token-file`,
 * `CGW_ADMIN_TOKEN`), writes need `Authorization: Bearer <token>`, and so do reads when the
 * listener is not on loopback (anyone who can reach it could otherwise read routes, policies and
 * consumers). The probes stay open: load balancers and orchestrators ask them without credentials,
 * and they say nothing but ready or not.
 */
export interface AdminAccess {
  /** sha256 of the token, or null: no token configured. */
  readonly tokenDigest: Buffer | null;
  readonly readsNeedToken: boolean;
  /**
   * The listener is on loopback: reads are open there, so a request must also name a loopback
   * host. A web page elsewhere can point its own name at 127.0.0.1 (DNS rebinding) and then read
   * the admin API from a browser on this machine; its requests carry that name in Host.
   */
  readonly loopbackHostsOnly?: boolean;
}

export const OPEN_PATHS: ReadonlySet<string> = new Set(['/-/healthz', '/-/readyz']);

export function adminAccess(token: string | undefined, loopback: boolean): AdminAccess {
  return { tokenDigest: token === undefined ? null : digest(token), readsNeedToken: token !== undefined && !loopback, loopbackHostsOnly: loopback };
}

/**
 * Whether the Host of a request to a loopback listener names loopback (`localhost`, `127.x.y.z`,
 * `[::1]`, with or without a port). No Host (HTTP/1.0) is let through: a browser always sends one.
 */
export function hostAllowed(req: IncomingMessage, access: AdminAccess): boolean {
  if (access.loopbackHostsOnly !== true) return true;
  const host = req.headers.host;
  if (host === undefined) return true;
  return isLoopbackHost(hostNameOf(host));
}

/** The name in a Host value: `[::1]:9901` → `::1`, `localhost:9901` → `localhost`. */
function hostNameOf(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end < 0 ? host : host.slice(1, end);
  }
  const colon = host.indexOf(':');
  return colon < 0 ? host : host.slice(0, colon);
}

export type AccessDecision = 'allowed' | 'missing' | 'wrong';

/** Whether the request may go on; compared by digest in constant time, never by string. */
export function checkAdminAccess(req: IncomingMessage, path: string, access: AdminAccess, write: boolean): AccessDecision {
  if (access.tokenDigest === null || OPEN_PATHS.has(path)) return 'allowed';
  if (!write && !access.readsNeedToken) return 'allowed';
  const header = req.headers.authorization;
  if (typeof header !== 'string' || header.length > 4096) return 'missing';
  const m = /^Bearer +(\S+) *$/i.exec(header);
  if (!m) return 'missing';
  return timingSafeEqual(digest(m[1] as string), access.tokenDigest) ? 'allowed' : 'wrong';
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}
