import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';

/**
 * A PEM bundle of CA certificates (`--upstream-ca`), read and checked once at start: readable,
 * not absurdly large, at least one certificate, every block parses. A bundle that is wrong stops
 * the start with a message naming the file and the block; it is never half-used.
 */
const MAX_BUNDLE_BYTES = 4 * 1024 * 1024;
const CERT_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

export type CaBundle = { readonly ok: true; readonly pem: string; readonly count: number } | { readonly ok: false; readonly error: string };

export function readCaBundle(file: string): CaBundle {
  let text: string;
  try {
    const bytes = readFileSync(file);
    if (bytes.length > MAX_BUNDLE_BYTES) return { ok: false, error: `${file} is ${bytes.length} bytes; a CA bundle is at most ${MAX_BUNDLE_BYTES}` };
    text = bytes.toString('utf8');
  } catch (err) {
    return { ok: false, error: `cannot read ${file}: ${(err as Error).message}` };
  }
  const blocks = text.match(CERT_BLOCK) ?? [];
  if (blocks.length === 0) return { ok: false, error: `${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)` };
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (err) {
      return { ok: false, error: `${file}: certificate ${i + 1} of ${blocks.length} does not parse (${(err as Error).message})` };
    }
  }
  return { ok: true, pem: blocks.join('\n'), count: blocks.length };
}
