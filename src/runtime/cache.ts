/**
 * The response cache as the proxy reaches it (house map: proxy imports core and runtime): the
 * compiled route cache, the tap that fills it and the rules that decide what a stored response
 * may answer.
 */
export type { RouteCache, CacheResult } from '../cache/route-cache.ts';
export type { CacheEntry } from '../cache/entry.ts';
export type { ResponseTap } from '../cache/fill.ts';
export { CacheFill } from '../cache/fill.ts';
export { fieldOf } from '../cache/entry.ts';
export { principalOf } from '../cache/key.ts';
export { ageSeconds, bypassReason, notModified, requestDirectives, usability } from '../cache/freshness.ts';
