import type { LoadedCertificate } from './certificate.ts';

/**
 * Which certificate answers a TLS handshake: the exact server name, then a `*.` wildcard for
 * its first label (`*.example.com` serves `api.example.com`, not `example.com` nor
 * `a.b.example.com`, as clients check), then the default. Built once per set of certificates;
 * a handshake costs two map lookups.
 */
export class SniIndex {
  private readonly exact = new Map<string, LoadedCertificate>();
  private readonly wildcard = new Map<string, LoadedCertificate>();

  /** `certificates` in order of precedence: for a name two of them serve, the first wins. */
  constructor(
    certificates: readonly LoadedCertificate[],
    readonly fallback: LoadedCertificate | undefined,
  ) {
    for (const cert of certificates) {
      for (const name of cert.info.names) {
        const target = name.startsWith('*.') ? this.wildcard : this.exact;
        const key = name.startsWith('*.') ? name.slice(2) : name;
        if (!target.has(key)) target.set(key, cert);
      }
    }
  }

  select(serverName: string | undefined): LoadedCertificate | undefined {
    if (!serverName) return this.fallback;
    const name = serverName.toLowerCase().replace(/\.$/, '');
    const exact = this.exact.get(name);
    if (exact) return exact;
    const dot = name.indexOf('.');
    if (dot > 0) {
      const wild = this.wildcard.get(name.slice(dot + 1));
      if (wild) return wild;
    }
    return this.fallback;
  }
}
