/**
 * Policy fields of the edge: the mtls auth method's allow lists, HSTS and redirectHttps. Bad input
 * is refused with a message naming the entry; prototype names and huge lists change nothing.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { formatZodIssues } from '../../src/policy/canary.ts';
import { MAX_ALLOWED_NAMES, policyDocumentSchema, type PolicyDocument } from '../../src/policy/schema.ts';
import { hstsHeaderValue } from '../../src/filters/hsts.ts';

function accepted(input: unknown): PolicyDocument {
  const r = policyDocumentSchema.safeParse(input);
  assert.ok(r.success, r.success ? '' : `should be accepted: ${formatZodIssues(r.error)}`);
  return r.data;
}
function refused(input: unknown): string {
  const r = policyDocumentSchema.safeParse(input);
  assert.equal(r.success, false, `should be refused: ${JSON.stringify(input).slice(0, 200)}`);
  return r.success ? '' : formatZodIssues(r.error);
}
const mtlsPolicy = (mtls: unknown, methods: string[] = ['mtls']) => ({ appliesTo: { route: '/pay' }, auth: { methods, mtls } });

describe('auth.mtls', () => {
  test('subjects and SANs are accepted; DNS names are lower-cased, URIs kept as written', () => {
    const doc = accepted(mtlsPolicy({ subjects: ['billing-client', 'Ops Team 7'], sans: ['API.Example.com', '*.svc.example.com', 'spiffe://example.org/ns/Prod/sa/api'] }));
    assert.deepEqual(doc.auth?.mtls, {
      subjects: ['billing-client', 'Ops Team 7'],
      sans: ['api.example.com', '*.svc.example.com', 'spiffe://example.org/ns/Prod/sa/api'],
      anyVerified: false,
    });
  });

  test('combinable with jwt and apiKey (any one suffices)', () => {
    const doc = accepted({ appliesTo: 'defaults', auth: { methods: ['apiKey', 'mtls'], mtls: { subjects: ['a'] } } });
    assert.deepEqual(doc.auth?.methods, ['apiKey', 'mtls']);
  });

  const bad: [string, unknown, RegExp][] = [
    ['methods lists mtls without settings', { appliesTo: 'defaults', auth: { methods: ['mtls'] } }, /mtls settings .* are required/],
    ['an empty allow list', mtlsPolicy({}), /list the allowed subjects and\/or sans, or set anyVerified/],
    ['anyVerified beside a list', mtlsPolicy({ subjects: ['a'], anyVerified: true }), /set one or the other/],
    ['an empty CN', mtlsPolicy({ subjects: [''] }), /empty subject CN/],
    ['a CN with a newline', mtlsPolicy({ subjects: ['a\nb'] }), /control characters/],
    ['a CN with a NUL', mtlsPolicy({ subjects: ['admin\u0000.evil'] }), /control characters/],
    ['a CN with surrounding spaces', mtlsPolicy({ subjects: [' admin'] }), /surrounding spaces/],
    ['a CN longer than 256', mtlsPolicy({ subjects: ['a'.repeat(257)] }), /at most 256/],
    ['a bare wildcard', mtlsPolicy({ sans: ['*'] }), /neither a DNS name|wildcard/],
    ['a wildcard over a TLD', mtlsPolicy({ sans: ['*.com'] }), /too wide/],
    ['a wildcard inside a label', mtlsPolicy({ sans: ['api*.example.com'] }), /whole leftmost label/],
    ['a wildcard not leftmost', mtlsPolicy({ sans: ['api.*.example.com'] }), /whole leftmost label/],
    ['a double wildcard', mtlsPolicy({ sans: ['*.*.example.com'] }), /whole leftmost label/],
    ['a SAN that is no name', mtlsPolicy({ sans: ['exa mple.com'] }), /neither a DNS name nor an absolute URI/],
    ['an IP-like prefix', mtlsPolicy({ sans: ['IP:10.0.0.1'] }), /neither a DNS name nor an absolute URI/],
    ['a URI with spaces', mtlsPolicy({ sans: ['spiffe://example.org/a b'] }), /absolute URI of visible characters/],
    ['an unknown field', mtlsPolicy({ subjects: ['a'], issuers: ['x'] }), /issuers/],
    ['a list that is not a list', mtlsPolicy({ subjects: 'a' }), /expected array/],
    ['more subjects than allowed', mtlsPolicy({ subjects: Array.from({ length: MAX_ALLOWED_NAMES + 1 }, (_, i) => `c${i}`) }), new RegExp(`at most ${MAX_ALLOWED_NAMES} subjects`)],
    ['more SANs than allowed', mtlsPolicy({ sans: Array.from({ length: MAX_ALLOWED_NAMES + 1 }, (_, i) => `h${i}.example.com`) }), new RegExp(`at most ${MAX_ALLOWED_NAMES} SANs`)],
    ['a method listed twice', { appliesTo: 'defaults', auth: { methods: ['mtls', 'mtls'], mtls: { anyVerified: true } } }, /listed twice/],
  ];
  for (const [name, input, message] of bad) {
    test(`refused: ${name}`, () => assert.match(refused(input), message));
  }

  test('prototype names: a __proto__ or constructor key is an unknown field, never a prototype', () => {
    const text = '{"appliesTo":{"route":"/pay"},"auth":{"methods":["mtls"],"mtls":{"subjects":["a"],"__proto__":{"anyVerified":true}}}}';
    assert.match(refused(JSON.parse(text)), /__proto__/);
    assert.match(refused(mtlsPolicy({ subjects: ['a'], constructor: ['x'] })), /constructor/);
    // As names they are just names: allowed literally, matching only a certificate that says so.
    const doc = accepted(mtlsPolicy({ subjects: ['__proto__', 'constructor'], sans: ['constructor.example.com'] }));
    assert.deepEqual(doc.auth?.mtls?.subjects, ['__proto__', 'constructor']);
    assert.equal(({} as Record<string, unknown>).anyVerified, undefined);
  });
});

describe('hsts', () => {
  const table: [unknown, string][] = [
    [{}, 'max-age=31536000'],
    [{ maxAge: '180d', includeSubDomains: true }, 'max-age=15552000; includeSubDomains'],
    [{ maxAge: 0 }, 'max-age=0'],
    [{ maxAge: '2y', includeSubDomains: true, preload: true }, 'max-age=63072000; includeSubDomains; preload'],
    [{ maxAge: 3600 }, 'max-age=3600'],
  ];
  for (const [hsts, header] of table) {
    test(`${JSON.stringify(hsts)} → ${header}`, () => {
      const doc = accepted({ appliesTo: { service: 'web' }, hsts });
      assert.ok(doc.hsts);
      assert.equal(hstsHeaderValue(doc.hsts), header);
    });
  }
  const bad: [string, unknown, RegExp][] = [
    ['preload without includeSubDomains', { preload: true }, /preload needs includeSubDomains/],
    ['preload under a year', { maxAge: '30d', includeSubDomains: true, preload: true }, /at least 1y/],
    ['a negative maxAge', { maxAge: -1 }, /cannot be negative/],
    ['a maxAge over two years', { maxAge: '3y' }, /at most 2y/],
    ['a maxAge with an unknown unit', { maxAge: '1w' }, /maxAge is seconds/],
    ['an unknown field', { maxAge: 1, subdomains: true }, /subdomains/],
  ];
  for (const [name, hsts, message] of bad) test(`refused: ${name}`, () => assert.match(refused({ appliesTo: 'defaults', hsts }), message));
});

describe('redirectHttps', () => {
  test('a boolean in route, service and defaults documents', () => {
    for (const appliesTo of ['defaults', { service: 'web' }, { route: '/web' }]) assert.equal(accepted({ appliesTo, redirectHttps: true }).redirectHttps, true);
  });
  test('refused: anything but a boolean', () => assert.match(refused({ appliesTo: 'defaults', redirectHttps: 'yes' }), /expected boolean/));
});
