import type { CanarySnapshot } from '../state/canary.ts';

/**
 * A service policy's `stickiness` section, declared here structurally equal to the policy's type
 * (balancer/ does not import policy/, see docs/architecture.md).
 */
export type StickinessConfig = { readonly cookie: string; readonly ttl: number } | { readonly header: string };

/**
 * RFC 6265 §4.1.1 cookie-octets (visible ASCII without DQUOTE, comma, semicolon and backslash).
 * Canary tags may hold other characters; a subset whose tag is not made of these is never named
 * to a client (no cookie or header can carry it unquoted), so it is balanced by weight each time.
 */
const NAMEABLE_TAG = /^[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]{1,128}$/;

/**
 * Stickiness compiled with the balancer of a service that has canary weights: which values a
 * client may send back (exactly the subset tags, as Map keys, so `__proto__` or `constructor` are
 * just unknown values and a client's text is never echoed), and the response header naming each
 * subset, built once.
 */
export interface StickySubsets {
  readonly kind: 'cookie' | 'header';
  /** The cookie name (case-sensitive, RFC 6265 §5.4) or the header name (lower case). */
  readonly name: string;
  /**
   * Subsets a client may stay on, by tag: configured weight above 0 and at least one healthy
   * instance (the endpoint keys, for the balancer's ejection check).
   */
  readonly holdable: ReadonlyMap<string, readonly string[]>;
  /** The response header pair (name, value) that tells the client its subset; null for a tag that cannot be named. */
  answer(tag: string, secure: boolean): readonly string[] | null;
}

/** Null when there is nothing to hold: no stickiness policy, no weights, or no subset with a healthy instance. */
export function compileStickiness(config: StickinessConfig | null | undefined, canary: CanarySnapshot | null): StickySubsets | null {
  if (!config || canary === null || canary.fallback) return null;
  const holdable = new Map<string, readonly string[]>();
  const answers = new Map<string, readonly [readonly string[], readonly string[]]>();
  for (const subset of canary.subsets) {
    if (!NAMEABLE_TAG.test(subset.tag)) continue;
    if (subset.configuredWeight > 0 && subset.endpoints.length > 0) holdable.set(subset.tag, subset.endpoints);
    if ('cookie' in config) {
      // RFC 6265 §4.1.1/§5.2.2: Max-Age in seconds; HttpOnly and SameSite=Lax because only the
      // gateway reads it; Secure only over TLS, where a plain-HTTP hop cannot see it.
      const plain = `${config.cookie}=${subset.tag}; Max-Age=${Math.floor(config.ttl / 1000)}; Path=/; HttpOnly; SameSite=Lax`;
      answers.set(subset.tag, [Object.freeze(['set-cookie', plain]), Object.freeze(['set-cookie', `${plain}; Secure`])]);
    } else {
      const pair = Object.freeze([config.header, subset.tag]);
      answers.set(subset.tag, [pair, pair]);
    }
  }
  return {
    kind: 'cookie' in config ? 'cookie' : 'header',
    name: 'cookie' in config ? config.cookie : config.header,
    holdable,
    answer(tag, secure) {
      const pair = answers.get(tag);
      return pair === undefined ? null : secure ? pair[1] : pair[0];
    },
  };
}
