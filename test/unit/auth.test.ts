import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey, JWK, JWTPayload } from 'jose';
import { compileRouteAuth, JwtKeyCache, type AuthOutcome, type ConsumerIndex, type RouteAuth } from '../../src/filters/auth.ts';
import { authSchema, authorizeSchema } from '../../src/policy/schema.ts';
import { consumerRecordSchema, generateApiKey } from '../../src/policy/consumers.ts';
import type { AuthorizePolicy } from '../../src/policy/schema.ts';

const ISS = 'https://idp.test/';
const AUD = 'orders-api';
const SECRET = 'a-shared-secret-of-at-least-32-characters!';

// ---------------------------------------------------------------------------------------------
// fixtures

interface JwksServer {
  readonly url: string;
  hits: number;
  keys: JWK[];
  /** ok: serve keys; error: 500; garbage: 200 with a body that is no JWKS; hang: never answer. */
  mode: 'ok' | 'error' | 'garbage' | 'hang';
  close(): Promise<void>;
}

/** A JWKS server; given a test context `t`, closed when that test ends (else the caller closes it). */
async function startJwks(keys: JWK[], t?: { after(fn: () => Promise<void>): void }): Promise<JwksServer> {
  const server = createServer((_req, res) => {
    state.hits++;
    if (state.mode === 'hang') return;
    if (state.mode === 'error') return void res.writeHead(500).end();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(state.mode === 'garbage' ? '{"keys": "nope"}' : JSON.stringify({ keys: state.keys }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const state: JwksServer = {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    hits: 0,
    keys,
    mode: 'ok',
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  t?.after(() => state.close());
  return state;
}

interface SigningKey {
  readonly kid: string;
  readonly alg: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  readonly jwk: JWK;
}

/** RSA generation takes up to a second; tests reuse pairs by name (each test has its own JWKS). */
const pairs = new Map<string, Promise<{ privateKey: CryptoKey; publicKey: CryptoKey }>>();

async function signingKey(kid: string, alg = 'RS256', pair = kid): Promise<SigningKey> {
  const name = `${alg}:${pair}`;
  let generated = pairs.get(name);
  if (generated === undefined) {
    generated = generateKeyPair(alg, { extractable: true });
    pairs.set(name, generated);
  }
  const { privateKey, publicKey } = await generated;
  return { kid, alg, privateKey, publicKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

const now = () => Math.floor(Date.now() / 1000);

/** Claims of a token the default route accepts; `undefined` values remove a claim. */
function claims(overrides: Record<string, unknown> = {}): JWTPayload {
  const all: Record<string, unknown> = { sub: 'user-1', iss: ISS, aud: AUD, iat: now(), exp: now() + 3600, scope: 'orders:read profile', ...overrides };
  return Object.fromEntries(Object.entries(all).filter(([, v]) => v !== undefined));
}

async function sign(key: { privateKey: CryptoKey | Uint8Array; alg: string; kid?: string | undefined }, payload: JWTPayload = claims()): Promise<string> {
  return new SignJWT(payload).setProtectedHeader(key.kid === undefined ? { alg: key.alg } : { alg: key.alg, kid: key.kid }).sign(key.privateKey);
}

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function bearer(token: string): IncomingHttpHeaders {
  return { authorization: `Bearer ${token}` };
}

function jwtRoute(jwt: Record<string, unknown>, deps: { keys: JwtKeyCache; consumers?: ConsumerIndex }, authorize: AuthorizePolicy | null = null): RouteAuth {
  const auth = authSchema.parse({ methods: ['jwt'], jwt: { algorithms: ['RS256'], issuer: ISS, audience: AUD, ...jwt } });
  return compileRouteAuth(auth, authorize, { keys: deps.keys, consumers: deps.consumers ?? new Map() });
}

type Rejection = Extract<AuthOutcome, { ok: false }>;

function rejected(outcome: AuthOutcome, status: number, reason: string, credential?: string): Rejection {
  assert.equal(outcome.ok, false, `expected a rejection (${reason}), got ${JSON.stringify(outcome)}`);
  const r = outcome as Rejection;
  assert.equal(r.reason, reason);
  assert.equal(r.status, status);
  assert.equal(r.code, status === 401 ? 'unauthorized' : status === 403 ? 'insufficient_scope' : 'auth_unavailable');
  if (credential !== undefined) {
    assert.ok(!r.message.includes(credential), 'message must not echo the credential');
    assert.ok(!(r.challenge ?? '').includes(credential), 'challenge must not echo the credential');
  }
  return r;
}

function accepted(outcome: AuthOutcome) {
  assert.equal(outcome.ok, true, `expected success, got ${JSON.stringify(outcome)}`);
  const identity = (outcome as Extract<AuthOutcome, { ok: true }>).identity;
  assert.ok(identity, 'expected an identity');
  return identity;
}

// ---------------------------------------------------------------------------------------------

describe('JWT against a JWKS endpoint', () => {
  let current: SigningKey;
  let impostor: SigningKey; // same kid as current, different key pair
  let jwks: JwksServer;

  before(async () => {
    current = await signingKey('k1');
    impostor = await signingKey('k1', 'RS256', 'impostor');
    jwks = await startJwks([current.jwk]);
  });
  after(() => jwks.close());

  test('a valid token yields the identity, its scopes and plan', async () => {
    const keys = new JwtKeyCache();
    const route = jwtRoute({ jwksUrl: jwks.url }, { keys });
    assert.equal(route.required, true);
    const identity = accepted(await route.authenticate(bearer(await sign(current, claims({ plan: 'gold' })))));
    assert.deepEqual(identity, { method: 'jwt', subject: 'user-1', consumer: null, scopes: ['orders:read', 'profile'], plan: 'gold', limits: null });
    keys.close();
  });

  const scopeCases: { name: string; extra: Record<string, unknown>; scopes: string[] }[] = [
    { name: 'scope, space separated', extra: { scope: 'a  b c' }, scopes: ['a', 'b', 'c'] },
    { name: 'scp as an array', extra: { scope: undefined, scp: ['a', 'b', 7] }, scopes: ['a', 'b'] },
    { name: 'scp as a string', extra: { scope: undefined, scp: 'a b' }, scopes: ['a', 'b'] },
    { name: 'no scope claim', extra: { scope: undefined }, scopes: [] },
  ];
  for (const c of scopeCases) {
    test(`scopes from ${c.name}`, async () => {
      const keys = new JwtKeyCache();
      const identity = accepted(await jwtRoute({ jwksUrl: jwks.url }, { keys }).authenticate(bearer(await sign(current, claims(c.extra)))));
      assert.deepEqual(identity.scopes, c.scopes);
      assert.equal(identity.plan, null);
    });
  }

  test('the scheme is case-insensitive', async () => {
    const identity = accepted(await jwtRoute({ jwksUrl: jwks.url }, { keys: new JwtKeyCache() }).authenticate({ authorization: `bEaReR ${await sign(current)}` }));
    assert.equal(identity.subject, 'user-1');
  });

  const rejections: { name: string; token: () => Promise<string> | string; reason: string; jwt?: Record<string, unknown> }[] = [
    { name: 'expired beyond the clock tolerance', token: () => sign(current, claims({ exp: now() - 120 })), reason: 'token_expired' },
    { name: 'expired with no tolerance', token: () => sign(current, claims({ exp: now() - 5 })), reason: 'token_expired', jwt: { clockTolerance: '0ms' } },
    { name: 'nbf in the future', token: () => sign(current, claims({ nbf: now() + 120 })), reason: 'token_not_yet_valid' },
    { name: 'wrong audience', token: () => sign(current, claims({ aud: 'billing-api' })), reason: 'wrong_audience' },
    { name: 'no audience', token: () => sign(current, claims({ aud: undefined })), reason: 'wrong_audience' },
    { name: 'wrong issuer', token: () => sign(current, claims({ iss: 'https://evil.test/' })), reason: 'wrong_issuer' },
    { name: 'signed by another key with the same kid', token: () => sign(impostor), reason: 'bad_signature' },
    { name: 'missing exp while requireExpiry', token: () => sign(current, claims({ exp: undefined })), reason: 'missing_claim' },
    { name: 'missing sub', token: () => sign(current, claims({ sub: undefined })), reason: 'missing_claim' },
    { name: 'exp that is not a number', token: () => sign(current, claims({ exp: 'tomorrow' })), reason: 'malformed_token' },
    { name: 'alg none', token: () => `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims())}.`, reason: 'alg_not_allowed' },
    { name: 'alg none with the kid of a real key', token: () => `${b64url({ alg: 'none', kid: 'k1' })}.${b64url(claims())}.`, reason: 'alg_not_allowed' },
    { name: 'HS256 on an RS256 route', token: () => sign({ privateKey: new TextEncoder().encode(SECRET), alg: 'HS256', kid: 'k1' }), reason: 'alg_not_allowed' },
    { name: 'not a JWT', token: () => 'not-a-token', reason: 'malformed_token' },
    { name: 'an undecodable header', token: () => '%%%.e30.c2ln', reason: 'malformed_token' },
    { name: 'an empty bearer token', token: () => '', reason: 'malformed_token' },
    { name: 'a token over 8192 characters', token: () => `${'a'.repeat(8000)}.${'b'.repeat(200)}.c`, reason: 'malformed_token' },
  ];
  for (const c of rejections) {
    test(`401 ${c.reason}: ${c.name}`, async () => {
      const route = jwtRoute({ jwksUrl: jwks.url, ...c.jwt }, { keys: new JwtKeyCache() });
      const token = await c.token();
      const r = rejected(await route.authenticate(bearer(token)), 401, c.reason, token.length > 0 ? token : undefined);
      assert.equal(r.challenge, `Bearer realm="cgw", error="invalid_token", error_description="${c.reason}"`);
    });
  }

  test('a token within the clock tolerance is accepted (exp 10 s ago, nbf 10 s ahead)', async () => {
    const route = jwtRoute({ jwksUrl: jwks.url, clockTolerance: '30s' }, { keys: new JwtKeyCache() });
    accepted(await route.authenticate(bearer(await sign(current, claims({ exp: now() - 10, nbf: now() + 10 })))));
  });

  test('requireExpiry: false accepts a token without exp', async () => {
    const route = jwtRoute({ jwksUrl: jwks.url, requireExpiry: false }, { keys: new JwtKeyCache() });
    accepted(await route.authenticate(bearer(await sign(current, claims({ exp: undefined })))));
  });

  test('issuer and audience lists accept any listed value', async () => {
    const route = jwtRoute({ jwksUrl: jwks.url, issuer: ['https://other.test/', ISS], audience: ['x', AUD] }, { keys: new JwtKeyCache() });
    accepted(await route.authenticate(bearer(await sign(current, claims({ aud: ['y', AUD] })))));
  });

  test('refused algorithms never reach the JWKS endpoint', async () => {
    const server = await startJwks([current.jwk]);
    try {
      const route = jwtRoute({ jwksUrl: server.url }, { keys: new JwtKeyCache() });
      rejected(await route.authenticate(bearer(`${b64url({ alg: 'none' })}.${b64url(claims())}.`)), 401, 'alg_not_allowed');
      rejected(await route.authenticate(bearer('x'.repeat(9000))), 401, 'malformed_token');
      assert.equal(server.hits, 0);
    } finally {
      await server.close();
    }
  });

  test('a missing or non-Bearer Authorization header is missing_credentials', async () => {
    const route = jwtRoute({ jwksUrl: jwks.url }, { keys: new JwtKeyCache() });
    for (const headers of [{}, { authorization: 'Basic dXNlcjpwYXNz' }, { authorization: 'Bearerxyz' }] as IncomingHttpHeaders[]) {
      const r = rejected(await route.authenticate(headers), 401, 'missing_credentials');
      assert.equal(r.challenge, 'Bearer realm="cgw"');
    }
  });
});

describe('JWKS caching, cooldown and rotation', () => {
  test('an unknown kid refetches the JWKS once; a flood of them during the cooldown fetches no more', async (t) => {
    const known = await signingKey('known');
    const stranger = await signingKey('stranger');
    const server = await startJwks([known.jwk], t);
    // jose measures the cooldown with Date.now(); moving the clock replaces waiting 30 s.
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const route = jwtRoute({ jwksUrl: server.url, jwksCooldown: '30s' }, { keys: new JwtKeyCache() });

    accepted(await route.authenticate(bearer(await sign(known))));
    assert.equal(server.hits, 1);

    t.mock.timers.tick(31_000);
    const unknown = await sign(stranger);
    rejected(await route.authenticate(bearer(unknown)), 401, 'unknown_key', unknown);
    assert.equal(server.hits, 2, 'one refetch for the unknown kid');

    for (let i = 0; i < 50; i++) rejected(await route.authenticate(bearer(unknown)), 401, 'unknown_key');
    const burst = await Promise.all(Array.from({ length: 50 }, () => route.authenticate(bearer(unknown))));
    for (const outcome of burst) rejected(outcome, 401, 'unknown_key');
    assert.ok(server.hits <= 3, `cooldown must hold the flood back, got ${server.hits} fetches`);
    accepted(await route.authenticate(bearer(await sign(known))));
  });

  test('without a cooldown every unknown kid refetches (control for the test above)', async (t) => {
    const known = await signingKey('known');
    const stranger = await signingKey('stranger');
    const server = await startJwks([known.jwk], t);
    const route = jwtRoute({ jwksUrl: server.url, jwksCooldown: '0ms' }, { keys: new JwtKeyCache() });
    accepted(await route.authenticate(bearer(await sign(known))));
    const unknown = await sign(stranger);
    for (let i = 0; i < 5; i++) rejected(await route.authenticate(bearer(unknown)), 401, 'unknown_key');
    assert.equal(server.hits, 6);
  });

  test('key rotation: a token with a new kid verifies once the IdP publishes the key', async (t) => {
    const oldKey = await signingKey('2024');
    const newKey = await signingKey('2025');
    const server = await startJwks([oldKey.jwk], t);
    const route = jwtRoute({ jwksUrl: server.url, jwksCooldown: '0ms' }, { keys: new JwtKeyCache() });

    accepted(await route.authenticate(bearer(await sign(oldKey))));
    server.keys = [newKey.jwk];
    const identity = accepted(await route.authenticate(bearer(await sign(newKey))));
    assert.equal(identity.subject, 'user-1');
    assert.equal(server.hits, 2);
    // A token of the withdrawn key not seen before is refused (one seen before may be remembered for up to 30 s).
    rejected(await route.authenticate(bearer(await sign(oldKey, { ...claims(), jti: 'fresh' }))), 401, 'unknown_key');
  });

  test('a verified token is remembered: repeating it costs no verification, and never outlives its exp', async (t) => {
    const key = await signingKey('k');
    const server = await startJwks([key.jwk], t);
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const route = jwtRoute({ jwksUrl: server.url, jwksCooldown: '0ms', clockTolerance: '0s' }, { keys: new JwtKeyCache() });
    const token = await sign(key, { ...claims(), exp: now() + 10 });
    accepted(await route.authenticate(bearer(token)));
    // The IdP withdraws every key: the remembered token still passes without a fetch...
    server.keys = [];
    accepted(await route.authenticate(bearer(token)));
    assert.equal(server.hits, 1);
    // ...until its exp, when it is verified again and refused.
    t.mock.timers.tick(11_000);
    rejected(await route.authenticate(bearer(token)), 401, 'token_expired');
  });

  test('the memory survives recompiling the route (every snapshot does), and a changed jwt policy starts empty', async (t) => {
    const key = await signingKey('k');
    const server = await startJwks([key.jwk], t);
    const keys = new JwtKeyCache();
    const token = await sign(key);
    accepted(await jwtRoute({ jwksUrl: server.url, jwksCooldown: '0ms' }, { keys }).authenticate(bearer(token)));
    server.mode = 'error';
    // Rebuilt with the same policy: remembered, no verification needed.
    accepted(await jwtRoute({ jwksUrl: server.url, jwksCooldown: '0ms' }, { keys }).authenticate(bearer(token)));
    // Another jwt policy (a different audience list) must verify for itself: the token fails its audience check.
    rejected(await jwtRoute({ jwksUrl: server.url, jwksCooldown: '0ms', audience: 'other-api' }, { keys }).authenticate(bearer(token)), 401, 'wrong_audience');
  });

  test('a remembered token is forgotten after 30 s, so a withdrawn key stops working once the JWKS cache expires', async (t) => {
    const key = await signingKey('k');
    const server = await startJwks([key.jwk], t);
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const route = jwtRoute({ jwksUrl: server.url, jwksCooldown: '0ms', jwksCacheMaxAge: '1s' }, { keys: new JwtKeyCache() });
    const token = await sign(key, { ...claims(), exp: now() + 3600 });
    accepted(await route.authenticate(bearer(token)));
    server.keys = [];
    t.mock.timers.tick(31_000);
    rejected(await route.authenticate(bearer(token)), 401, 'unknown_key');
  });

  test('a token without kid is tried against every matching key (mid-rotation IdPs)', async (t) => {
    const a = await signingKey('a');
    const b = await signingKey('b');
    const outsider = await signingKey('c');
    const server = await startJwks([a.jwk, b.jwk], t);
    const route = jwtRoute({ jwksUrl: server.url }, { keys: new JwtKeyCache() });
    accepted(await route.authenticate(bearer(await sign({ privateKey: b.privateKey, alg: 'RS256' }))));
    rejected(await route.authenticate(bearer(await sign({ privateKey: outsider.privateKey, alg: 'RS256' }))), 401, 'bad_signature');
  });

  test('rebuilding a route with the same JwtKeyCache keeps the fetched keys; a new cache refetches', async (t) => {
    const key = await signingKey('k');
    const server = await startJwks([key.jwk], t);
    const keys = new JwtKeyCache();
    const token = await sign(key);

    accepted(await jwtRoute({ jwksUrl: server.url }, { keys }).authenticate(bearer(token)));
    accepted(await jwtRoute({ jwksUrl: server.url }, { keys }).authenticate(bearer(token)));
    // Another route, same IdP settings, other claims checks: still the same key set.
    accepted(await jwtRoute({ jwksUrl: server.url, audience: [AUD, 'other'] }, { keys }).authenticate(bearer(token)));
    assert.equal(server.hits, 1);
    assert.equal(keys.remoteSets, 1);

    // Different timings are a different key set.
    accepted(await jwtRoute({ jwksUrl: server.url, jwksCacheMaxAge: '1m' }, { keys }).authenticate(bearer(token)));
    assert.equal(keys.remoteSets, 2);
    assert.equal(server.hits, 2);

    accepted(await jwtRoute({ jwksUrl: server.url }, { keys: new JwtKeyCache() }).authenticate(bearer(token)));
    assert.equal(server.hits, 3);
    keys.close();
    assert.equal(keys.remoteSets, 0);
  });

  test('fetchImpl replaces the global fetch', async () => {
    const key = await signingKey('k');
    const urls: string[] = [];
    const keys = new JwtKeyCache({
      fetchImpl: async (url) => {
        urls.push(url);
        return new Response(JSON.stringify({ keys: [key.jwk] }), { status: 200 });
      },
    });
    accepted(await jwtRoute({ jwksUrl: 'https://idp.invalid/jwks' }, { keys }).authenticate(bearer(await sign(key))));
    assert.deepEqual(urls, ['https://idp.invalid/jwks']);
  });
});

describe('JWKS unavailable → 503, never let through', () => {
  const cases: { name: string; setup: (server: JwksServer) => Promise<void> | void; jwt?: Record<string, unknown> }[] = [
    { name: 'connection refused', setup: (server) => server.close() },
    { name: 'HTTP 500', setup: (server) => void (server.mode = 'error') },
    { name: 'not a JWKS', setup: (server) => void (server.mode = 'garbage') },
    { name: 'no answer within jwksTimeout', setup: (server) => void (server.mode = 'hang'), jwt: { jwksTimeout: '100ms' } },
  ];
  for (const c of cases) {
    test(c.name, async (t) => {
      const key = await signingKey('k');
      const server = await startJwks([key.jwk], t);
      await c.setup(server);
      const route = jwtRoute({ jwksUrl: server.url, ...c.jwt }, { keys: new JwtKeyCache() });
      const r = rejected(await route.authenticate(bearer(await sign(key))), 503, 'jwks_unavailable');
      assert.equal(r.challenge, null);
    });
  }

  test('the IdP coming back heals the route without a rebuild', async (t) => {
    const key = await signingKey('k');
    const server = await startJwks([key.jwk], t);
    server.mode = 'error';
    const route = jwtRoute({ jwksUrl: server.url, jwksCooldown: '0ms' }, { keys: new JwtKeyCache() });
    const token = await sign(key);
    rejected(await route.authenticate(bearer(token)), 503, 'jwks_unavailable');
    server.mode = 'ok';
    accepted(await route.authenticate(bearer(token)));
  });

  test('a failing IdP is asked again only after the cooldown, not on every request', async (t) => {
    const key = await signingKey('k');
    const server = await startJwks([key.jwk], t);
    server.mode = 'error';
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const route = jwtRoute({ jwksUrl: server.url, jwksCooldown: '30s' }, { keys: new JwtKeyCache() });
    const token = await sign(key);
    for (let i = 0; i < 20; i++) rejected(await route.authenticate(bearer(token)), 503, 'jwks_unavailable');
    assert.equal(server.hits, 1, 'one fetch for twenty requests while the IdP is failing');
    server.mode = 'ok';
    t.mock.timers.tick(31_000);
    accepted(await route.authenticate(bearer(token)));
    assert.equal(server.hits, 2);
  });

  test('keys already fetched keep verifying while the IdP is down, even past cacheMaxAge', async (t) => {
    const key = await signingKey('k');
    const server = await startJwks([key.jwk], t);
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const route = jwtRoute({ jwksUrl: server.url, jwksCacheMaxAge: '1s', jwksCooldown: '30s' }, { keys: new JwtKeyCache() });
    accepted(await route.authenticate(bearer(await sign(key))));
    server.mode = 'error';
    t.mock.timers.tick(5_000);
    accepted(await route.authenticate(bearer(await sign(key))));
    assert.equal(server.hits, 2, 'the expired cache was refreshed once, and the failure fell back to the last good keys');
    // A kid the last good document never had is still refused.
    rejected(await route.authenticate(bearer(await sign(await signingKey('new')))), 401, 'unknown_key');
  });

  test('an invalid JWKS document is not kept as last good', async (t) => {
    const key = await signingKey('k');
    const server = await startJwks([key.jwk], t);
    server.mode = 'garbage';
    const route = jwtRoute({ jwksUrl: server.url, jwksCooldown: '0ms' }, { keys: new JwtKeyCache() });
    rejected(await route.authenticate(bearer(await sign(key))), 503, 'jwks_unavailable');
    server.mode = 'ok';
    accepted(await route.authenticate(bearer(await sign(key))));
  });
});

describe('JWT with static keys', () => {
  test('publicKey (RS256 SPKI): valid, other key, and an algorithm the key cannot do', async () => {
    const key = await signingKey('k');
    const other = await signingKey('other');
    const ec = await signingKey('e', 'ES256');
    const route = jwtRoute({ publicKey: await exportSPKI(key.publicKey), algorithms: ['RS256', 'ES256'] }, { keys: new JwtKeyCache() });
    assert.equal(accepted(await route.authenticate(bearer(await sign(key)))).subject, 'user-1');
    // Imports are cached per algorithm: a second token reuses the imported key.
    accepted(await route.authenticate(bearer(await sign(key))));
    rejected(await route.authenticate(bearer(await sign(other))), 401, 'bad_signature');
    rejected(await route.authenticate(bearer(await sign(ec))), 401, 'alg_not_allowed');
  });

  test('publicKey (ES256 SPKI)', async () => {
    const key = await signingKey('e', 'ES256');
    const route = jwtRoute({ publicKey: await exportSPKI(key.publicKey), algorithms: ['ES256'] }, { keys: new JwtKeyCache() });
    accepted(await route.authenticate(bearer(await sign(key))));
  });

  // Validation refuses both documents below; the filter must still fail closed should such a
  // policy ever reach it another way.
  async function uncheckedRoute(publicKey: string, algorithms: string[]): Promise<RouteAuth> {
    const valid = authSchema.parse({ methods: ['jwt'], jwt: { algorithms: ['RS256'], issuer: ISS, audience: AUD, publicKey: await exportSPKI((await signingKey('k')).publicKey) } });
    const jwt = { ...(valid.jwt as NonNullable<typeof valid.jwt>), publicKey, algorithms: algorithms as NonNullable<typeof valid.jwt>['algorithms'] };
    return compileRouteAuth({ ...valid, jwt }, null, { keys: new JwtKeyCache(), consumers: new Map() });
  }

  test('a PEM that does not parse fails closed with 503', async () => {
    const key = await signingKey('k');
    const route = await uncheckedRoute('-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n', ['RS256']);
    rejected(await route.authenticate(bearer(await sign(key))), 503, 'key_unavailable');
  });

  test('a key that fits none of the listed algorithms fails closed with 503', async () => {
    const key = await signingKey('k');
    const route = await uncheckedRoute(await exportSPKI(key.publicKey), ['ES256']);
    rejected(await route.authenticate(bearer(await sign(key))), 503, 'key_unavailable');
  });

  test('secret (HS256): valid, wrong secret, and an RS256 token', async () => {
    const route = jwtRoute({ secret: SECRET, algorithms: ['HS256'] }, { keys: new JwtKeyCache() });
    const hs = { privateKey: new TextEncoder().encode(SECRET), alg: 'HS256' };
    accepted(await route.authenticate(bearer(await sign(hs))));
    rejected(await route.authenticate(bearer(await sign({ ...hs, privateKey: new TextEncoder().encode(`${SECRET}-other`) }))), 401, 'bad_signature');
    rejected(await route.authenticate(bearer(await sign(await signingKey('k')))), 401, 'alg_not_allowed');
  });
});

describe('API keys', () => {
  const gold = generateApiKey('acme');
  const basic = generateApiKey('tiny-co');
  const consumers: ConsumerIndex = new Map([
    ['acme', consumerRecordSchema.parse({ keyHash: gold.keyHash, plan: 'gold', scopes: ['orders:read'], limits: { limit: 100, window: '1m' } })],
    ['tiny-co', consumerRecordSchema.parse({ keyHash: basic.keyHash })],
  ]);
  const route = compileRouteAuth(authSchema.parse({ methods: ['apiKey'] }), null, { keys: new JwtKeyCache(), consumers });

  test('a valid key yields the consumer identity', async () => {
    const identity = accepted(await route.authenticate({ 'x-api-key': gold.key }));
    assert.deepEqual(identity, { method: 'apiKey', subject: 'acme', consumer: 'acme', scopes: ['orders:read'], plan: 'gold', limits: { limit: 100, window: 60_000 } });
    assert.deepEqual(accepted(await route.authenticate({ 'x-api-key': basic.key })), { method: 'apiKey', subject: 'tiny-co', consumer: 'tiny-co', scopes: [], plan: null, limits: null });
  });

  const bad: { name: string; key: string }[] = [
    { name: 'wrong secret for a known consumer', key: `cgw_acme_${'0'.repeat(64)}` },
    { name: "another consumer's secret", key: `cgw_acme_${basic.key.slice(-64)}` },
    { name: 'unknown consumer', key: `cgw_nobody_${gold.key.slice(-64)}` },
    { name: 'not our format', key: 'sk_live_123456' },
    { name: 'a valid key with trailing junk', key: `${gold.key}x` },
    { name: 'an empty header', key: '' },
  ];
  for (const c of bad) {
    test(`401 invalid_api_key: ${c.name}`, async () => {
      const r = rejected(await route.authenticate({ 'x-api-key': c.key }), 401, 'invalid_api_key', c.key || undefined);
      assert.equal(r.challenge, 'ApiKey realm="cgw", header="x-api-key"');
      assert.equal(r.message, 'the API key is invalid');
    });
  }

  test('two keys in one request are refused', async () => {
    rejected(await route.authenticate({ 'x-api-key': [gold.key, basic.key] }), 401, 'invalid_api_key');
  });

  test('only the configured header counts', async () => {
    const custom = compileRouteAuth(authSchema.parse({ methods: ['apiKey'], apiKey: { header: 'X-Partner-Key' } }), null, { keys: new JwtKeyCache(), consumers });
    accepted(await custom.authenticate({ 'x-partner-key': gold.key }));
    const r = rejected(await custom.authenticate({ 'x-api-key': gold.key, authorization: `ApiKey ${gold.key}` }), 401, 'missing_credentials', gold.key);
    assert.equal(r.challenge, 'ApiKey realm="cgw", header="x-partner-key"');
  });

  test('a Bearer token on an API-key-only route is not a credential', async () => {
    rejected(await route.authenticate(bearer('abc.def.ghi')), 401, 'missing_credentials');
  });
});

describe('authorization', () => {
  let key: SigningKey;
  let jwks: JwksServer;
  const keys = new JwtKeyCache();
  const consumer = generateApiKey('acme');
  const consumers: ConsumerIndex = new Map([['acme', consumerRecordSchema.parse({ keyHash: consumer.keyHash, scopes: ['orders:read'] })]]);

  before(async () => {
    key = await signingKey('k');
    jwks = await startJwks([key.jwk]);
  });
  after(async () => {
    keys.close();
    await jwks.close();
  });

  const both = (authorize: unknown) =>
    compileRouteAuth(
      authSchema.parse({ methods: ['jwt', 'apiKey'], jwt: { jwksUrl: jwks.url, algorithms: ['RS256'], issuer: ISS, audience: AUD } }),
      authorizeSchema.parse(authorize),
      { keys, consumers },
    );

  const cases: {
    name: string;
    authorize: unknown;
    credential: 'jwt' | 'apiKey';
    claims?: Record<string, unknown>;
    denied?: { reason: string; challenge: string | null };
  }[] = [
    { name: 'jwt with the scope', authorize: { scopes: ['orders:read'] }, credential: 'jwt' },
    { name: 'jwt with scp array', authorize: { scopes: ['orders:read'] }, credential: 'jwt', claims: { scope: undefined, scp: ['orders:read'] } },
    {
      name: 'jwt lacking one of two scopes',
      authorize: { scopes: ['orders:read', 'orders:write'] },
      credential: 'jwt',
      denied: { reason: 'missing_scope', challenge: 'Bearer error="insufficient_scope", scope="orders:read orders:write"' },
    },
    { name: 'consumer with the scope', authorize: { scopes: ['orders:read'] }, credential: 'apiKey' },
    {
      name: 'consumer lacking the scope',
      authorize: { scopes: ['orders:write'] },
      credential: 'apiKey',
      denied: { reason: 'missing_scope', challenge: 'ApiKey error="insufficient_scope", scope="orders:write"' },
    },
    { name: 'claim equals the string', authorize: { claims: { tenant: 'acme' } }, credential: 'jwt', claims: { tenant: 'acme' } },
    { name: 'claim is one of the values', authorize: { claims: { tenant: ['x', 'acme'] } }, credential: 'jwt', claims: { tenant: 'acme' } },
    { name: 'array claim with one matching element', authorize: { claims: { groups: 'admins' } }, credential: 'jwt', claims: { groups: ['staff', 'admins'] } },
    { name: 'claim differs', authorize: { claims: { tenant: 'acme' } }, credential: 'jwt', claims: { tenant: 'globex' }, denied: { reason: 'claim_mismatch', challenge: 'Bearer error="insufficient_scope"' } },
    { name: 'claim missing', authorize: { claims: { tenant: 'acme' } }, credential: 'jwt', denied: { reason: 'claim_mismatch', challenge: 'Bearer error="insufficient_scope"' } },
    { name: 'claim of the wrong type', authorize: { claims: { tenant: 'acme' } }, credential: 'jwt', claims: { tenant: { name: 'acme' } }, denied: { reason: 'claim_mismatch', challenge: 'Bearer error="insufficient_scope"' } },
    { name: 'claims with an API key', authorize: { claims: { tenant: 'acme' } }, credential: 'apiKey', denied: { reason: 'claims_required', challenge: 'Bearer error="insufficient_scope"' } },
    { name: 'scopes and claims both hold', authorize: { scopes: ['profile'], claims: { tenant: 'acme' } }, credential: 'jwt', claims: { tenant: 'acme' } },
  ];
  for (const c of cases) {
    test(`${c.denied ? '403' : 'allowed'}: ${c.name}`, async () => {
      const headers = c.credential === 'jwt' ? bearer(await sign(key, claims(c.claims))) : { 'x-api-key': consumer.key };
      const outcome = await both(c.authorize).authenticate(headers);
      if (c.denied === undefined) {
        accepted(outcome);
      } else {
        const r = rejected(outcome, 403, c.denied.reason);
        assert.equal(r.challenge, c.denied.challenge);
      }
    });
  }

  test('a claims requirement on an API-key-only route has no Bearer challenge', async () => {
    const route = compileRouteAuth(authSchema.parse({ methods: ['apiKey'] }), authorizeSchema.parse({ claims: { tenant: 'acme' } }), { keys, consumers });
    assert.equal(rejected(await route.authenticate({ 'x-api-key': consumer.key }), 403, 'claims_required').challenge, null);
  });

  test('authentication fails before authorization is judged', async () => {
    rejected(await both({ scopes: ['orders:write'] }).authenticate({}), 401, 'missing_credentials');
  });
});

describe('both methods on one route', () => {
  let key: SigningKey;
  let jwks: JwksServer;
  let route: RouteAuth;
  const consumer = generateApiKey('acme');
  const consumers: ConsumerIndex = new Map([['acme', consumerRecordSchema.parse({ keyHash: consumer.keyHash })]]);

  before(async () => {
    key = await signingKey('k');
    jwks = await startJwks([key.jwk]);
    route = compileRouteAuth(
      authSchema.parse({ methods: ['jwt', 'apiKey'], jwt: { jwksUrl: jwks.url, algorithms: ['RS256'], issuer: ISS, audience: AUD } }),
      null,
      { keys: new JwtKeyCache(), consumers },
    );
  });
  after(() => jwks.close());

  test('a JWT alone authenticates as jwt', async () => {
    assert.equal(accepted(await route.authenticate(bearer(await sign(key)))).method, 'jwt');
  });

  test('an API key alone authenticates as apiKey', async () => {
    assert.equal(accepted(await route.authenticate({ 'x-api-key': consumer.key })).method, 'apiKey');
  });

  test('with both present the JWT decides', async () => {
    assert.equal(accepted(await route.authenticate({ ...bearer(await sign(key)), 'x-api-key': 'junk' })).method, 'jwt');
    const expired = await sign(key, claims({ exp: now() - 3600 }));
    const r = rejected(await route.authenticate({ ...bearer(expired), 'x-api-key': consumer.key }), 401, 'token_expired', consumer.key);
    assert.equal(r.challenge, 'Bearer realm="cgw", error="invalid_token", error_description="token_expired", ApiKey realm="cgw", header="x-api-key"');
  });

  test('no credential: both challenges', async () => {
    const r = rejected(await route.authenticate({}), 401, 'missing_credentials');
    assert.equal(r.challenge, 'Bearer realm="cgw", ApiKey realm="cgw", header="x-api-key"');
  });

  test('a bad API key: both challenges, no token error', async () => {
    const r = rejected(await route.authenticate({ 'x-api-key': 'cgw_acme_nope' }), 401, 'invalid_api_key');
    assert.equal(r.challenge, 'Bearer realm="cgw", ApiKey realm="cgw", header="x-api-key"');
  });
});

describe('public routes and credential headers', () => {
  const keys = new JwtKeyCache();
  const deps = { keys, consumers: new Map() };

  const publicCases: { name: string; auth: unknown }[] = [
    { name: 'no auth section', auth: null },
    { name: 'methods []', auth: { methods: [] } },
  ];
  for (const c of publicCases) {
    test(`public: ${c.name}`, async () => {
      const route = compileRouteAuth(c.auth === null ? null : authSchema.parse(c.auth), authorizeSchema.parse({ scopes: ['x'] }), deps);
      assert.equal(route.required, false);
      assert.deepEqual(route.credentialHeaders, []);
      assert.deepEqual(await route.authenticate({ authorization: 'Bearer whatever' }), { ok: true, identity: null });
    });
  }

  const headerCases: { name: string; auth: unknown; expected: string[] }[] = [
    { name: 'jwt', auth: { methods: ['jwt'], jwt: { secret: SECRET, algorithms: ['HS256'] } }, expected: ['authorization'] },
    { name: 'apiKey, default header', auth: { methods: ['apiKey'] }, expected: ['x-api-key'] },
    { name: 'apiKey, custom header', auth: { methods: ['apiKey'], apiKey: { header: 'X-Key' } }, expected: ['x-key'] },
    { name: 'both', auth: { methods: ['jwt', 'apiKey'], jwt: { secret: SECRET, algorithms: ['HS256'] } }, expected: ['authorization', 'x-api-key'] },
    { name: 'both in the Authorization header', auth: { methods: ['jwt', 'apiKey'], jwt: { secret: SECRET, algorithms: ['HS256'] }, apiKey: { header: 'authorization' } }, expected: ['authorization'] },
    { name: 'forwardCredentials', auth: { methods: ['jwt', 'apiKey'], jwt: { secret: SECRET, algorithms: ['HS256'] }, forwardCredentials: true }, expected: [] },
  ];
  for (const c of headerCases) {
    test(`credentialHeaders: ${c.name}`, () => {
      const route = compileRouteAuth(authSchema.parse(c.auth), null, deps);
      assert.equal(route.required, true);
      assert.deepEqual(route.credentialHeaders, c.expected);
    });
  }
});
