import type { MtlsPolicy } from '../policy/schema.ts';

/**
 * The client-certificate auth method: a certificate the TLS stack verified against
 * --tls-client-ca, whose subject CN or a subjectAltName is on the route's allow list. The proxy
 * reads the certificate once per connection (`clientCertificateOf`); the allow list is compiled
 * once per snapshot into sets, so a request costs a few set lookups.
 */

/** What the TLS connection says about the client's certificate; plain data. */
export interface ClientCertificate {
  /** Verified against --tls-client-ca by the TLS stack (chain, validity dates, signatures). */
  readonly verified: boolean;
  /** OpenSSL's reason it is not (e.g. CERT_HAS_EXPIRED, UNABLE_TO_VERIFY_LEAF_SIGNATURE); null when verified. */
  readonly verifyError: string | null;
  /** The subject's CN, or null when it has none or several (an ambiguous name allows nothing). */
  readonly subjectCn: string | null;
  /** DNS SANs, lower case. */
  readonly dnsNames: readonly string[];
  readonly uris: readonly string[];
}

export type MtlsReason = 'client_certificate_required' | 'client_certificate_unverified' | 'client_certificate_not_allowed';

export type MtlsOutcome = { readonly ok: true; readonly subject: string } | { readonly ok: false; readonly reason: MtlsReason };

/** The allow list as sets: exact CNs, exact DNS names, the parents of `*.` names, exact URIs. */
export function compileMtls(policy: MtlsPolicy): (cert: ClientCertificate | null) => MtlsOutcome {
  const subjects = new Set(policy.subjects);
  const dns = new Set<string>();
  const wildcardParents = new Set<string>();
  const uris = new Set<string>();
  for (const san of policy.sans) {
    if (san.includes('://')) uris.add(san);
    else if (san.startsWith('*.')) wildcardParents.add(san.slice(2));
    else dns.add(san);
  }
  const allowed = (cert: ClientCertificate): boolean => {
    if (policy.anyVerified) return true;
    if (cert.subjectCn !== null && subjects.has(cert.subjectCn)) return true;
    for (const name of cert.dnsNames) {
      // A client certificate naming a wildcard is not one identity: never matched.
      if (name.includes('*')) continue;
      if (dns.has(name)) return true;
      const dot = name.indexOf('.');
      if (dot > 0 && wildcardParents.has(name.slice(dot + 1))) return true;
    }
    for (const uri of cert.uris) if (uris.has(uri)) return true;
    return false;
  };
  return (cert) => {
    if (cert === null) return NOT_PRESENTED;
    if (!cert.verified) return UNVERIFIED;
    const subject = subjectOf(cert);
    if (subject === null || !allowed(cert)) return NOT_ALLOWED;
    return { ok: true, subject };
  };
}

const NOT_PRESENTED: MtlsOutcome = Object.freeze({ ok: false, reason: 'client_certificate_required' });
const UNVERIFIED: MtlsOutcome = Object.freeze({ ok: false, reason: 'client_certificate_unverified' });
const NOT_ALLOWED: MtlsOutcome = Object.freeze({ ok: false, reason: 'client_certificate_not_allowed' });

/**
 * Who the certificate names, for X-Cgw-Subject, logs and rate limits: the subject CN, else (SPIFFE
 * certificates have no CN) the first URI SAN, else the first DNS SAN. A certificate naming nobody
 * is never allowed: it could not be told apart from another.
 */
export function subjectOf(cert: ClientCertificate): string | null {
  return cert.subjectCn ?? cert.uris[0] ?? cert.dnsNames[0] ?? null;
}

/** The fields of Node's `getPeerCertificate()` read here. */
export interface PeerCertificateFields {
  readonly subject?: Readonly<Record<string, string | string[] | undefined>> | null;
  readonly subjectaltname?: string;
}

/** A client certificate from the TLS socket's view of it; null when the client sent none. */
export function clientCertificateFrom(peer: PeerCertificateFields | null | undefined, authorized: boolean, authorizationError: unknown): ClientCertificate | null {
  if (!peer || Object.keys(peer).length === 0) return null;
  const cn = peer.subject?.CN;
  const sans = parseSubjectAltName(peer.subjectaltname ?? '');
  return {
    verified: authorized,
    verifyError: authorized ? null : authorizationError instanceof Error ? authorizationError.message : typeof authorizationError === 'string' ? authorizationError : 'not verified',
    subjectCn: typeof cn === 'string' && cn !== '' ? cn : null,
    dnsNames: sans.filter((s) => s.type === 'DNS').map((s) => s.value.toLowerCase()),
    uris: sans.filter((s) => s.type === 'URI').map((s) => s.value),
  };
}

/** At most this many SAN entries are read: enough for any client certificate. */
const MAX_SAN_ENTRIES = 1000;

/**
 * Node's `subjectaltname` text: `DNS:a.example, URI:spiffe://x, IP Address:10.0.0.1`. Since
 * Node 17.3 / 16.13.2 (CVE-2021-44532) a value holding a comma, quote or backslash is written as
 * a JSON string, so a name can never pose as two entries; that quoting is undone here.
 */
export function parseSubjectAltName(text: string): { readonly type: string; readonly value: string }[] {
  const out: { type: string; value: string }[] = [];
  let i = 0;
  while (i < text.length && out.length < MAX_SAN_ENTRIES) {
    const colon = text.indexOf(':', i);
    if (colon === -1) break;
    const type = text.slice(i, colon);
    let value: string;
    let next: number;
    if (text[colon + 1] === '"') {
      const end = closingQuote(text, colon + 2);
      if (end === -1) break;
      try {
        value = JSON.parse(text.slice(colon + 1, end + 1)) as string;
      } catch {
        break;
      }
      next = end + 1;
    } else {
      const comma = text.indexOf(', ', colon + 1);
      next = comma === -1 ? text.length : comma;
      value = text.slice(colon + 1, next);
    }
    out.push({ type, value });
    i = next;
    if (text.startsWith(', ', i)) i += 2;
    else if (i < text.length) break;
  }
  return out;
}

function closingQuote(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i;
  }
  return -1;
}
