import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { readPolicyDir } from '../../src/policy/documents.ts';
import { resolvePolicies } from '../../src/policy/resolve.ts';
import { buildSnapshot, discoveryModes, servicesNamedByRoutes } from '../../src/state/snapshot.ts';

/** The examples shipped in policies/ (`cgw start --policies policies`) must stay valid. */
const DIR = fileURLToPath(new URL('../../policies/', import.meta.url));

describe('example policies in policies/', () => {
  const { documents, errors } = readPolicyDir(DIR);
  const set = resolvePolicies(documents, [], 'gateway/', undefined);

  test('every file is a well-placed document', () => {
    assert.deepEqual(errors, []);
  });

  test('every document is valid and none conflicts with another', () => {
    assert.deepEqual(set.problems, []);
  });

  test('the expected documents are in force', () => {
    assert.deepEqual(set.documents.map((d) => d.id), [
      'policies/api-jwt',
      'policies/defaults',
      'policies/inventory-poll',
      'policies/partner-keys',
      'routes/inventory',
      'routes/legacy-billing',
    ]);
  });

  test('they do what their comments say', () => {
    const snapshot = buildSnapshot({ catalog: { web: ['urlprefix-/web'], payments: ['urlprefix-/payments'] }, health: new Map(), kv: [] }, { allowWarning: false, kvPrefix: 'gateway/' }, undefined, set);
    assert.deepEqual(snapshot.problems, []);

    const legacy = snapshot.routes.find((r) => r.id === '/legacy');
    assert.equal(legacy?.service, 'static:legacy-billing');
    assert.equal(legacy?.strip, '/legacy');
    assert.deepEqual(snapshot.services['static:legacy-billing']?.endpoints.map((e) => [e.key, e.weight]), [
      ['127.0.0.1:9000', 3],
      ['127.0.0.1:9001', 1],
    ]);
    assert.deepEqual(legacy?.policy.auth?.methods, ['apiKey'], 'partner-keys protects /legacy');
    assert.equal(legacy?.policy.rateLimits[0]?.failureMode, 'closed');

    const inventory = snapshot.routes.find((r) => r.id === '/inventory');
    assert.equal(inventory?.service, 'inventory');
    assert.equal(inventory?.freshness, 'polled');
    assert.deepEqual(servicesNamedByRoutes(set), new Set(['inventory']));
    assert.deepEqual(discoveryModes(set), new Map([['inventory', { mode: 'poll', interval: 30_000 }]]));

    const web = snapshot.routes.find((r) => r.id === '/web');
    assert.equal(web?.policy.auth, null, 'defaults leave the demo routes public');
    assert.equal(web?.policy.sources.timeouts, 'policies/defaults');
    assert.equal(snapshot.services.web?.policy.outlierDetection.enabled, true);
    assert.equal(snapshot.services.web?.policy.circuitBreaker, null);
  });

  test('the payments example: JWT via JWKS with RS256/ES256, plans, circuit breaker', () => {
    const snapshot = buildSnapshot({ catalog: { payments: ['urlprefix-/payments'] }, health: new Map(), kv: [] }, { allowWarning: false, kvPrefix: 'gateway/' }, undefined, set);
    const route = snapshot.routes.find((r) => r.id === '/payments');
    const jwt = route?.policy.auth?.jwt;
    assert.equal(jwt?.jwksUrl, 'http://127.0.0.1:8089/.well-known/jwks.json');
    assert.deepEqual(jwt?.algorithms, ['RS256', 'ES256']);
    assert.deepEqual(route?.policy.authorize?.scopes, ['payments']);
    assert.deepEqual(Object.keys(route?.policy.rateLimits[0]?.plans ?? {}), ['free', 'gold']);
    assert.equal(snapshot.services.payments?.policy.circuitBreaker?.enabled, true);
  });
});
