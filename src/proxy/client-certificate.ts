import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { clientCertificateFrom, type ClientCertificate } from '../runtime/runtime.ts';

/**
 * The client certificate of a TLS connection, read once per connection: keep-alive requests on it
 * share the one handshake, so they share its certificate (Node refuses renegotiation by default
 * for TLS 1.2 servers beyond a limit and TLS 1.3 has none).
 */
const byConnection = new WeakMap<Socket, ClientCertificate | null>();

export function connectionClientCertificate(socket: Socket | null): ClientCertificate | null {
  if (socket === null || (socket as { encrypted?: boolean }).encrypted !== true) return null;
  const known = byConnection.get(socket);
  if (known !== undefined) return known;
  const tls = socket as TLSSocket;
  const cert = clientCertificateFrom(tls.getPeerCertificate(), tls.authorized, tls.authorizationError);
  byConnection.set(socket, cert);
  return cert;
}
