/**
 * Authentication end to end, through the real gateway, a real Consul agent and a real JWKS
 * server: JWT bearer tokens (every refusal reason, with its challenge), key rotation and the JWKS
 * cooldown, an unreachable identity provider, scopes, forged identity headers, API keys from
 * Consul KV (revocation, invalid records), policy hot reload from KV (an invalid version keeps the
 * last good one), and no credential in any log line. Every refusal is checked against the
 * upstream's hit count: nothing unauthenticated reaches an upstream.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent, request } from 'undici';
import { stringify as toYaml } from 'yaml';
import type { JWTPayload } from 'jose';
import { generateApiKey } from '../../src/policy/consumers.ts';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { startJwks, unsignedToken, type JwksServer, type SignOptions } from '../helpers/jwks.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

const AUDIENCE = 'cgw-tests';
const PREFIX = 'gateway/';
const ROUTES = ['/secure', '/secure/admin', '/rotating', '/down', '/keys', '/public', '/hot'];

let consul: ConsulAgent;
let idp: JwksServer;
/** A second identity provider that is down when the gateway starts. */
let downIdp: JwksServer;
let up: Upstream;
let gw: GatewayProcess;
let policyDir: string;
/** The key every token is signed with unless a test says otherwise (it stays published throughout). */
let firstKid: string;
let stopping = false;
const client = new Agent({ keepAliveTimeout: 10_000, connections: 8 });
/** Every token and API key handed to the gateway; none may show up in its logs. */
const secrets = new Set<string>();

function remember<T extends string>(credential: T): T {
  secrets.add(credential);
  return credential;
}

const jwtPolicy = (route: string, idpServer: JwksServer, extra: Record<string, unknown> = {}, authorize?: unknown) => ({
  description: `JWT on ${route}`,
  appliesTo: { route },
  auth: {
    methods: ['jwt'],
    jwt: { jwksUrl: idpServer.url, algorithms: ['RS256'], issuer: idpServer.issuer, audience: AUDIENCE, ...extra },
  },
  ...(authorize === undefined ? {} : { authorize }),
});

const hotPublic = { appliesTo: { route: '/hot' }, auth: { methods: [] } };

const baseClaims = (): JWTPayload => ({ sub: 'user-1', scope: 'orders:read profile' });

/** A token from the main identity provider, signed with the first key unless `opts.kid` says otherwise. */
async function token(claims: JWTPayload = {}, opts: SignOptions = {}): Promise<string> {
  return remember(await idp.sign({ ...baseClaims(), ...claims }, { kid: firstKid, ...opts }));
}

const bearer = (t: string): Record<string, string> => ({ authorization: `Bearer ${t}` });

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

async function get(path: string, headers: Record<string, string> = {}): Promise<Reply> {
  const r = await request(`${gw.url}${path}`, { dispatcher: client, headers, headersTimeout: 10_000, bodyTimeout: 10_000 });
  return { status: r.statusCode, headers: r.headers, text: await r.body.text() };
}

/** Asserts 200 from the upstream and returns the headers the upstream received. */
async function accepted(path: string, headers: Record<string, string> = {}): Promise<Record<string, string | string[] | undefined>> {
  const hitsBefore = up.hits;
  const r = await get(path, headers);
  assert.equal(r.status, 200, `GET ${path}: ${r.status} ${r.text}`);
  assert.equal(up.hits, hitsBefore + 1, 'the upstream should have seen exactly this request');
  return (JSON.parse(r.text) as { headers: Record<string, string | string[] | undefined> }).headers;
}

interface Refusal {
  status: 401 | 403 | 503;
  code: string;
  reason?: string;
  /** Exact WWW-Authenticate value, or null when there must be none. */
  challenge?: string | null;
}

/** Asserts the gateway's JSON refusal and that the upstream never saw the request. */
async function refused(path: string, headers: Record<string, string>, want: Refusal, what = path): Promise<Reply> {
  const hitsBefore = up.hits;
  const r = await get(path, headers);
  assert.equal(r.status, want.status, `${what}: ${r.status} ${r.text}`);
  const body = JSON.parse(r.text) as { error: { code: string; reason?: string; requestId: string } };
  assert.equal(body.error.code, want.code, `${what}: ${r.text}`);
  if (want.reason !== undefined) assert.equal(body.error.reason, want.reason, `${what}: ${r.text}`);
  assert.equal(body.error.requestId, r.headers['x-request-id']);
  if (want.challenge !== undefined) assert.equal(r.headers['www-authenticate'] ?? null, want.challenge, `${what}: WWW-Authenticate`);
  assert.equal(up.hits, hitsBefore, `${what}: a refused request reached the upstream`);
  return r;
}

const invalidTokenChallenge = (reason: string) => `Bearer realm="cgw", error="invalid_token", error_description="${reason}"`;
const API_KEY_CHALLENGE = 'ApiKey realm="cgw", header="x-api-key"';

interface Problem {
  kind: string;
  subject: string;
  message: string;
  keptLastGood?: boolean;
}

async function adminJson<T>(path: string): Promise<T> {
  const r = await fetch(`${gw.adminUrl}${path}`);
  assert.equal(r.status, 200, path);
  return (await r.json()) as T;
}

async function cliStatus(): Promise<{ problems: Problem[] }> {
  const r = await runCli(['status', '--json', '--admin', gw.adminUrl]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as { problems: Problem[] };
}

async function rejectedTotal(kind: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`cgw_config_rejected_total{kind="${kind}"}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

before(async () => {
  [consul, idp, downIdp, up, policyDir] = await Promise.all([
    startConsul(),
    startJwks({ audience: AUDIENCE }),
    startJwks({ audience: AUDIENCE }),
    startUpstream('api'),
    mkdtemp(join(tmpdir(), 'cgw-auth-policies-')),
  ]);
  firstKid = idp.kid;
  await downIdp.stop();

  const files: Record<string, unknown> = {
    secure: jwtPolicy('/secure', idp, { jwksCooldown: '30s' }),
    'secure-admin': jwtPolicy('/secure/admin', idp, { jwksCooldown: '30s' }, { scopes: ['admin'] }),
    rotating: jwtPolicy('/rotating', idp, { jwksCooldown: '0ms' }),
    // No cooldown: the test brings the provider back and expects the very next request to use it.
    down: jwtPolicy('/down', downIdp, { jwksTimeout: '1s', jwksCooldown: '0ms' }),
  };
  await Promise.all(Object.entries(files).map(([name, doc]) => writeFile(join(policyDir, `${name}.yaml`), toYaml(doc))));
  await consul.kvPut(`${PREFIX}policies/keys`, JSON.stringify({ appliesTo: { route: '/keys' }, auth: { methods: ['apiKey'] } }));
  await consul.kvPut(`${PREFIX}policies/hot`, toYaml(hotPublic));
  await consul.register({ id: 'api-1', name: 'api', port: up.port, tags: ROUTES.map((r) => `urlprefix-${r}`) });

  // debug: access lines (and anything else) are in the logs the last test searches for credentials.
  gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--policies', policyDir, '--log-level', 'debug'] });
  void gw.exited.then((code) => {
    if (!stopping) process.stderr.write(`\ngateway exited unexpectedly (code ${code}); last log lines:\n${gw.logs.slice(-30).join('\n')}\n`);
  });
  const routes = await adminJson<Array<{ route: string; policies: string[] }>>('/v1/routes');
  assert.deepEqual(Object.fromEntries(routes.map((r) => [r.route, r.policies])), {
    '/secure': ['policies/secure'],
    '/secure/admin': ['policies/secure-admin'],
    '/rotating': ['policies/rotating'],
    '/down': ['policies/down'],
    '/keys': ['policies/keys'],
    '/public': [],
    '/hot': ['policies/hot'],
  });
});

after(async () => {
  stopping = true;
  await gw?.kill();
  await client.close();
  await Promise.all([up?.close(), idp?.stop(), downIdp?.stop()]);
  await consul?.destroy();
  if (policyDir) await rm(policyDir, { recursive: true, force: true });
});

describe('JWT bearer tokens (route /secure, keys from the JWKS)', () => {
  test('a valid RS256 token: 200; the upstream gets the identity, not the token', async () => {
    const seen = await accepted('/secure/orders', bearer(await token()));
    assert.equal(seen['x-cgw-auth-method'], 'jwt');
    assert.equal(seen['x-cgw-subject'], 'user-1');
    assert.equal(seen['x-cgw-scopes'], 'orders:read profile');
    assert.equal(seen['x-cgw-consumer'], undefined, 'a JWT identity has no consumer');
    assert.equal(seen.authorization, undefined, 'forwardCredentials is false by default');
  });

  test('no credentials: 401 missing_credentials with a Bearer challenge', async () => {
    await refused('/secure', {}, { status: 401, code: 'unauthorized', reason: 'missing_credentials', challenge: 'Bearer realm="cgw"' });
    // Another scheme is no bearer token either.
    await refused('/secure', { authorization: 'Basic dXNlcjpwYXNz' }, { status: 401, code: 'unauthorized', reason: 'missing_credentials', challenge: 'Bearer realm="cgw"' });
  });

  const cases: Array<[string, () => Promise<string> | string, string]> = [
    ['expired', () => token({}, { expiresIn: '-2m' }), 'token_expired'],
    ['not valid yet', () => token({}, { notBefore: '10m' }), 'token_not_yet_valid'],
    ['wrong audience', () => token({}, { audience: 'someone-else' }), 'wrong_audience'],
    ['wrong issuer', () => token({}, { issuer: 'https://evil.example/' }), 'wrong_issuer'],
    ['signed by another key under a published kid', async () => remember(await idp.forge(baseClaims(), { kid: firstKid })), 'bad_signature'],
    ['unknown kid', () => token({}, { kid: 'no-such-kid' }), 'unknown_key'],
    ['alg none', () => remember(unsignedToken({ ...baseClaims(), iss: idp.issuer, aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 300 })), 'alg_not_allowed'],
    ['HS256', () => token({}, { alg: 'HS256' }), 'alg_not_allowed'],
    ['garbage', () => remember('garbage-not-a-jwt'), 'malformed_token'],
    ['three garbage segments', () => remember('abc.def.ghi'), 'malformed_token'],
    ['without exp', () => token({}, { expiresIn: null }), 'missing_claim'],
    ['without sub', () => token({ sub: undefined }), 'missing_claim'],
  ];
  for (const [label, make, reason] of cases) {
    test(`${label}: 401 ${reason}, challenge names it, upstream not reached`, async () => {
      await refused('/secure', bearer(await make()), { status: 401, code: 'unauthorized', reason, challenge: invalidTokenChallenge(reason) }, label);
    });
  }

  test('a token without the required scope: 403 insufficient_scope with the challenge; with it: 200', async () => {
    await refused('/secure/admin', bearer(await token()), {
      status: 403,
      code: 'insufficient_scope',
      reason: 'missing_scope',
      challenge: 'Bearer error="insufficient_scope", scope="admin"',
    });
    const seen = await accepted('/secure/admin', bearer(await token({ scope: 'orders:read admin' })));
    assert.equal(seen['x-cgw-scopes'], 'orders:read admin');
  });
});

describe('key rotation and the JWKS cooldown', () => {
  test('a token of a newly rotated key is accepted without a restart (route with jwksCooldown 0ms)', async () => {
    await accepted('/rotating', bearer(await token()));
    const hitsBefore = idp.hits;
    const newKid = await idp.rotate({ keepPrevious: true });
    assert.notEqual(newKid, firstKid);
    const seen = await accepted('/rotating', bearer(await token({}, { kid: newKid })));
    assert.equal(seen['x-cgw-subject'], 'user-1');
    assert.equal(idp.hits, hitsBefore + 1, 'the unknown kid caused exactly one JWKS fetch');
  });

  test('mid-rotation (two keys published) a token without kid is tried against each: 200; a forged one: bad_signature', async () => {
    assert.equal(idp.kids.length, 2);
    await accepted('/rotating', bearer(await token({}, { kid: null })));
    const forged = remember(await idp.forge(baseClaims(), { kid: null }));
    await refused('/rotating', bearer(forged), { status: 401, code: 'unauthorized', reason: 'bad_signature', challenge: invalidTokenChallenge('bad_signature') });
  });

  test('a key withdrawn from the JWKS is refused once the gateway refetches', async () => {
    const kid = await idp.addKey();
    const t = await token({}, { kid });
    await accepted('/rotating', bearer(t));
    idp.removeKey(kid);
    // The set in cache still has the key; a token naming a kid it lacks triggers the refetch.
    await refused('/rotating', bearer(await token({}, { kid: 'unknown-kid' })), { status: 401, code: 'unauthorized', reason: 'unknown_key' });
    // A token of the withdrawn key that was never verified before (one that was may be remembered for up to 30 s).
    await refused('/rotating', bearer(await token({ jti: 'never-seen' }, { kid })), { status: 401, code: 'unauthorized', reason: 'unknown_key' }, 'withdrawn key');
  });

  test('without a cooldown every unknown kid is a JWKS fetch...', async () => {
    const hitsBefore = idp.hits;
    for (let i = 0; i < 3; i++) await refused('/rotating', bearer(await token({}, { kid: `nope-${i}` })), { status: 401, code: 'unauthorized', reason: 'unknown_key' });
    assert.equal(idp.hits - hitsBefore, 3);
  });

  test('...with jwksCooldown 30s a burst of 30 unknown kids causes at most a couple of fetches', async (t) => {
    const hitsBefore = idp.hits;
    const upstreamBefore = up.hits;
    const tokens = await Promise.all(Array.from({ length: 30 }, (_, i) => token({}, { kid: `burst-${i}` })));
    const replies = await Promise.all(tokens.map((t) => get('/secure', bearer(t))));
    for (const r of replies) {
      assert.equal(r.status, 401, r.text);
      assert.equal((JSON.parse(r.text) as { error: { reason: string } }).error.reason, 'unknown_key');
    }
    const fetches = idp.hits - hitsBefore;
    t.diagnostic(`30 unknown kids with a 30s cooldown: ${fetches} JWKS fetch(es)`);
    assert.ok(fetches <= 2, `30 unknown kids caused ${fetches} JWKS fetches`);
    assert.equal(up.hits, upstreamBefore);
    // The keys in cache still verify during the cooldown.
    await accepted('/secure', bearer(await token()));
  });

  test('identity provider down and no keys cached: 503 auth_unavailable, upstream not reached; back up: 200', async () => {
    const t = remember(await downIdp.sign(baseClaims()));
    await refused('/down', bearer(t), { status: 503, code: 'auth_unavailable', reason: 'jwks_unavailable', challenge: null });
    // Still a 401 (not 503) without a token: nothing needs the provider to say so.
    await refused('/down', {}, { status: 401, code: 'unauthorized', reason: 'missing_credentials' });
    await downIdp.start();
    const seen = await accepted('/down', bearer(t));
    assert.equal(seen['x-cgw-subject'], 'user-1');
    assert.ok(downIdp.hits >= 1);
  });
});

describe('identity headers cannot be forged', () => {
  const forged = {
    'x-cgw-consumer': 'admin',
    'x-cgw-subject': 'root',
    'x-cgw-auth-method': 'apiKey',
    'x-cgw-scopes': 'admin everything',
    'x-cgw-plan': 'platinum',
    'X-CGW-Extra': 'yes',
  };

  test('on a public route the upstream sees no x-cgw-* header at all', async () => {
    const seen = await accepted('/public', forged);
    assert.deepEqual(Object.keys(seen).filter((h) => h.startsWith('x-cgw-')), []);
  });

  test('on a JWT route the upstream sees the token identity only', async () => {
    const seen = await accepted('/secure', { ...forged, ...bearer(await token()) });
    assert.deepEqual(
      Object.fromEntries(Object.entries(seen).filter(([h]) => h.startsWith('x-cgw-'))),
      { 'x-cgw-auth-method': 'jwt', 'x-cgw-subject': 'user-1', 'x-cgw-scopes': 'orders:read profile' },
    );
  });

  test('forged headers without credentials are refused like any other request', async () => {
    await refused('/secure', forged, { status: 401, code: 'unauthorized', reason: 'missing_credentials' });
    await refused('/keys', forged, { status: 401, code: 'unauthorized', reason: 'missing_credentials', challenge: API_KEY_CHALLENGE });
  });

  const endpointFailures = async (): Promise<number | undefined> =>
    (await adminJson<Array<{ consecutiveFailures: number }>>('/v1/services/api/endpoints'))[0]?.consecutiveFailures;

  test('scopes that are no valid header value are forwarded percent-encoded (not a 502 counted against the upstream)', async () => {
    const failuresBefore = await endpointFailures();
    const seen = await accepted('/secure', bearer(await token({ scope: 'orders:read café 日本 line\nbreak' })));
    assert.equal(seen['x-cgw-scopes'], ['orders:read', ...['café', '日本', 'line\nbreak'].map(encodeURIComponent)].join(' '));
    assert.equal(await endpointFailures(), failuresBefore, 'a client token counted as an upstream failure');
  });

  test('a subject with a lone surrogate is forwarded percent-encoded (not a 500)', async () => {
    const seen = await accepted('/secure', bearer(await token({ sub: 'jörg\ud800' })));
    assert.equal(seen['x-cgw-subject'], encodeURIComponent('jörg\ufffd'));
  });
});

describe('API keys from Consul KV (route /keys)', () => {
  const alice = generateApiKey('alice');
  const key = remember(alice.key);
  const record = { keyHash: alice.keyHash, plan: 'gold', scopes: ['orders:read', 'orders:write'] };
  const CONSUMER = `${PREFIX}consumers/alice`;

  test('a consumer written to KV: its key works, the upstream sees the consumer, not the key', async () => {
    await refused('/keys', { 'x-api-key': key }, { status: 401, code: 'unauthorized', reason: 'invalid_api_key', challenge: API_KEY_CHALLENGE });
    await consul.kvPut(CONSUMER, JSON.stringify(record));
    await waitFor(async () => (await get('/keys', { 'x-api-key': key })).status === 200, { timeoutMs: 15_000, message: 'alice key accepted' });
    const seen = await accepted('/keys/orders', { 'x-api-key': key });
    assert.equal(seen['x-cgw-auth-method'], 'apiKey');
    assert.equal(seen['x-cgw-consumer'], 'alice');
    assert.equal(seen['x-cgw-subject'], 'alice');
    assert.equal(seen['x-cgw-plan'], 'gold');
    assert.equal(seen['x-cgw-scopes'], 'orders:read orders:write');
    assert.equal(seen['x-api-key'], undefined, 'the API key must not be forwarded');
    const consumers = await adminJson<Array<{ id: string; plan: string }>>('/v1/consumers');
    assert.deepEqual(consumers.map((c) => [c.id, c.plan]), [['alice', 'gold']]);
    assert.doesNotMatch(JSON.stringify(consumers), /sha256:/, 'the admin view must not show key hashes');
  });

  test('no key: 401 missing_credentials with the ApiKey challenge', async () => {
    await refused('/keys', {}, { status: 401, code: 'unauthorized', reason: 'missing_credentials', challenge: API_KEY_CHALLENGE });
  });

  test('wrong secret with a valid prefix, an unknown consumer, a malformed key: 401 invalid_api_key', async () => {
    const wrong = remember(`cgw_alice_${'0'.repeat(64)}`);
    const unknown = remember(generateApiKey('mallory').key);
    for (const [label, k] of [['wrong secret', wrong], ['unknown consumer', unknown], ['malformed', remember('not-a-cgw-key')]] as const) {
      await refused('/keys', { 'x-api-key': k }, { status: 401, code: 'unauthorized', reason: 'invalid_api_key', challenge: API_KEY_CHALLENGE }, label);
    }
    // A bearer token is no API key on an API-key-only route.
    await refused('/keys', bearer(await token()), { status: 401, code: 'unauthorized', reason: 'missing_credentials' });
  });

  test('an invalid record pushed over a valid one: the previous record stays in force, cgw status lists the problem', async () => {
    await consul.kvPut(CONSUMER, JSON.stringify({ ...record, keyHash: 'sha256:not-hex', plan: 'silver' }));
    const modifyIndex = (await consul.kvGet(CONSUMER))?.modifyIndex;
    await waitFor(
      async () => (await adminJson<Problem[]>('/v1/problems')).find((p) => p.kind === 'consumer' && p.message.includes(`ModifyIndex ${modifyIndex}`)),
      { timeoutMs: 15_000, message: `consumer problem for ModifyIndex ${modifyIndex}` },
    );
    const problem = (await cliStatus()).problems.find((p) => p.kind === 'consumer' && p.subject === CONSUMER);
    assert.ok(problem, 'cgw status --json lists the consumer problem');
    assert.equal(problem.keptLastGood, true);
    assert.match(problem.message, /keyHash/);
    const seen = await accepted('/keys', { 'x-api-key': key });
    assert.equal(seen['x-cgw-consumer'], 'alice');
    assert.equal(seen['x-cgw-plan'], 'gold', 'the previous record (plan gold) stays in force');
  });

  test('deleting the consumer revokes the key within 1 s', async (t) => {
    await accepted('/keys', { 'x-api-key': key });
    await consul.kvDelete(CONSUMER);
    const deleted = Date.now();
    await waitFor(async () => (await get('/keys', { 'x-api-key': key })).status === 401, { timeoutMs: 1000, intervalMs: 10, message: 'revoked key refused' });
    const ms = Date.now() - deleted;
    t.diagnostic(`revoked key refused ${ms} ms after the KV delete`);
    assert.ok(ms < 1000, `revocation took ${ms} ms`);
    await refused('/keys', { 'x-api-key': key }, { status: 401, code: 'unauthorized', reason: 'invalid_api_key' });
    assert.deepEqual(await adminJson<unknown[]>('/v1/consumers'), []);
  });
});

describe('policy hot reload from KV (route /hot)', () => {
  const KEY = `${PREFIX}policies/hot`;
  const jwtHot = () => jwtPolicy('/hot', idp);

  test('public → JWT required: unauthenticated requests get 401 without a restart', async () => {
    const seen = await accepted('/hot');
    assert.equal(seen['x-cgw-subject'], undefined);
    await consul.kvPut(KEY, toYaml(jwtHot()));
    await waitFor(async () => (await get('/hot')).status === 401, { timeoutMs: 15_000, message: '/hot requires a token' });
    await refused('/hot', {}, { status: 401, code: 'unauthorized', reason: 'missing_credentials', challenge: 'Bearer realm="cgw"' });
    assert.equal((await accepted('/hot', bearer(await token())))['x-cgw-subject'], 'user-1');
  });

  test('an invalid version is rejected (admin, status, metric) and the previous one keeps protecting the route', async () => {
    const goodIndex = (await consul.kvGet(KEY))?.modifyIndex;
    const rejectedBefore = await rejectedTotal('policy');
    // Would make the route public if half-applied; the unknown field makes the whole document invalid.
    await consul.kvPut(KEY, toYaml({ ...hotPublic, auth: { methods: [], publik: true } }));
    const badIndex = (await consul.kvGet(KEY))?.modifyIndex;
    await waitFor(
      async () => (await adminJson<Problem[]>('/v1/problems')).find((p) => p.kind === 'policy' && p.subject === 'policies/hot' && p.message.includes(`ModifyIndex ${badIndex}`)),
      { timeoutMs: 15_000, message: `policy problem for ModifyIndex ${badIndex}` },
    );

    type PolicyView = { id: string; applied: boolean; modifyIndex: number | null; rejected: { source: string; error: string } | null };
    const view = (await adminJson<PolicyView[]>('/v1/policies')).find((p) => p.id === 'policies/hot');
    assert.ok(view);
    assert.equal(view.applied, true);
    assert.equal(view.modifyIndex, goodIndex, 'the previous version stays in force');
    assert.equal(view.rejected?.source, `kv:${KEY}`);
    assert.match(view.rejected?.error ?? '', /publik/);

    const problem = (await cliStatus()).problems.find((p) => p.kind === 'policy' && p.subject === 'policies/hot');
    assert.ok(problem, 'cgw status --json lists the policy problem');
    assert.equal(problem.keptLastGood, true);
    assert.ok((await rejectedTotal('policy')) > rejectedBefore, 'cgw_config_rejected_total{kind="policy"} did not increase');

    await refused('/hot', {}, { status: 401, code: 'unauthorized', reason: 'missing_credentials' });
    await accepted('/hot', bearer(await token()));
  });
});

describe('credentials never reach the logs', () => {
  test('credentials in a query string are not logged either (the access log drops the query)', async () => {
    const t = await token();
    const r = await get(`/public/q?access_token=${encodeURIComponent(t)}&api_key=${remember(`cgw_alice_${'9'.repeat(64)}`)}`);
    assert.equal(r.status, 200, r.text);
    await waitFor(() => gw.logs.some((l) => l.includes('"msg":"access"') && l.includes('"path":"/public/q"')), { timeoutMs: 15_000, message: 'access line for /public/q' });
  });

  test('after everything above, no gateway log line holds a token or API key used in this file', async () => {
    stopping = true;
    assert.equal(await gw.kill(), 0, 'clean shutdown');
    const access = gw.logs.filter((l) => l.includes('"msg":"access"'));
    assert.ok(access.length > 50, `expected access log lines, got ${access.length}`);
    assert.ok(secrets.size > 40, `only ${secrets.size} credentials tracked`);
    const pieces = new Set<string>();
    for (const s of secrets) {
      pieces.add(s);
      // A token's signature, or an API key's secret half, is enough to be a leak on its own.
      const tail = s.includes('.') ? s.slice(s.lastIndexOf('.') + 1) : s.slice(s.lastIndexOf('_') + 1);
      if (tail.length >= 16) pieces.add(tail);
    }
    const leaks = gw.logs.flatMap((line) => [...pieces].filter((p) => line.includes(p)).map(() => line));
    assert.deepEqual(leaks, []);
  });
});
