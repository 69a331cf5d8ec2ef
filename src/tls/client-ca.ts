import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ClientAuthView } from '../core/types.ts';
import { MAX_PEM_BYTES } from './certificate.ts';

/**
 * The CAs client certificates must chain to (`--tls-client-ca`). Read and checked at start: a
 * bundle that does not parse, holds no certificate, or holds a certificate that is not a CA or
 * has expired stops the start with an error naming the file and the certificate. Afterwards the
 * file is watched (client-ca-file.ts) and the same checks decide whether a change is taken.
 */
export interface ClientAuthority {
  /** The bundle as given, for the TLS contexts (`ca`). */
  readonly pem: string;
  readonly view: ClientAuthView;
}

/** More CAs than any deployment trusts for client certificates; a longer bundle is a mistake. */
const MAX_AUTHORITIES = 100;
const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

export class ClientCaError extends Error {
  override readonly name = 'ClientCaError';
}

export function readClientAuthority(file: string, mode: ClientAuthView['mode'], now = Date.now()): ClientAuthority {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ClientCaError(`--tls-client-ca ${file}: cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return parseClientAuthority(text, file, mode, now);
}

/** The checks of `readClientAuthority`, on text: pure, so they are tested without files. */
export function parseClientAuthority(text: string, file: string, mode: ClientAuthView['mode'], now = Date.now()): ClientAuthority {
  const fail = (why: string): never => {
    throw new ClientCaError(`--tls-client-ca ${file}: ${why}`);
  };
  if (Buffer.byteLength(text) > MAX_PEM_BYTES) fail(`larger than ${MAX_PEM_BYTES} bytes`);
  const blocks = text.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) fail('no PEM certificate (-----BEGIN CERTIFICATE-----) found');
  if (blocks.length > MAX_AUTHORITIES) fail(`${blocks.length} certificates; at most ${MAX_AUTHORITIES}`);
  const authorities = blocks.map((block, i) => {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(block);
    } catch (err) {
      return fail(`certificate ${i + 1} does not parse (${err instanceof Error ? err.message : String(err)})`);
    }
    const subject = cert.subject.replace(/\n/g, ', ');
    // A leaf in the bundle would make every certificate it signs... nothing (a leaf signs none),
    // but it means the operator gave the wrong file: say so instead of refusing every client.
    if (!cert.ca) fail(`certificate ${i + 1} (${subject}) is not a CA certificate (basicConstraints CA:TRUE missing)`);
    if (now > Date.parse(cert.validTo)) fail(`certificate ${i + 1} (${subject}) expired on ${new Date(cert.validTo).toISOString()}`);
    return { subject, notAfter: new Date(cert.validTo).toISOString(), fingerprint256: cert.fingerprint256 };
  });
  return { pem: blocks.join('\n'), view: { mode, caFile: file, authorities } };
}
