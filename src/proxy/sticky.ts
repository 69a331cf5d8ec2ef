import type { CompiledRoute, StickySubsets } from '../runtime/runtime.ts';
import { findCookie } from './cookies.ts';
import type { Exchange } from './pipeline.ts';

type Balancer = CompiledRoute['balancer'];
type Counts = Pick<CompiledRoute, 'countSticky'>;

/**
 * The subset a request asks for, as the balancer's `pick(canaryTag)` takes it: `X-Canary` when
 * some healthy instance carries that tag (it always wins), else, for a service with a stickiness
 * policy, the subset the client holds or one chosen by weight now. Without a stickiness policy
 * this is the plain `X-Canary` read: no cookie is looked at.
 *
 * The tag returned is also what a retry passes to `pick`, so a retry stays in the same subset
 * while it has another endpoint.
 */
export function requestedSubset(ex: Exchange, route: Counts & { readonly balancer: Balancer }): string | undefined {
  const header = ex.req.headers['x-canary'];
  const canary = typeof header === 'string' ? header : undefined;
  const balancer = route.balancer;
  const sticky = balancer.sticky;
  if (sticky === null || (canary !== undefined && balancer.forces(canary))) return canary;
  return heldSubset(ex, balancer, sticky, route);
}

/**
 * A client that sends back a subset it may keep (configured weight above 0, a healthy instance
 * not ejected) stays there; any other value (a subset at weight 0 or without healthy instances,
 * an unknown tag, malformed text) is ignored, and the request gets a subset by weight and the
 * header or cookie naming it. A kept cookie is not sent again: its Max-Age runs from when the
 * subset was given, so a client is re-balanced at least once per ttl. In header mode every answer
 * names the subset, so a client simply sends back the last value it saw.
 */
function heldSubset(ex: Exchange, balancer: Balancer, sticky: StickySubsets, counts: Counts): string | undefined {
  const keep = (value: string): string | undefined => (balancer.holds(value) ? value : undefined);
  const held = sticky.kind === 'cookie' ? findCookie(ex.req.headers.cookie, sticky.name, keep) : headerValue(ex, sticky.name, keep);
  if (held !== undefined) {
    counts.countSticky('kept');
    if (sticky.kind === 'header') addAnswerHeader(ex, sticky.answer(held, ex.encrypted));
    return held;
  }
  const tag = balancer.pickSubset();
  counts.countSticky('assigned');
  if (tag !== undefined) addAnswerHeader(ex, sticky.answer(tag, ex.encrypted));
  return tag;
}

function headerValue(ex: Exchange, name: string, keep: (value: string) => string | undefined): string | undefined {
  const headers = ex.req.headers;
  // The name was checked against prototype names when the policy was read; hasOwn all the same.
  const value = Object.hasOwn(headers, name) ? headers[name] : undefined;
  return typeof value === 'string' ? keep(value) : undefined;
}

function addAnswerHeader(ex: Exchange, pair: readonly string[] | null): void {
  if (pair === null) return;
  ex.extraHeaders = ex.extraHeaders === null ? pair : [...ex.extraHeaders, ...pair];
}
