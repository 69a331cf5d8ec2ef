import { z } from 'zod';

/**
 * Policy fields about the client's TLS connection: the client-certificate auth method (`mtls`)
 * and HSTS. Allow lists are matched exactly (DNS names case-insensitively, a `*.` wildcard for
 * one whole leftmost label as RFC 6125 §6.4.3 allows), never as patterns a typo could widen.
 */

/** More names than a real allow list holds; a longer one is a generated mistake, refused. */
export const MAX_ALLOWED_NAMES = 1000;

const subjectCn = z
  .string()
  .min(1, 'an empty subject CN allows nothing')
  .max(256, 'subject CNs are at most 256 characters')
  // Printable: no control characters (RFC 5280 names are printable or UTF-8 text), no edge spaces.
  .regex(/^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$/u, 'subject CNs are printable text without control characters or surrounding spaces');

const LABEL = '[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?';
const DNS_NAME = new RegExp(`^(?=.{1,253}$)${LABEL}(\\.${LABEL})*$`);

const URI = /^[a-z][a-z0-9+.-]*:\/\/[\x21-\x7e]+$/i;

/**
 * A SAN to allow: an absolute URI (`spiffe://example.org/ns/prod/sa/api`), matched exactly, or a
 * DNS name, exact or `*.` and at least two labels (`*.com` would allow a whole TLD).
 */
const san = z
  .string()
  .max(2048, 'SANs are at most 2048 characters')
  .transform((s) => (s.includes('://') ? s : s.toLowerCase()))
  .superRefine((name, ctx) => {
    if (name.includes('://')) {
      if (!URI.test(name) || !URL.canParse(name)) ctx.addIssue({ code: 'custom', message: `"${name}" is not an absolute URI of visible characters (e.g. spiffe://example.org/ns/prod/sa/api)` });
      return;
    }
    const base = name.startsWith('*.') ? name.slice(2) : name;
    if (base.includes('*')) ctx.addIssue({ code: 'custom', message: `"${name}": a wildcard is only allowed as the whole leftmost label (*.example.com)` });
    else if (!DNS_NAME.test(base)) ctx.addIssue({ code: 'custom', message: `"${name}" is neither a DNS name nor an absolute URI` });
    else if (name.startsWith('*.') && !base.includes('.')) ctx.addIssue({ code: 'custom', message: `"${name}" is too wide: a wildcard needs at least two labels after it` });
  });

export const mtlsSchema = z
  .object({
    /** Certificates whose subject CN is one of these. */
    subjects: z.array(subjectCn).max(MAX_ALLOWED_NAMES, `at most ${MAX_ALLOWED_NAMES} subjects`).default([]),
    /** Certificates with one of these subjectAltNames: DNS names (`api.example.com`, `*.svc.example.com`) or URIs (`spiffe://...`). */
    sans: z.array(san).max(MAX_ALLOWED_NAMES, `at most ${MAX_ALLOWED_NAMES} SANs`).default([]),
    /** Any certificate the --tls-client-ca CAs verify; the lists must then be empty. */
    anyVerified: z.boolean().default(false),
  })
  .strict()
  .superRefine((m, ctx) => {
    const listed = m.subjects.length + m.sans.length > 0;
    if (!listed && !m.anyVerified) ctx.addIssue({ code: 'custom', message: 'list the allowed subjects and/or sans, or set anyVerified: true to accept every certificate the CA verifies' });
    if (listed && m.anyVerified) ctx.addIssue({ code: 'custom', path: ['anyVerified'], message: 'anyVerified accepts every verified certificate, so subjects and sans would be ignored: set one or the other' });
  });

/** `31536000`, or `1y`, `180d`, `12h`, `30m`, `60s`: HSTS max-age is in seconds (RFC 6797 §6.1.1). */
const SECONDS_PER = { s: 1, m: 60, h: 3600, d: 86_400, y: 31_536_000 } as const;
const YEAR = SECONDS_PER.y;
const maxAgeSeconds = z.preprocess((v) => {
  if (typeof v !== 'string') return v;
  const m = /^(\d{1,9})(s|m|h|d|y)$/.exec(v.trim());
  return m ? Number(m[1]) * SECONDS_PER[m[2] as keyof typeof SECONDS_PER] : v;
}, z.number({ error: 'maxAge is seconds, or a number with s, m, h, d or y (1y = 31536000 s)' }).int('maxAge is whole seconds').min(0, 'maxAge cannot be negative').max(2 * YEAR, 'maxAge is at most 2y'));

export const hstsSchema = z
  .object({
    /** 0 tells browsers to forget the host's HSTS (RFC 6797 §6.1.1). */
    maxAge: maxAgeSeconds.default(YEAR),
    includeSubDomains: z.boolean().default(false),
    preload: z.boolean().default(false),
  })
  .strict()
  .superRefine((h, ctx) => {
    // The preload list's own rules (hstspreload.org): a header asking for it without them is refused there.
    if (h.preload && (!h.includeSubDomains || h.maxAge < YEAR)) ctx.addIssue({ code: 'custom', path: ['preload'], message: 'preload needs includeSubDomains: true and maxAge of at least 1y (hstspreload.org)' });
  });

export type MtlsPolicy = z.output<typeof mtlsSchema>;
export type HstsPolicy = z.output<typeof hstsSchema>;
