import type { IncomingHttpHeaders } from 'node:http';
import type { ErrorCode } from '../core/errors.ts';

/** What Node's 'upgrade' event hands over, as far as the handshake check reads it. */
export interface UpgradeHead {
  readonly method?: string | undefined;
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  readonly headers: IncomingHttpHeaders;
}

export type UpgradeKind =
  /** A valid WebSocket opening handshake (RFC 6455 §4.1, §4.2.1). */
  | { readonly kind: 'websocket' }
  /** Asks for WebSocket but breaks the handshake rules: refused with this error. */
  | { readonly kind: 'invalid'; readonly code: ErrorCode; readonly message: string; readonly headers?: Readonly<Record<string, string>> }
  /**
   * Another protocol (h2c, TLS/1.0, ...): the gateway does not switch protocols. A request
   * without a body is served as a normal request (RFC 9110 §7.8 lets a server ignore Upgrade).
   */
  | { readonly kind: 'other'; readonly protocols: string; readonly hasBody: boolean };

/** §4.1: the key is 16 random bytes, base64-encoded: 22 characters and `==`. */
const KEY = /^[A-Za-z0-9+/]{21}[AQgw]==$/;

function tokens(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const text = Array.isArray(value) ? value.join(',') : value;
  return text.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== '');
}

function hasBody(head: UpgradeHead): boolean {
  const length = head.headers['content-length'];
  return head.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** Which upgrade a request asks for, and whether a WebSocket handshake is well formed. */
export function classifyUpgrade(head: UpgradeHead): UpgradeKind {
  const protocols = tokens(head.headers.upgrade);
  // `websocket` or `websocket/13`: a protocol name may carry a version (RFC 9110 §7.8).
  if (!protocols.some((p) => p === 'websocket' || p.startsWith('websocket/'))) {
    return { kind: 'other', protocols: protocols.join(', ') || '(empty)', hasBody: hasBody(head) };
  }
  const invalid = (message: string): UpgradeKind => ({ kind: 'invalid', code: 'bad_websocket_handshake', message });
  if (head.method !== 'GET') return invalid('a WebSocket handshake is a GET request (RFC 6455 §4.1)');
  if (head.httpVersionMajor !== 1 || head.httpVersionMinor < 1) return invalid('a WebSocket handshake needs HTTP/1.1');
  if (!tokens(head.headers.connection).includes('upgrade')) return invalid('a WebSocket handshake must say Connection: Upgrade');
  const key = head.headers['sec-websocket-key'];
  if (typeof key !== 'string' || !KEY.test(key.trim())) return invalid('Sec-WebSocket-Key must be 16 bytes in base64 (RFC 6455 §4.1)');
  if (hasBody(head)) return invalid('a WebSocket handshake has no body');
  const version = head.headers['sec-websocket-version'];
  if (typeof version !== 'string' || version.trim() !== '13') {
    // §4.2.2: answer 426 naming the versions understood.
    return { kind: 'invalid', code: 'websocket_version_unsupported', message: 'only WebSocket version 13 (RFC 6455) is supported', headers: { 'sec-websocket-version': '13' } };
  }
  return { kind: 'websocket' };
}
