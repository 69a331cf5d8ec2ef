import type { IncomingMessage } from 'node:http';

/** Where a request goes: the host and the normalised path routes are matched on and forwarded with. */
export interface RequestTarget {
  readonly path: string;
  readonly query: string;
  readonly host: string | undefined;
}

const DOT_SEGMENT = /(^|\/)\.{1,2}(\/|$)/;

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

const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * The path routes are matched on, and the path forwarded: the two must be the same string, or a
 * route's policy could be sidestepped by spelling its path differently (`/api/%61dmin` for
 * `/api/admin`, `/api//admin`). Escaped unreserved characters are decoded (RFC 3986 §6.2.2.2),
 * other escapes upper-cased, repeated slashes merged; an escaped `/` or `\`, a raw `\`, a broken
 * escape or a dot segment makes the request invalid (400).
 */
export function normalizePath(raw: string): string | undefined {
  let path = raw;
  if (path.includes('%')) {
    let broken = false;
    path = path.replace(/%(.{0,2})/g, (match, hex: string) => {
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) {
        broken = true;
        return match;
      }
      const char = String.fromCharCode(parseInt(hex, 16));
      return UNRESERVED.test(char) ? char : `%${hex.toUpperCase()}`;
    });
    if (broken || path.includes('%2F') || path.includes('%5C')) return undefined;
  }
  if (path.includes('\\')) return undefined;
  if (path.includes('//')) path = path.replace(/\/{2,}/g, '/');
  return DOT_SEGMENT.test(path) ? undefined : path;
}

