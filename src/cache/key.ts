import { createHash } from 'node:crypto';

/**
 * The primary cache key (RFC 9111 §2): the route (with its cache policy's fingerprint and the
 * purge generations in force, so a changed policy or a purge never reads an older entry), the
 * host, the path and query as the client sent them, and the principal whose response it is
 * ('' for anonymous requests). HEAD and GET share keys: a HEAD is answered from the GET entry.
 * The Vary'd request fields select among the entries stored under one key (entry.ts).
 * Parts are joined by NUL, which none of them can hold (paths and hosts are checked by target.ts).
 */
export function primaryKey(routePrefix: string, host: string | undefined, path: string, query: string, principal: string): string {
  return `${routePrefix}\u0000${host ?? ''}\u0000${path}${query}\u0000${principal}`;
}

/**
 * Whose response it is, for routes that store answers to authenticated requests: the method and
 * the consumer (or subject) and the Authorization value, whichever the request has.
 * Hashed so a credential never sits in memory or Redis as a key.
 */
export function principalOf(identity: { readonly method: string; readonly subject: string; readonly consumer: string | null } | null, authorization: string | undefined): string {
  // Both when both are there: a route accepting an API key may pass another credential upstream.
  const who = identity === null ? '' : `${identity.method}\u0000${identity.consumer ?? identity.subject}`;
  if (who === '' && authorization === undefined) return '';
  return digest(`${who}\u0000${authorization ?? ''}`);
}

export function digest(text: string): string {
  return createHash('sha256').update(text).digest('base64url');
}
