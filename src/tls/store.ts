import type { SecureContext } from 'node:tls';
import type { CertificateInfo, CertificateRejection, TlsView } from '../core/types.ts';
import { loadCertificate, withClientCa, type CertificateInput, type LoadedCertificate } from './certificate.ts';
import { SniIndex } from './sni.ts';

export interface StoreEvents {
  onRejected?(rejection: CertificateRejection): void;
  onChanged?(certificates: readonly CertificateInfo[]): void;
}

/**
 * The certificates in force, by source (a file pair, a file of a directory). Each source is
 * checked when its content changes; a source that fails keeps its last good certificate (or has
 * none), and the rejection stays visible until the source is good again or gone. The SNI index is
 * rebuilt on each change, never per handshake.
 */
export class CertificateStore {
  /** Sources in precedence order (the first is the default certificate). */
  private order: string[] = [];
  private readonly good = new Map<string, LoadedCertificate>();
  /** The input text each source was last checked with, good or not: unchanged input is not checked again. */
  private readonly seen = new Map<string, string>();
  private readonly rejected = new Map<string, CertificateRejection>();
  private index = new SniIndex([], undefined);

  constructor(
    private readonly events: StoreEvents = {},
    /** The --tls-client-ca bundle, put in every context (see CertificateInput.clientCa). */
    private clientCa?: string,
  ) {}

  /** The inputs of the last update, so a new client CA bundle can rebuild every context. */
  private inputs: readonly CertificateInput[] = [];

  /**
   * A new --tls-client-ca bundle: the context of every certificate in force is made again with it
   * (contexts hold the CAs), and the next handshakes verify against it. The certificates are not
   * checked again: they are the ones serving, and only the CAs changed.
   */
  setClientCa(pem: string): void {
    if (pem === this.clientCa) return;
    this.clientCa = pem;
    for (const [source, certificate] of this.good) {
      const minVersion = this.inputs.find((i) => i.source === source)?.minVersion;
      if (minVersion !== undefined) this.good.set(source, withClientCa(certificate, minVersion, pem));
    }
    this.rebuildIndex();
  }

  update(inputs: readonly CertificateInput[]): void {
    this.inputs = inputs;
    const names = new Set(inputs.map((i) => i.source));
    let changed = false;
    for (const source of [...this.good.keys()]) {
      if (names.has(source)) continue;
      this.good.delete(source);
      changed = true;
    }
    for (const source of [...this.seen.keys()]) if (!names.has(source)) this.seen.delete(source);
    for (const source of [...this.rejected.keys()]) if (!names.has(source)) this.rejected.delete(source);
    for (const input of inputs) {
      const text = `${input.certPem}\u0000${input.keyPem}\u0000${input.minVersion}\u0000${input.readError ?? ''}`;
      if (this.seen.get(input.source) === text) continue;
      this.seen.set(input.source, text);
      const result = loadCertificate(this.clientCa === undefined ? input : { ...input, clientCa: this.clientCa });
      if (result.ok) {
        this.good.set(input.source, result.certificate);
        this.rejected.delete(input.source);
        changed = true;
        continue;
      }
      const rejection: CertificateRejection = {
        source: input.source,
        name: input.name,
        error: result.error,
        at: new Date().toISOString(),
        keptLastGood: this.good.has(input.source),
      };
      this.rejected.set(input.source, rejection);
      this.events.onRejected?.(rejection);
    }
    const order = inputs.map((i) => i.source);
    if (order.join('\u0000') !== this.order.join('\u0000')) changed = true;
    this.order = order;
    if (!changed) return;
    this.rebuildIndex();
  }

  private rebuildIndex(): void {
    const inForce = this.order.flatMap((s) => {
      const c = this.good.get(s);
      return c ? [c] : [];
    });
    this.index = new SniIndex(inForce, inForce[0]);
    this.events.onChanged?.(inForce.map((c) => c.info));
  }

  /** For the TLS server's SNICallback: the secure context of the certificate for this name. */
  contextFor(serverName: string | undefined): SecureContext | undefined {
    return this.index.select(serverName)?.context;
  }

  get hasCertificate(): boolean {
    return this.index.fallback !== undefined;
  }

  /** PEM of the default certificate: what a handshake without a server name (SNI) gets. */
  get defaultPem(): { readonly cert: string; readonly key: string } | undefined {
    return this.index.fallback?.pem;
  }

  view(): TlsView {
    const certificates = this.order.flatMap((s) => {
      const c = this.good.get(s);
      return c ? [c.info] : [];
    });
    return { certificates, rejected: [...this.rejected.values()], default: this.index.fallback?.info.name ?? null };
  }
}
