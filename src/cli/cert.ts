import { readFile, stat } from 'node:fs/promises';
import type { CertificateInfo } from '../core/types.ts';
import { certificatePrefix, certificateValue, CERTIFICATE_NAME } from '../state/certificates.ts';
import { checkCertificate, MAX_PEM_BYTES } from '../tls/certificate.ts';
import { CliError } from './admin-client.ts';
import { normalizeKvPrefix, type KvStore } from './consul-kv.ts';

/**
 * `cgw cert put|rm`: certificates in Consul KV at `<prefix>certs/<name>`, the store every gateway
 * of the fleet serves from. A pair is checked with the gateway's own checks before it is written
 * (chain parses, key matches, valid now), so a mistake is refused here rather than shown as a
 * problem on every gateway; writes and deletes are check-and-set on the key's ModifyIndex.
 */

export function certificateKey(kvPrefix: string, name: string): string {
  if (!CERTIFICATE_NAME.test(name)) throw new CliError(`"${name}" is not a valid certificate name (1-128 letters, digits, _ . -, starting with a letter or digit)`, 2);
  return `${certificatePrefix(normalizeKvPrefix(kvPrefix))}${name}`;
}

export interface PutResult {
  readonly key: string;
  readonly modifyIndex: number;
  /** The ModifyIndex replaced, or null when the key is new. */
  readonly replaced: number | null;
  readonly certificate: Omit<CertificateInfo, 'expiresAtMs'>;
}

export async function putCertificate(
  kv: KvStore,
  kvPrefix: string,
  name: string,
  files: { readonly cert: string; readonly key: string },
  opts: { readonly cas?: number | undefined } = {},
): Promise<PutResult> {
  const key = certificateKey(kvPrefix, name);
  const [certPem, keyPem] = [await readPem(files.cert, '--cert'), await readPem(files.key, '--key')];
  const checked = checkCertificate({ name, source: `kv:${key}`, certPem, keyPem });
  if (!checked.ok) throw new CliError(`certificate refused, nothing written: ${checked.error}`, 2);
  const current = await kv.get(key);
  const cas = opts.cas ?? current?.modifyIndex ?? 0;
  if (!(await kv.set(key, certificateValue(certPem, keyPem), cas))) {
    throw new CliError(
      cas === 0
        ? `${key} was created by someone else meanwhile (check-and-set on a new key lost); nothing written`
        : `${key} is no longer at ModifyIndex ${cas} (changed by someone else); nothing written`,
      3,
    );
  }
  const written = await kv.get(key);
  const { expiresAtMs: _expires, ...certificate } = checked.info;
  return { key, modifyIndex: written?.modifyIndex ?? 0, replaced: current?.modifyIndex ?? null, certificate };
}

export async function removeCertificate(kv: KvStore, kvPrefix: string, name: string): Promise<{ key: string; modifyIndex: number }> {
  const key = certificateKey(kvPrefix, name);
  const current = await kv.get(key);
  if (!current) throw new CliError(`no certificate ${name} (${key} does not exist)`);
  if (!(await kv.del(key, current.modifyIndex))) {
    throw new CliError(`${key} was changed by someone else while deleting (check-and-set on ModifyIndex ${current.modifyIndex} lost); nothing deleted`, 3);
  }
  return { key, modifyIndex: current.modifyIndex };
}

/** A PEM file's text; a missing, oversized or non-file path is invalid input (exit 2). */
async function readPem(path: string, flag: string): Promise<string> {
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new CliError(`${flag} ${path} is not a file`, 2);
    if (s.size > MAX_PEM_BYTES) throw new CliError(`${flag} ${path} is larger than ${MAX_PEM_BYTES} bytes`, 2);
    return await readFile(path, 'utf8');
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`${flag} ${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`, 2);
  }
}
