/** RFC 9110 §5.6.2: a token (field names, cookie names per RFC 6265 §4.1.1). */
export const HTTP_TOKEN = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

/** RFC 9110 §7.6.1: connection-specific fields a proxy must not forward. */
export const HOP_BY_HOP_FIELDS: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  // RFC 9113 §3.2.1 / RFC 7540: connection-specific, and an HTTP/2 response must not carry it.
  'http2-settings',
]);
