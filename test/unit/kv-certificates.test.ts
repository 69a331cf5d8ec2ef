import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { KvEntry, Problem } from '../../src/core/types.ts';
import { certificateValue, parseCertificateValue, resolveKvCertificates, type KvCertificate } from '../../src/state/certificates.ts';
import { redactedJson } from '../../src/admin/views.ts';
import * as pem from '../helpers/tls-certs.ts';

const PREFIX = 'gateway/';
const entry = (name: string, value: string | null, modifyIndex = 10): KvEntry => ({ key: `${PREFIX}certs/${name}`, value, modifyIndex });
const good = (name: string, modifyIndex = 10): KvEntry => entry(name, certificateValue(pem.API_CERT, pem.API_KEY), modifyIndex);

function resolve(kv: KvEntry[], previous: readonly KvCertificate[] = []): { certificates: KvCertificate[]; problems: Problem[] } {
  const problems: Problem[] = [];
  return { certificates: resolveKvCertificates(kv, PREFIX, previous, problems), problems };
}

describe('certificates from Consul KV', () => {
  test('a good value serves under its name, with the facts shown for it', () => {
    const { certificates, problems } = resolve([good('api')]);
    assert.deepEqual(problems, []);
    assert.equal(certificates.length, 1);
    const [c] = certificates as [KvCertificate];
    assert.deepEqual([c.name, c.key, c.modifyIndex, c.info.names, c.info.source, c.info.serial], ['api', 'gateway/certs/api', 10, ['api.example.com'], 'kv:gateway/certs/api', '03EA']);
  });

  const bad: { name: string; value: string | null; error: RegExp }[] = [
    { name: 'not JSON', value: 'hello', error: /not JSON/ },
    { name: 'a bare PEM (not the JSON form)', value: pem.API_CERT, error: /not JSON/ },
    { name: 'empty', value: '', error: /empty/ },
    { name: 'null (a folder-like key)', value: null, error: /empty/ },
    { name: 'JSON without a key', value: JSON.stringify({ cert: pem.API_CERT }), error: /key/ },
    { name: 'an unknown field', value: JSON.stringify({ cert: pem.API_CERT, key: pem.API_KEY, chain: 'x' }), error: /chain/ },
    { name: 'a number for the certificate', value: JSON.stringify({ cert: 1, key: pem.API_KEY }), error: /cert/ },
    { name: 'an array', value: '[1,2]', error: /object/ },
    { name: 'a key of another certificate', value: certificateValue(pem.API_CERT, pem.DEFAULT_KEY), error: /does not match/ },
    { name: 'an expired certificate', value: certificateValue(pem.EXPIRED_CERT, pem.EXPIRED_KEY), error: /expired/ },
    { name: 'a certificate not yet valid', value: certificateValue(pem.NOT_YET_CERT, pem.NOT_YET_KEY), error: /not valid before/ },
    { name: 'garbage between PEM markers', value: certificateValue('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', pem.API_KEY), error: /does not parse/ },
    { name: 'a value over the size bound', value: JSON.stringify({ cert: 'x'.repeat(3 * 1024 * 1024), key: 'y' }), error: /larger than/ },
    { name: 'deeply nested JSON', value: `${'['.repeat(100_000)}${']'.repeat(100_000)}`, error: /object/ },
  ];
  for (const c of bad) {
    test(`refused: ${c.name}; nothing served under that name, the problem names the key`, () => {
      const { certificates, problems } = resolve([entry('api', c.value)]);
      assert.deepEqual(certificates, []);
      assert.equal(problems.length, 1);
      assert.equal(problems[0]?.kind, 'certificate');
      assert.equal(problems[0]?.subject, 'gateway/certs/api');
      assert.equal(problems[0]?.keptLastGood, false);
      assert.match(problems[0]?.message ?? '', c.error);
      // The message never quotes the value: it may be a private key.
      assert.doesNotMatch(problems[0]?.message ?? '', /PRIVATE KEY|MIG/);
    });
  }

  test('a bad new version keeps the last good certificate of that name; the others are untouched', () => {
    const first = resolve([good('api'), entry('default', certificateValue(pem.DEFAULT_CERT, pem.DEFAULT_KEY))]).certificates;
    const { certificates, problems } = resolve([entry('api', certificateValue(pem.API_CERT, pem.DEFAULT_KEY), 11), entry('default', certificateValue(pem.DEFAULT_CERT, pem.DEFAULT_KEY))], first);
    assert.deepEqual(certificates.map((c) => [c.name, c.modifyIndex]), [['api', 10], ['default', 10]]);
    assert.equal(problems.length, 1);
    assert.equal(problems[0]?.keptLastGood, true);
    assert.match(problems[0]?.message ?? '', /ModifyIndex 11: private key does not match/);
  });

  test('an unchanged key is not checked again: the same object stays', () => {
    const first = resolve([good('api')]).certificates;
    const again = resolve([good('api')], first).certificates;
    assert.equal(again[0], first[0]);
  });

  test('a deleted key stops serving', () => {
    const first = resolve([good('api')]).certificates;
    assert.deepEqual(resolve([], first).certificates, []);
  });

  test('the folder key is ignored; keys outside certs/ and deeper keys are not certificates', () => {
    const { certificates, problems } = resolve([entry('', null), { key: 'gateway/canary/api', value: '{}', modifyIndex: 1 }, { key: 'other/certs/api', value: 'x', modifyIndex: 1 }]);
    assert.deepEqual([certificates, problems], [[], []]);
    const deeper = resolve([entry('a/b', certificateValue(pem.API_CERT, pem.API_KEY))]);
    assert.deepEqual(deeper.certificates, []);
    assert.match(deeper.problems[0]?.message ?? '', /certificate names/);
  });

  test('prototype names: "constructor" is a certificate like any other, "__proto__" is not a valid name', () => {
    const first = resolve([good('constructor'), good('__proto__')]);
    assert.deepEqual(first.certificates.map((c) => c.name), ['constructor']);
    assert.equal(first.problems.length, 1);
    assert.equal(first.problems[0]?.subject, 'gateway/certs/__proto__');
    const again = resolve([good('constructor')], first.certificates);
    assert.equal(again.certificates[0], first.certificates[0]);
  });

  test('sorted by name, whatever order Consul lists them in', () => {
    const { certificates } = resolve([good('zeta'), good('alpha'), good('mid')]);
    assert.deepEqual(certificates.map((c) => c.name), ['alpha', 'mid', 'zeta']);
  });

  test('/v1/snapshot never shows a private key', () => {
    const { certificates } = resolve([good('api')]);
    const text = redactedJson({ certificates });
    assert.doesNotMatch(text, /PRIVATE KEY/);
    assert.match(text, /BEGIN CERTIFICATE/);
    assert.match(text, /"keyPem": "\[redacted\]"/);
  });

  test('the value cgw cert put writes parses back to the same pair', () => {
    const parsed = parseCertificateValue(certificateValue(pem.API_CERT, pem.API_KEY));
    assert.ok(parsed.ok);
    assert.deepEqual(parsed.value, { cert: pem.API_CERT, key: pem.API_KEY });
  });
});
