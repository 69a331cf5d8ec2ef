/**
 * What the snapshot says about redirect-https and HSTS: a route asks for a redirect by tag or by
 * policy, HSTS comes whole from the most specific document, and settings no listener can honour
 * (a redirect without --listen-tls, mtls without --tls-client-auth) are problems while the routes
 * still serve.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews } from '../../src/core/types.ts';
import { documentId, type RawDocument } from '../../src/policy/documents.ts';
import { resolvePolicies } from '../../src/policy/resolve.ts';
import { buildSnapshot, type BuildOptions, type ListenerFacts } from '../../src/state/snapshot.ts';

const PREFIX = 'gateway/';
const BOTH: ListenerFacts = { https: true, clientCertificates: true };
const PLAIN: ListenerFacts = { https: false, clientCertificates: false };
const options = (listeners?: ListenerFacts): BuildOptions => ({ allowWarning: false, kvPrefix: PREFIX, ...(listeners ? { listeners } : {}) });

function file(name: string, doc: unknown): RawDocument {
  const id = documentId('policy', name);
  return { id, kind: 'policy', name, origin: { kind: 'file', path: `/etc/cgw/${id}.json` }, text: JSON.stringify(doc) };
}
const views = (catalog: Record<string, string[]>): ConsulViews => ({ catalog, health: new Map(), kv: [] });

const CATALOG = { legacy: ['urlprefix-/legacy redirect-https', 'urlprefix-/plain'], shop: ['urlprefix-/shop', 'urlprefix-/shop/admin'] };
const DOCS = [
  file('shop', { appliesTo: { service: 'shop' }, redirectHttps: true, hsts: { maxAge: '1y' } }),
  file('shop-admin', { appliesTo: { route: '/shop/admin' }, hsts: { maxAge: 0 }, auth: { methods: ['mtls'], mtls: { subjects: ['ops'] } } }),
];

describe('snapshot: redirect-https and hsts', () => {
  const snap = buildSnapshot(views(CATALOG), options(BOTH), undefined, resolvePolicies(DOCS, [], PREFIX, undefined));
  const route = (id: string) => snap.routes.find((r) => r.id === id);

  test('a redirect from the tag option or the (inherited) policy section', () => {
    assert.deepEqual(
      snap.routes.map((r) => [r.id, r.redirectHttps]),
      [['/legacy', true], ['/plain', false], ['/shop', true], ['/shop/admin', true]],
    );
  });

  test('hsts is taken whole from the most specific document', () => {
    assert.deepEqual(route('/shop')?.policy.hsts, { maxAge: 31_536_000, includeSubDomains: false, preload: false });
    assert.deepEqual(route('/shop/admin')?.policy.hsts, { maxAge: 0, includeSubDomains: false, preload: false });
    assert.equal(route('/shop/admin')?.policy.sources.hsts, 'policies/shop-admin');
    assert.equal(route('/plain')?.policy.hsts, null);
  });

  test('listeners that can honour everything: no problem', () => {
    assert.deepEqual(snap.problems, []);
  });

  test('without --listen-tls and client certificates: one problem per route that asks, naming where it asks', () => {
    const plain = buildSnapshot(views(CATALOG), options(PLAIN), undefined, resolvePolicies(DOCS, [], PREFIX, undefined));
    assert.deepEqual(
      plain.problems.map((p) => [p.kind, p.subject, p.message.replace(/ needs an HTTPS.*| accepts client certificates.*/, '')]),
      [
        ['policy', 'policies/shop-admin', 'route /shop/admin'],
        ['route', '/legacy', 'redirect-https (tag "urlprefix-/legacy redirect-https")'],
        ['route', '/shop/admin', 'redirect-https (policy policies/shop)'],
        ['route', '/shop', 'redirect-https (policy policies/shop)'],
      ],
    );
    assert.equal(plain.routes.length, 4, 'every route still serves');
  });

  test('a build that does not say what the listeners offer checks nothing', () => {
    assert.deepEqual(buildSnapshot(views(CATALOG), options(), undefined, resolvePolicies(DOCS, [], PREFIX, undefined)).problems, []);
  });
});
