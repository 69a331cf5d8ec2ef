import type { CompiledRoute } from '../runtime/runtime.ts';
import type { RequestTarget } from './target.ts';
import type { Exchange } from './pipeline.ts';

/**
 * redirect-https: a plain-HTTP request on such a route is sent to the same host and target over
 * HTTPS. GET and HEAD get 301 (understood by every client); other methods 308, which keeps the
 * method and body (RFC 9110 §15.4.9) where 301 lets clients turn a POST into a GET.
 *
 * No open redirect: the host is the route's own, or for a route without a host the request's
 * Host (which is what matched the route) after checking it is a plain host name or IP address.
 */
export function sendHttpsRedirect(ex: Exchange, route: CompiledRoute, target: RequestTarget, httpsPort: number): number | null {
  const host = route.host ?? hostOnly(target.host);
  if (host === null) return null;
  const status = ex.req.method === 'GET' || ex.req.method === 'HEAD' ? 301 : 308;
  const location = `https://${host}${httpsPort === 443 ? '' : `:${httpsPort}`}${visible(target.path)}${visible(target.query)}`;
  ex.res.writeHead(status, {
    location,
    'content-length': 0,
    'x-request-id': ex.requestId,
    ...(route.cache !== null ? { 'x-cache': 'bypass' } : {}),
    // The body of the request (if any) is not read: the connection cannot carry another request.
    ...(ex.bodyUnread || ex.ctx.draining ? { connection: 'close' } : {}),
  });
  ex.res.end();
  return status;
}

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?$/;
const IPV6 = /^\[[0-9a-f:.]{2,45}\]$/;

/** The Host header without its port, lower case, when it is a host name or an IP literal; else null. */
export function hostOnly(header: string | undefined): string | null {
  if (header === undefined) return null;
  const value = header.trim().toLowerCase();
  let host = value;
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end === -1) return null;
    host = value.slice(0, end + 1);
    const rest = value.slice(end + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return null;
    return IPV6.test(host) ? host : null;
  }
  const colon = value.indexOf(':');
  if (colon !== -1) {
    if (!/^:\d{1,5}$/.test(value.slice(colon))) return null;
    host = value.slice(0, colon);
  }
  return HOST_NAME.test(host) ? host.replace(/\.$/, '') : null;
}

/** Request targets may carry bytes a header value must not; they are percent-encoded. */
function visible(text: string): string {
  return /^[\x21-\x7e]*$/.test(text) ? text : text.replace(/[^\x21-\x7e]/g, (c) => encodeURIComponent(c));
}
