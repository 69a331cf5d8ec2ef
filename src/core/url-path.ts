/**
 * One spelling per URL path. Requests are routed and forwarded on the normalised path, and route
 * paths (tags, route documents) are checked against the same rules: a route written in a
 * spelling no normalised request can have would never match.
 */
const DOT_SEGMENT = /(^|\/)\.{1,2}(\/|$)/;

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


/**
 * Why a route path (from a tag or a route document) can never match a request, or null when it
 * can: requests are normalised before routing, so a route must be written in that one spelling.
 */
export function unmatchableRoutePath(path: string): string | null {
  const normal = normalizePath(path);
  if (normal === undefined) return `path "${path}" can never match: requests with an escaped "/" or "\\", a broken escape or a dot segment are refused with 400`;
  if (normal !== path) return `path "${path}" can never match: requests are normalised to "${normal}" before routing; write that instead`;
  return null;
}
