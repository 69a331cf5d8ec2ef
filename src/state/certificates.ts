import { z } from 'zod';
import type { CertificateInfo, KvEntry, Problem } from '../core/types.ts';
import { own } from '../core/own.ts';
import { checkCertificate, MAX_PEM_BYTES } from '../tls/certificate.ts';

/**
 * Certificates stored in Consul KV, like fabio's Consul certificate store: `<prefix>certs/<name>`
 * holds `{"cert": "<PEM chain, leaf first>", "key": "<PEM private key>"}`. They are checked here,
 * once, when their ModifyIndex changes (parses, key matches, valid now, chain in order), so every
 * process of the gateway serves the same ones and a refusal is a problem in `cgw status`. A value
 * that fails keeps the last good certificate of that name.
 */
export interface KvCertificate {
  readonly name: string;
  /** The KV key, and its ModifyIndex when this version was read. */
  readonly key: string;
  readonly modifyIndex: number;
  readonly certPem: string;
  /** Never shown: `/v1/snapshot` redacts it. */
  readonly keyPem: string;
  readonly info: CertificateInfo;
}

/** As document names: a file-system and URL safe name that names the certificate in logs and metrics. */
export const CERTIFICATE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** Chain and key with JSON's escaping; anything larger is refused before it is parsed. */
const MAX_VALUE_BYTES = 2 * MAX_PEM_BYTES + 1024;

const certificateValueSchema = z
  .object({
    cert: z.string().min(1, 'cert is empty').max(MAX_PEM_BYTES, `cert is larger than ${MAX_PEM_BYTES} characters`),
    key: z.string().min(1, 'key is empty').max(MAX_PEM_BYTES, `key is larger than ${MAX_PEM_BYTES} characters`),
  })
  .strict();

export type CertificateValue = z.output<typeof certificateValueSchema>;

export function certificatePrefix(kvPrefix: string): string {
  return `${kvPrefix}certs/`;
}

/** The JSON `cgw cert put` writes. */
export function certificateValue(certPem: string, keyPem: string): string {
  return JSON.stringify({ cert: certPem, key: keyPem });
}

type ValueParse = { readonly ok: true; readonly value: CertificateValue } | { readonly ok: false; readonly error: string };

export function parseCertificateValue(text: string | null): ValueParse {
  if (text === null || text.trim() === '') return { ok: false, error: 'value is empty' };
  if (Buffer.byteLength(text) > MAX_VALUE_BYTES) return { ok: false, error: `value is larger than ${MAX_VALUE_BYTES} bytes; refused before parsing` };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    // Not V8's message: it would quote the value, which may be a private key pasted on its own.
    return { ok: false, error: 'not JSON: expected {"cert": "<PEM chain>", "key": "<PEM key>"} (cgw cert put writes it)' };
  }
  const parsed = certificateValueSchema.safeParse(json);
  if (!parsed.success) return { ok: false, error: parsed.error.issues.map((i) => (i.path.length > 0 ? `${i.path.join('.')}: ${i.message}` : i.message)).join('; ') };
  return { ok: true, value: parsed.data };
}

/**
 * The certificates in force from KV, sorted by name. Unchanged keys (same ModifyIndex) keep their
 * checked certificate without a new check; a key that is new or changed is checked, and on
 * failure the previous certificate of that name (if any) stays, with the problem shown.
 */
export function resolveKvCertificates(kv: readonly KvEntry[], kvPrefix: string, previous: readonly KvCertificate[], problems: Problem[], now: number = Date.now()): KvCertificate[] {
  const base = certificatePrefix(kvPrefix);
  const before: Record<string, KvCertificate> = Object.create(null) as Record<string, KvCertificate>;
  for (const c of previous) before[c.name] = c;
  const out: KvCertificate[] = [];
  for (const entry of kv) {
    if (!entry.key.startsWith(base)) continue;
    const name = entry.key.slice(base.length);
    // The folder key itself (`consul kv put cgw/certs/`, or the UI) is not a certificate.
    if (name === '') continue;
    if (!CERTIFICATE_NAME.test(name)) {
      problems.push({ kind: 'certificate', subject: entry.key, message: 'certificate names are 1-128 letters, digits, _ . - (starting with a letter or digit, no /); key ignored' });
      continue;
    }
    const known = own(before, name);
    if (known && known.key === entry.key && known.modifyIndex === entry.modifyIndex) {
      out.push(known);
      continue;
    }
    const checked = checkValue(name, entry, now);
    if (checked.ok) {
      out.push(checked.certificate);
      continue;
    }
    if (known) out.push(known);
    problems.push({
      kind: 'certificate',
      subject: entry.key,
      message: `certificate refused at ModifyIndex ${entry.modifyIndex}: ${checked.error}`,
      keptLastGood: known !== undefined,
    });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function checkValue(name: string, entry: KvEntry, now: number): { ok: true; certificate: KvCertificate } | { ok: false; error: string } {
  const parsed = parseCertificateValue(entry.value);
  if (!parsed.ok) return parsed;
  const source = `kv:${entry.key}`;
  const checked = checkCertificate({ name, source, certPem: parsed.value.cert, keyPem: parsed.value.key, now });
  if (!checked.ok) return checked;
  return { ok: true, certificate: { name, key: entry.key, modifyIndex: entry.modifyIndex, certPem: parsed.value.cert, keyPem: parsed.value.key, info: checked.info } };
}
