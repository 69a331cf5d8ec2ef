import type { HstsPolicy } from '../policy/schema.ts';

/**
 * The Strict-Transport-Security value of a route's `hsts` policy (RFC 6797 §6.1), built once per
 * snapshot compile; the proxy adds it to answers over TLS only (§7.2: never over plain HTTP).
 */
export function hstsHeaderValue(h: HstsPolicy): string {
  return `max-age=${h.maxAge}${h.includeSubDomains ? '; includeSubDomains' : ''}${h.preload ? '; preload' : ''}`;
}
