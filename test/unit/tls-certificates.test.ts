/**
 * Certificates are checked before they may serve: malformed PEM, a key of another certificate,
 * expired or not yet valid leaves, oversized input and broken chains are refused with an error
 * that says why; SNI picks exact name, then a one-label wildcard, then the default.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadCertificate, MAX_PEM_BYTES, type LoadedCertificate } from '../../src/tls/certificate.ts';
import { SniIndex } from '../../src/tls/sni.ts';
import { CertificateStore } from '../../src/tls/store.ts';
import * as pem from '../helpers/tls-certs.ts';

function load(certPem: string, keyPem: string, name = 'test'): ReturnType<typeof loadCertificate> {
  return loadCertificate({ name, source: `test:${name}`, certPem, keyPem, minVersion: 'TLSv1.2' });
}

function loaded(certPem: string, keyPem: string, name: string): LoadedCertificate {
  const r = load(certPem, keyPem, name);
  assert.ok(r.ok, r.ok ? '' : r.error);
  return r.certificate;
}

describe('certificate checks', () => {
  test('a valid pair loads with its names, expiry and serial', () => {
    const c = loaded(pem.DEFAULT_CERT, pem.DEFAULT_KEY, 'default');
    assert.deepEqual(c.info.names, ['default.test', 'localhost']);
    assert.equal(c.info.notAfter, '2100-01-01T00:00:00.000Z');
    assert.equal(c.info.expiresAtMs, Date.parse('2100-01-01T00:00:00Z'));
    assert.equal(c.info.serial.replace(/^0+/, ''), (1001).toString(16).toUpperCase());
  });

  const refused: { name: string; cert: string; key: string; error: RegExp }[] = [
    { name: 'empty certificate', cert: '', key: pem.API_KEY, error: /no PEM certificate/ },
    { name: 'text that is not PEM', cert: 'hello', key: pem.API_KEY, error: /no PEM certificate/ },
    { name: 'a PEM block with broken base64', cert: '-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n', key: pem.API_KEY, error: /does not parse/ },
    { name: 'a truncated certificate', cert: pem.API_CERT.slice(0, 200) + '\n-----END CERTIFICATE-----\n', key: pem.API_KEY, error: /does not parse/ },
    { name: 'the key of another certificate', cert: pem.API_CERT, key: pem.WILDCARD_KEY, error: /does not match/ },
    { name: 'a key that is not PEM', cert: pem.API_CERT, key: 'secret', error: /private key does not parse/ },
    { name: 'the certificate given as the key', cert: pem.API_CERT, key: pem.API_CERT, error: /private key does not parse|does not match/ },
    { name: 'an expired certificate', cert: pem.EXPIRED_CERT, key: pem.EXPIRED_KEY, error: /expired on 2001-01-01/ },
    { name: 'a certificate not valid yet', cert: pem.NOT_YET_CERT, key: pem.NOT_YET_KEY, error: /not valid before 2090-01-01/ },
    { name: 'a chain whose second certificate did not issue the first', cert: pem.API_CERT + pem.WILDCARD_CERT, key: pem.API_KEY, error: /not issued by certificate 2/ },
    { name: 'a chain of 11 certificates', cert: pem.API_CERT.repeat(11), key: pem.API_KEY, error: /at most 10/ },
    { name: 'a certificate file over the size bound', cert: pem.API_CERT + ' '.repeat(MAX_PEM_BYTES), key: pem.API_KEY, error: /larger than/ },
    { name: 'a key file over the size bound', cert: pem.API_CERT, key: pem.API_KEY + '\n'.repeat(MAX_PEM_BYTES), error: /larger than/ },
  ];
  for (const c of refused) {
    test(`refused: ${c.name}`, () => {
      const r = load(c.cert, c.key);
      assert.equal(r.ok, false);
      if (!r.ok) assert.match(r.error, c.error);
    });
  }

  test('names come from subjectAltName, lower case; a wildcard stays a wildcard', () => {
    assert.deepEqual(loaded(pem.WILDCARD_CERT, pem.WILDCARD_KEY, 'w').info.names, ['*.example.com']);
  });
});

describe('SNI selection', () => {
  const fallback = loaded(pem.DEFAULT_CERT, pem.DEFAULT_KEY, 'default');
  const api = loaded(pem.API_CERT, pem.API_KEY, 'api');
  const wildcard = loaded(pem.WILDCARD_CERT, pem.WILDCARD_KEY, 'wildcard');
  const index = new SniIndex([fallback, api, wildcard], fallback);
  const cases: [string | undefined, LoadedCertificate][] = [
    ['api.example.com', api],
    ['API.Example.COM', api],
    ['api.example.com.', api],
    ['www.example.com', wildcard],
    ['example.com', fallback],
    ['a.b.example.com', fallback],
    ['localhost', fallback],
    ['unknown.test', fallback],
    ['', fallback],
    [undefined, fallback],
    ['__proto__', fallback],
    ['constructor.example.com', wildcard],
  ];
  for (const [name, expected] of cases) {
    test(`${JSON.stringify(name)} → ${expected.info.name}`, () => assert.equal(index.select(name), expected));
  }

  test('for a name two certificates serve, the first given wins; without a default an unknown name gets none', () => {
    const api2 = loaded(pem.API_V2_CERT, pem.API_V2_KEY, 'api-v2');
    assert.equal(new SniIndex([api2, api], undefined).select('api.example.com'), api2);
    assert.equal(new SniIndex([api], undefined).select('other.test'), undefined);
  });
});

describe('certificate store', () => {
  const input = (source: string, cert: string, key: string) => ({ name: source, source, certPem: cert, keyPem: key, minVersion: 'TLSv1.2' as const });

  test('a refused update keeps the last good certificate of that source, once reported; a good one clears it', () => {
    const rejected: string[] = [];
    const store = new CertificateStore({ onRejected: (r) => rejected.push(r.error) });
    store.update([input('site', pem.DEFAULT_CERT, pem.DEFAULT_KEY), input('api', pem.API_CERT, pem.API_KEY)]);
    const good = store.contextFor('api.example.com');
    assert.notEqual(good, store.contextFor('other.test'));
    const expired = [input('site', pem.DEFAULT_CERT, pem.DEFAULT_KEY), input('api', pem.EXPIRED_CERT, pem.EXPIRED_KEY)];
    store.update(expired);
    store.update(expired);
    assert.equal(rejected.length, 1, 'unchanged input is not checked (nor reported) again');
    assert.equal(store.view().rejected[0]?.keptLastGood, true);
    assert.equal(store.contextFor('api.example.com'), good, 'the last good certificate still serves its name');
    store.update([input('site', pem.DEFAULT_CERT, pem.DEFAULT_KEY), input('api', pem.API_V2_CERT, pem.API_V2_KEY)]);
    assert.deepEqual(store.view().rejected, []);
  });

  test('a source no longer listed stops serving; without any, there is no default', () => {
    const store = new CertificateStore();
    store.update([input('api', pem.API_CERT, pem.API_KEY)]);
    assert.ok(store.hasCertificate);
    store.update([]);
    assert.equal(store.hasCertificate, false);
    assert.equal(store.contextFor('api.example.com'), undefined);
    assert.deepEqual(store.view(), { certificates: [], rejected: [], default: null });
  });
});
