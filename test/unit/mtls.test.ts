/**
 * Client certificates as an auth method: the allow list (CN, DNS SANs exact and `*.`, URI SANs),
 * Node's subjectaltname text, the outcomes a route gives (401 none / unverified, 403 not allowed,
 * the identity otherwise), the --tls-client-ca checks, and where redirect-https may send a client.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { clientCertificateFrom, compileMtls, parseSubjectAltName, type ClientCertificate } from '../../src/filters/mtls.ts';
import { compileRouteAuth, JwtKeyCache } from '../../src/filters/auth.ts';
import { authSchema } from '../../src/policy/schema.ts';
import { mtlsSchema } from '../../src/policy/tls-schema.ts';
import { ClientCaError, parseClientAuthority } from '../../src/tls/client-ca.ts';
import { ClientCaFile } from '../../src/tls/client-ca-file.ts';
import { hostOnly } from '../../src/proxy/redirect.ts';
import { parseUrlprefixTag } from '../../src/state/tags.ts';
import { createTestPki } from '../helpers/client-certs.ts';

const cert = (over: Partial<ClientCertificate> = {}): ClientCertificate => ({ verified: true, verifyError: null, subjectCn: null, dnsNames: [], uris: [], ...over });

describe('compileMtls: allow list', () => {
  const check = compileMtls(
    mtlsSchema.parse({
      subjects: ['billing-client', '__proto__'],
      sans: ['api.example.com', '*.svc.example.com', 'spiffe://example.org/ns/prod/sa/billing'],
    }),
  );
  const table: [string, ClientCertificate | null, string][] = [
    ['no certificate', null, 'client_certificate_required'],
    ['not verified', cert({ verified: false, verifyError: 'CERT_HAS_EXPIRED', subjectCn: 'billing-client' }), 'client_certificate_unverified'],
    ['CN on the list', cert({ subjectCn: 'billing-client' }), 'ok:billing-client'],
    ['CN differs in case (CNs are exact)', cert({ subjectCn: 'Billing-Client' }), 'client_certificate_not_allowed'],
    ['CN "__proto__" listed literally', cert({ subjectCn: '__proto__' }), 'ok:__proto__'],
    ['CN "constructor" not listed', cert({ subjectCn: 'constructor' }), 'client_certificate_not_allowed'],
    ['exact DNS SAN', cert({ subjectCn: 'x', dnsNames: ['api.example.com'] }), 'ok:x'],
    ['one label under the wildcard', cert({ subjectCn: 'y', dnsNames: ['pay.svc.example.com'] }), 'ok:y'],
    ['the wildcard parent itself', cert({ subjectCn: 'y', dnsNames: ['svc.example.com'] }), 'client_certificate_not_allowed'],
    ['two labels under the wildcard', cert({ subjectCn: 'y', dnsNames: ['a.pay.svc.example.com'] }), 'client_certificate_not_allowed'],
    ['a wildcard SAN in the certificate', cert({ subjectCn: 'y', dnsNames: ['*.svc.example.com'] }), 'client_certificate_not_allowed'],
    ['a suffix that is no label boundary', cert({ subjectCn: 'y', dnsNames: ['evilsvc.example.com'] }), 'client_certificate_not_allowed'],
    ['URI SAN exact, no CN: the URI is the subject', cert({ uris: ['spiffe://example.org/ns/prod/sa/billing'] }), 'ok:spiffe://example.org/ns/prod/sa/billing'],
    ['URI SAN with a longer path', cert({ uris: ['spiffe://example.org/ns/prod/sa/billing/x'] }), 'client_certificate_not_allowed'],
    ['DNS only, no CN: the DNS name is the subject', cert({ dnsNames: ['api.example.com'] }), 'ok:api.example.com'],
    ['a verified certificate naming nobody', cert(), 'client_certificate_not_allowed'],
  ];
  for (const [name, input, expected] of table) {
    test(name, () => {
      const out = check(input);
      assert.equal(out.ok ? `ok:${out.subject}` : out.reason, expected);
    });
  }

  test('anyVerified: every verified certificate that names someone', () => {
    const any = compileMtls(mtlsSchema.parse({ anyVerified: true }));
    assert.deepEqual(any(cert({ subjectCn: 'whoever' })), { ok: true, subject: 'whoever' });
    assert.equal(any(cert({ verified: false, subjectCn: 'whoever' })).ok, false);
    assert.equal(any(null).ok, false);
  });

  test('a list of 1,000 names is looked up, not scanned', () => {
    const many = compileMtls(mtlsSchema.parse({ subjects: Array.from({ length: 1000 }, (_, i) => `client-${i}`) }));
    assert.equal(many(cert({ subjectCn: 'client-999' })).ok, true);
    assert.equal(many(cert({ subjectCn: 'client-1000' })).ok, false);
  });
});

describe('parseSubjectAltName and clientCertificateFrom', () => {
  test('Node\'s text: plain and JSON-quoted values (CVE-2021-44532), other types kept apart', () => {
    assert.deepEqual(parseSubjectAltName('DNS:a.example, URI:spiffe://x/y, IP Address:10.0.0.1'), [
      { type: 'DNS', value: 'a.example' },
      { type: 'URI', value: 'spiffe://x/y' },
      { type: 'IP Address', value: '10.0.0.1' },
    ]);
    // A name holding ", DNS:" cannot pose as a second entry.
    assert.deepEqual(parseSubjectAltName('DNS:"evil.example, DNS:api.example.com", URI:spiffe://a'), [
      { type: 'DNS', value: 'evil.example, DNS:api.example.com' },
      { type: 'URI', value: 'spiffe://a' },
    ]);
    assert.deepEqual(parseSubjectAltName(''), []);
    assert.deepEqual(parseSubjectAltName('DNS:"unterminated'), []);
  });

  test('a huge SAN list is read up to its bound', () => {
    const text = Array.from({ length: 5000 }, (_, i) => `DNS:h${i}.example`).join(', ');
    assert.equal(parseSubjectAltName(text).length, 1000);
  });

  test('from the socket view: none, verified, unverified with its reason, several CNs', () => {
    assert.equal(clientCertificateFrom({} as never, false, null), null);
    assert.equal(clientCertificateFrom(null, false, null), null);
    assert.deepEqual(clientCertificateFrom({ subject: { CN: 'a' }, subjectaltname: 'DNS:A.Example, URI:spiffe://t/x' }, true, null), {
      verified: true,
      verifyError: null,
      subjectCn: 'a',
      dnsNames: ['a.example'],
      uris: ['spiffe://t/x'],
    });
    assert.equal(clientCertificateFrom({ subject: { CN: 'a' } }, false, new Error('CERT_HAS_EXPIRED'))?.verifyError, 'CERT_HAS_EXPIRED');
    // Two CNs: which one names the client is ambiguous, so none does.
    assert.equal(clientCertificateFrom({ subject: { CN: ['a', 'b'] } }, true, null)?.subjectCn, null);
  });
});

describe('compileRouteAuth with mtls', () => {
  const keys = new JwtKeyCache();
  after(() => keys.close());
  const auth = (input: unknown) => compileRouteAuth(authSchema.parse(input), null, { keys, consumers: new Map() });
  const only = auth({ methods: ['mtls'], mtls: { subjects: ['billing-client'] } });
  const withKey = auth({ methods: ['apiKey', 'mtls'], mtls: { subjects: ['billing-client'] } });

  test('the proxy is told to read the certificate only when the method is on', () => {
    assert.equal(only.needsClientCertificate, true);
    assert.equal(auth({ methods: ['apiKey'] }).needsClientCertificate, false);
  });

  test('mtls alone: 401 without or with an unverified certificate, 403 not allowed, identity when allowed', async () => {
    const none = await only.authenticate({}, null);
    assert.ok(!none.ok);
    assert.deepEqual([none.status, none.code, none.reason, none.challenge], [401, 'unauthorized', 'client_certificate_required', 'ClientCertificate realm="cgw"']);
    const unverified = await only.authenticate({}, cert({ verified: false, subjectCn: 'billing-client' }));
    assert.ok(!unverified.ok);
    assert.deepEqual([unverified.status, unverified.reason], [401, 'client_certificate_unverified']);
    const denied = await only.authenticate({}, cert({ subjectCn: 'intruder' }));
    assert.ok(!denied.ok);
    assert.deepEqual([denied.status, denied.code, denied.reason, denied.challenge], [403, 'certificate_not_allowed', 'client_certificate_not_allowed', null]);
    const ok = await only.authenticate({}, cert({ subjectCn: 'billing-client' }));
    assert.deepEqual(ok, { ok: true, identity: { method: 'mtls', subject: 'billing-client', consumer: null, scopes: [], plan: null, limits: null } });
  });

  test('beside an API key: a key sent wins, no credential at all is missing_credentials', async () => {
    const none = await withKey.authenticate({}, null);
    assert.ok(!none.ok);
    assert.equal(none.reason, 'missing_credentials');
    assert.match(none.challenge ?? '', /ApiKey realm="cgw".*ClientCertificate realm="cgw"/);
    const badKey = await withKey.authenticate({ 'x-api-key': 'nope' }, cert({ subjectCn: 'billing-client' }));
    assert.ok(!badKey.ok);
    assert.equal(badKey.reason, 'invalid_api_key');
    const byCert = await withKey.authenticate({}, cert({ subjectCn: 'billing-client' }));
    assert.ok(byCert.ok && byCert.identity?.method === 'mtls');
  });

  test('scopes required: a certificate grants none, 403 without a Bearer/ApiKey challenge', async () => {
    const scoped = compileRouteAuth(authSchema.parse({ methods: ['mtls'], mtls: { anyVerified: true } }), { scopes: ['orders:write'], claims: {} }, { keys, consumers: new Map() });
    const out = await scoped.authenticate({}, cert({ subjectCn: 'billing-client' }));
    assert.ok(!out.ok);
    assert.deepEqual([out.status, out.reason, out.challenge], [403, 'missing_scope', null]);
  });
});

describe('--tls-client-ca', () => {
  const pki = createTestPki();
  after(() => pki.remove());

  test('a bundle of CAs is accepted and described', () => {
    const ca = parseClientAuthority(`${pki.caPem}\n${pki.otherCaPem}`, '/etc/cgw/clients.pem', 'request');
    assert.deepEqual(ca.view.authorities.map((a) => a.subject), ['CN=cgw test client CA', 'CN=untrusted test CA']);
    assert.equal(ca.view.mode, 'request');
    assert.equal(ca.view.authorities[0]?.fingerprint256, new X509Certificate(pki.caPem).fingerprint256);
  });

  const bad: [string, string, RegExp][] = [
    ['empty', '', /no PEM certificate/],
    ['a key, no certificate', pki.allowed.key, /no PEM certificate/],
    ['garbage inside the markers', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----', /certificate 1 does not parse/],
    ['a leaf certificate', pki.leafPem, /certificate 1 \(CN=billing-client, O=cgw tests\) is not a CA certificate/],
    ['oversized', 'x'.repeat(1024 * 1024 + 1), /larger than/],
    ['too many certificates', Array.from({ length: 101 }, () => pki.caPem).join('\n'), /101 certificates; at most 100/],
  ];
  for (const [name, text, message] of bad) {
    test(`refused with the file named: ${name}`, () => {
      assert.throws(() => parseClientAuthority(text, '/etc/cgw/clients.pem', 'require'), (err: unknown) => err instanceof ClientCaError && /^--tls-client-ca \/etc\/cgw\/clients\.pem: /.test(err.message) && message.test(err.message));
    });
  }

  test('an expired CA is refused', () => {
    assert.throws(() => parseClientAuthority(pki.caPem, 'ca.pem', 'require', Date.now() + 20 * 365 * 86_400_000), /expired on/);
  });
});

describe('redirect-https: the host a client is sent to', () => {
  const table: [string | undefined, string | null][] = [
    ['Example.COM', 'example.com'],
    ['example.com:8080', 'example.com'],
    ['example.com.', 'example.com'],
    ['127.0.0.1:80', '127.0.0.1'],
    ['[::1]:8080', '[::1]'],
    [undefined, null],
    ['', null],
    ['evil.com/path', null],
    ['evil.com@good.com', null],
    ['evil.com:8080:9', null],
    ['example.com:http', null],
    ['[::1]x', null],
    ['a b', null],
    ['exa%6dple.com', null],
  ];
  for (const [header, expected] of table) test(`Host ${JSON.stringify(header)} → ${expected}`, () => assert.equal(hostOnly(header), expected));
});

describe('tag option redirect-https', () => {
  test('accepted beside strip, in either spelling', () => {
    const bare = parseUrlprefixTag('urlprefix-/web redirect-https');
    assert.ok(bare.ok);
    assert.deepEqual([bare.route.path, bare.route.strip, bare.route.redirectHttps], ['/web', null, true]);
    const spelled = parseUrlprefixTag('urlprefix-/web/api strip=/web redirect-https=true');
    assert.ok(spelled.ok);
    assert.deepEqual([spelled.route.path, spelled.route.strip, spelled.route.redirectHttps], ['/web/api', '/web', true]);
    const off = parseUrlprefixTag('urlprefix-/web redirect-https=false');
    assert.ok(off.ok);
    assert.equal(off.route.redirectHttps, false);
  });
  test('other values are refused, named', () => {
    const out = parseUrlprefixTag('urlprefix-/web redirect-https=yes');
    assert.ok(!out.ok);
    assert.match(out.error, /redirect-https takes no value \(or true\/false\), not "yes"/);
  });
});

describe('--tls-client-ca after start (ClientCaFile)', () => {
  const pki = createTestPki();
  after(() => pki.remove());

  test('a good change is taken, a bad one refused once and shown with the last good in force, a fix clears it', async () => {
    const file = `${pki.dir}/watched-ca.pem`;
    writeFileSync(file, pki.caPem);
    const changes: string[][] = [];
    const refusals: string[] = [];
    const watched = new ClientCaFile({
      file,
      mode: 'request',
      initial: parseClientAuthority(pki.caPem, file, 'request'),
      pollIntervalMs: 60_000,
      onChange: (a) => changes.push(a.view.authorities.map((x) => x.subject)),
      onRejected: (e) => refusals.push(e),
    });
    await watched.check();
    assert.deepEqual(changes, [], 'unchanged: nothing to do');
    writeFileSync(file, `${pki.caPem}\n${pki.otherCaPem}`);
    await watched.check();
    assert.deepEqual(changes, [['CN=cgw test client CA', 'CN=untrusted test CA']]);
    writeFileSync(file, pki.leafPem);
    await watched.check();
    await watched.check();
    assert.equal(refusals.length, 1, 'the same refusal is reported once');
    assert.match(watched.view().refused?.error ?? '', /is not a CA certificate/);
    assert.equal(watched.view().authorities.length, 2, 'the last good bundle stays in force');
    rmSync(file);
    await watched.check();
    assert.match(watched.view().refused?.error ?? '', /cannot be read \(ENOENT\)/);
    writeFileSync(file, pki.caPem);
    await watched.check();
    assert.equal(watched.view().refused, undefined);
    assert.deepEqual(changes.at(-1), ['CN=cgw test client CA']);
    watched.close();
  });
});
