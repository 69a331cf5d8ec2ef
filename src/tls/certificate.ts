import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { CertificateInfo } from '../core/types.ts';
import type { TlsMinVersion } from '../core/choices.ts';

export type { CertificateInfo } from '../core/types.ts';

/**
 * One certificate chain and its key, checked before it may serve a handshake: every PEM block
 * parses, the key parses and matches the leaf, the leaf is valid now, and each certificate of the
 * chain is issued by the next. What is refused never replaces what serves (the store keeps the
 * last good one); the error says what is wrong in words an operator can act on.
 */
export interface LoadedCertificate {
  readonly info: CertificateInfo;
  readonly context: SecureContext;
  /** The PEM text, for a TLS server's default context (handshakes without a server name). Never shown. */
  readonly pem: { readonly cert: string; readonly key: string };
}

export type CertificateResult = { readonly ok: true; readonly certificate: LoadedCertificate } | { readonly ok: false; readonly error: string };
export type CertificateCheck = { readonly ok: true; readonly info: CertificateInfo } | { readonly ok: false; readonly error: string };

/** Larger than any real chain and key; a bigger file is refused before it is parsed. */
export const MAX_PEM_BYTES = 1024 * 1024;
const MAX_CHAIN_LENGTH = 10;

export type { TlsMinVersion } from '../core/choices.ts';

export interface CertificateInput {
  readonly name: string;
  readonly source: string;
  readonly certPem: string;
  readonly keyPem: string;
  readonly minVersion: TlsMinVersion;
  readonly now?: number;
  /** Why the material could not be read at all (a missing or unreadable file). */
  readonly readError?: string;
  /**
   * CAs client certificates are verified against (`--tls-client-ca`). Every SNI context needs
   * them: OpenSSL verifies the client with the store of the context the SNI callback chose, so a
   * context without them calls every client certificate unverifiable.
   */
  readonly clientCa?: string;
}

const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** The checks and the facts a TLS server needs, and a secure context to serve handshakes with. */
export function loadCertificate(input: CertificateInput): CertificateResult {
  const checked = checkCertificate(input);
  if (!checked.ok) return checked;
  let context: SecureContext;
  try {
    context = createSecureContext({ cert: input.certPem, key: input.keyPem, minVersion: input.minVersion, ...(input.clientCa === undefined ? {} : { ca: input.clientCa }) });
  } catch (err) {
    return { ok: false, error: `TLS refuses the pair (${reason(err)})` };
  }
  return { ok: true, certificate: { info: checked.info, context, pem: { cert: input.certPem, key: input.keyPem } } };
}

/**
 * The checks alone, without a secure context: what the control plane runs on a certificate from
 * Consul KV (and `cgw cert put` before writing one), so a bad one is refused once, for every
 * process, before it reaches a listener.
 */
export function checkCertificate(input: Omit<CertificateInput, 'minVersion'>): CertificateCheck {
  const { certPem, keyPem } = input;
  if (input.readError) return { ok: false, error: input.readError };
  if (Buffer.byteLength(certPem) > MAX_PEM_BYTES || Buffer.byteLength(keyPem) > MAX_PEM_BYTES) {
    return { ok: false, error: `certificate or key larger than ${MAX_PEM_BYTES} bytes` };
  }
  const blocks = certPem.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) return { ok: false, error: 'no PEM certificate (-----BEGIN CERTIFICATE-----) found' };
  if (blocks.length > MAX_CHAIN_LENGTH) return { ok: false, error: `chain of ${blocks.length} certificates; at most ${MAX_CHAIN_LENGTH}` };
  const chain: X509Certificate[] = [];
  for (const [i, block] of blocks.entries()) {
    try {
      chain.push(new X509Certificate(block));
    } catch (err) {
      return { ok: false, error: `certificate ${i + 1} of the chain does not parse (${reason(err)})` };
    }
  }
  const leaf = chain[0] as X509Certificate;
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    return { ok: false, error: `private key does not parse (${reason(err)}); an unencrypted PEM key is expected` };
  }
  if (!leaf.checkPrivateKey(key)) return { ok: false, error: 'private key does not match the certificate' };
  const now = input.now ?? Date.now();
  const notBefore = Date.parse(leaf.validFrom);
  const notAfter = Date.parse(leaf.validTo);
  if (now < notBefore) return { ok: false, error: `certificate is not valid before ${new Date(notBefore).toISOString()}` };
  if (now > notAfter) return { ok: false, error: `certificate expired on ${new Date(notAfter).toISOString()}` };
  for (let i = 0; i + 1 < chain.length; i++) {
    const [cert, issuer] = [chain[i] as X509Certificate, chain[i + 1] as X509Certificate];
    if (!cert.checkIssued(issuer)) return { ok: false, error: `certificate ${i + 1} of the chain is not issued by certificate ${i + 2} (leaf first, then each issuer)` };
  }
  return {
    ok: true,
    info: {
      name: input.name,
      source: input.source,
      subject: leaf.subject.replace(/\n/g, ', '),
      names: namesOf(leaf),
      notBefore: new Date(notBefore).toISOString(),
      notAfter: new Date(notAfter).toISOString(),
      expiresAtMs: notAfter,
      serial: leaf.serialNumber,
      fingerprint256: leaf.fingerprint256,
    },
  };
}

/** The same certificate with a context that verifies client certificates against other CAs. */
export function withClientCa(certificate: LoadedCertificate, minVersion: TlsMinVersion, ca: string): LoadedCertificate {
  return { ...certificate, context: createSecureContext({ cert: certificate.pem.cert, key: certificate.pem.key, minVersion, ca }) };
}

/** DNS names of the subjectAltName, or the subject's CN when there is none (as clients check). */
export function namesOf(cert: X509Certificate): string[] {
  const alt = cert.subjectAltName;
  if (alt) {
    const names = alt
      .split(', ')
      .filter((entry) => entry.startsWith('DNS:'))
      .map((entry) => entry.slice(4).toLowerCase());
    if (names.length > 0) return [...new Set(names)];
  }
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1];
  return cn ? [cn.toLowerCase()] : [];
}

function reason(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
