import type { IncomingMessage } from 'node:http';
import { normalizePath } from '../core/url-path.ts';

export { normalizePath };

/** Where a request goes: the host and the normalised path routes are matched on and forwarded with. */
export interface RequestTarget {
  readonly path: string;
  readonly query: string;
  readonly host: string | undefined;
}

/** Splits the request target; rejects what no route should ever see. */
export function requestTarget(req: IncomingMessage): RequestTarget | undefined {
  let url = req.url ?? '';
  if (/^https?:\/\//i.test(url)) {
    try {
      const absolute = new URL(url);
      // RFC 9112 §3.2.2: with an absolute target the URL's authority is the host, whatever Host
      // says. It is what routing uses, so it must also be what the upstream sees: a different Host
      // would let a public route's request reach a host-scoped protected one.
      req.headers.host = absolute.host;
      url = absolute.pathname + absolute.search;
    } catch {
      return undefined;
    }
  }
  if (!url.startsWith('/')) return undefined;
  const q = url.indexOf('?');
  const path = normalizePath(q === -1 ? url : url.slice(0, q));
  if (path === undefined) return undefined;
  return { path, query: q === -1 ? '' : url.slice(q), host: req.headers.host };
}
