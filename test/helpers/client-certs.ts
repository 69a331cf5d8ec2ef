/**
 * A small PKI for client-certificate tests, made at test time with the `openssl` CLI (node:crypto
 * cannot issue certificates): a CA, another CA, and client certificates signed by them. The keys
 * are fresh test fixtures in a temporary directory; they protect nothing.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface ClientCert {
  readonly cert: string;
  readonly key: string;
}

export interface TestPki {
  readonly dir: string;
  /** The trusted CA: its certificate file is what --tls-client-ca gets. */
  readonly caFile: string;
  readonly caPem: string;
  /** A CA nobody trusts. */
  readonly otherCaPem: string;
  /** CN=billing-client, DNS billing.svc.example.com, URI spiffe://example.org/ns/prod/sa/billing. */
  readonly allowed: ClientCert;
  /** CN=intruder, signed by the trusted CA. */
  readonly notAllowed: ClientCert;
  /** CN=billing-client, signed by the other CA. */
  readonly foreign: ClientCert;
  /** CN=billing-client, signed by the trusted CA, expired yesterday. */
  readonly expired: ClientCert;
  /** No CN; only URI spiffe://example.org/ns/prod/sa/reports (as SPIFFE issues them). */
  readonly spiffeOnly: ClientCert;
  /** A leaf certificate (not a CA), for the --tls-client-ca checks. */
  readonly leafPem: string;
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string, cn: string): void {
  openssl(dir, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '3650', '-subj', `/CN=${cn}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
}

function issue(dir: string, name: string, ca: string, subject: string, san: string | null, days: number): ClientCert {
  openssl(dir, ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, `basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n${san ? `subjectAltName=${san}\n` : ''}`);
  // -days -1: valid from now until yesterday, which every verifier reads as expired.
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', String(days), '-extfile', ext]);
  return { cert: readFileSync(join(dir, `${name}.crt`), 'utf8'), key: readFileSync(join(dir, `${name}.key`), 'utf8') };
}

export function createTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'cgw-pki-'));
  makeCa(dir, 'ca', 'cgw test client CA');
  makeCa(dir, 'other-ca', 'untrusted test CA');
  const allowed = issue(dir, 'allowed', 'ca', '/CN=billing-client/O=cgw tests', 'DNS:billing.svc.example.com,URI:spiffe://example.org/ns/prod/sa/billing', 30);
  const notAllowed = issue(dir, 'not-allowed', 'ca', '/CN=intruder', 'DNS:intruder.example.net', 30);
  const foreign = issue(dir, 'foreign', 'other-ca', '/CN=billing-client', 'DNS:billing.svc.example.com', 30);
  const expired = issue(dir, 'expired', 'ca', '/CN=billing-client', 'DNS:billing.svc.example.com', -1);
  const spiffeOnly = issue(dir, 'spiffe', 'ca', '/O=cgw tests', 'URI:spiffe://example.org/ns/prod/sa/reports', 30);
  return {
    dir,
    caFile: join(dir, 'ca.crt'),
    caPem: readFileSync(join(dir, 'ca.crt'), 'utf8'),
    otherCaPem: readFileSync(join(dir, 'other-ca.crt'), 'utf8'),
    allowed,
    notAllowed,
    foreign,
    expired,
    spiffeOnly,
    leafPem: allowed.cert,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
