/**
 * Client certificates, HSTS and redirect-https against a real Consul agent and real upstreams.
 * A test CA (made with openssl) issues client certificates: one allowed, one not on the list, one
 * from another CA, one expired, one SPIFFE-style without a CN. With --tls-client-auth request a
 * route whose policy asks for mtls answers 401 without a certificate, 401 for one that does not
 * verify, 403 for one not allowed, and serves the allowed one with its identity (forged identity
 * headers stripped). With require, handshakes without a verified certificate fail. HSTS is on TLS
 * answers only (errors included); redirect-https from a tag and from a policy sends plain HTTP to
 * the HTTPS port without touching the upstream. Bad policies and a bad CA file change nothing
 * that worked, and Consul changes still apply afterwards.
 */
import assert from 'node:assert/strict';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect as tlsConnect } from 'node:tls';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { freePorts } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';
import { createTestPki, type ClientCert, type TestPki } from '../helpers/client-certs.ts';
import * as pem from '../helpers/tls-certs.ts';

const PREFIX = 'gateway/';
let consul: ConsulAgent;
let pki: TestPki;
let billing: Upstream;
let web: Upstream;
let legacy: Upstream;
let shop: Upstream;

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function httpsCall(port: number, path: string, opts: { cert?: ClientCert; method?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'GET',
        agent: false,
        servername: 'default.test',
        rejectUnauthorized: false,
        ...(opts.cert ? { cert: opts.cert.cert, key: opts.cert.key } : {}),
        headers: { connection: 'close', ...opts.headers },
        timeout: 15_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.once('timeout', () => req.destroy(new Error('timed out')));
    req.once('error', reject);
    req.end();
  });
}

function httpCall(port: number, path: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', agent: false, headers: { connection: 'close', ...opts.headers }, timeout: 15_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once('timeout', () => req.destroy(new Error('timed out')));
    req.once('error', reject);
    req.end(opts.body);
  });
}

async function metric(gw: GatewayProcess, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => pattern.test(l));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

async function problems(gw: GatewayProcess): Promise<{ kind: string; subject: string; message: string }[]> {
  return (await (await fetch(`${gw.adminUrl}/v1/problems`)).json()) as never;
}

const errorOf = (a: Answer): { code?: string; reason?: string } => (JSON.parse(a.body) as { error: { code?: string; reason?: string } }).error;

const BILLING_POLICY = {
  appliesTo: { route: '/billing' },
  auth: { methods: ['mtls'], mtls: { subjects: ['billing-client'], sans: ['spiffe://example.org/ns/prod/sa/reports'] } },
  hsts: { maxAge: '1y', includeSubDomains: true },
};

let certDir: string;

before(async () => {
  pki = createTestPki();
  certDir = pki.dir;
  await Promise.all([writeFile(join(certDir, 'server.crt'), pem.DEFAULT_CERT), writeFile(join(certDir, 'server.key'), pem.DEFAULT_KEY)]);
  consul = await startConsul();
  [billing, web, legacy, shop] = await Promise.all([startUpstream('billing'), startUpstream('web'), startUpstream('legacy'), startUpstream('shop')]);
  await consul.kvPut(`${PREFIX}policies/billing`, JSON.stringify(BILLING_POLICY));
  await consul.kvPut(`${PREFIX}policies/metered`, JSON.stringify({ appliesTo: { route: '/metered' }, auth: { methods: ['mtls'], mtls: { anyVerified: true } }, rateLimits: [{ name: 'per-client', by: 'consumer', limit: 2, window: '1m' }] }));
  await consul.kvPut(`${PREFIX}policies/web`, JSON.stringify({ appliesTo: { service: 'web' }, hsts: { maxAge: '180d' } }));
  await consul.kvPut(`${PREFIX}policies/shop`, JSON.stringify({ appliesTo: { service: 'shop' }, redirectHttps: true, hsts: { maxAge: '2y', includeSubDomains: true, preload: true } }));
  await consul.register({ id: 'billing-1', name: 'billing', port: billing.port, tags: ['urlprefix-/billing', 'urlprefix-/metered'] });
  await consul.register({ id: 'web-1', name: 'web', port: web.port, tags: ['urlprefix-/web'] });
  await consul.register({ id: 'legacy-1', name: 'legacy', port: legacy.port, tags: ['urlprefix-/legacy redirect-https'] });
  await consul.register({ id: 'shop-1', name: 'shop', port: shop.port, tags: ['urlprefix-shop.example.com/shop'] });
});

after(async () => {
  await Promise.all([billing, web, legacy, shop].map((u) => u?.close()));
  await consul?.stop();
  pki?.remove();
});

describe('--tls-client-auth request: route policies decide', () => {
  let gw: GatewayProcess;
  let tlsPort: number;

  before(async () => {
    [tlsPort] = (await freePorts(1)) as [number];
    gw = await startGateway({
      consul: consul.addr,
      args: ['--wait', '5s', '--listen-tls', `127.0.0.1:${tlsPort}`, '--tls-cert', join(certDir, 'server.crt'), '--tls-key', join(certDir, 'server.key'), '--tls-client-auth', 'request', '--tls-client-ca', pki.caFile, '--tls-poll-interval', '200ms'],
    });
    await waitFor(async () => (await httpsCall(tlsPort, '/billing/x', { cert: pki.allowed })).status === 200, { timeoutMs: 30_000, message: '/billing served to the allowed certificate' });
  });
  after(async () => {
    await gw?.kill();
  });

  test('no certificate: 401 client_certificate_required, with a challenge and HSTS; the upstream is not reached', async () => {
    const hits = billing.hits;
    const r = await httpsCall(tlsPort, '/billing/x');
    assert.equal(r.status, 401);
    assert.deepEqual(errorOf(r), { ...errorOf(r), code: 'unauthorized', reason: 'client_certificate_required' });
    assert.equal(r.headers['www-authenticate'], 'ClientCertificate realm="cgw"');
    assert.equal(r.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains');
    assert.equal(billing.hits, hits);
  });

  for (const [name, which] of [['from another CA', 'foreign'], ['expired', 'expired']] as const) {
    test(`a certificate ${name}: 401 client_certificate_unverified`, async () => {
      const hits = billing.hits;
      const r = await httpsCall(tlsPort, '/billing/x', { cert: pki[which] });
      assert.equal(r.status, 401);
      assert.equal(errorOf(r).reason, 'client_certificate_unverified');
      assert.equal(billing.hits, hits);
    });
  }

  test('a verified certificate not on the allow list: 403 certificate_not_allowed', async () => {
    const r = await httpsCall(tlsPort, '/billing/x', { cert: pki.notAllowed });
    assert.equal(r.status, 403);
    assert.deepEqual([errorOf(r).code, errorOf(r).reason], ['certificate_not_allowed', 'client_certificate_not_allowed']);
    assert.equal(r.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains');
  });

  test('the allowed certificate: served; the upstream sees the mtls identity, never the forged one', async () => {
    const before = billing.requests.length;
    const r = await httpsCall(tlsPort, '/billing/x', {
      cert: pki.allowed,
      headers: { 'x-cgw-auth-method': 'jwt', 'x-cgw-subject': 'admin', 'x_cgw_subject': 'admin', 'x-cgw-scopes': 'root' },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains');
    const seen = billing.requests[before]?.headers ?? {};
    assert.equal(seen['x-cgw-auth-method'], 'mtls');
    assert.equal(seen['x-cgw-subject'], 'billing-client');
    assert.equal(seen['x_cgw_subject'], undefined);
    assert.equal(seen['x-cgw-scopes'], undefined);
    assert.equal(seen['x-forwarded-proto'], 'https');
  });

  test('a SPIFFE certificate without a CN: allowed by its URI SAN, which is the subject', async () => {
    const before = billing.requests.length;
    const r = await httpsCall(tlsPort, '/billing/x', { cert: pki.spiffeOnly });
    assert.equal(r.status, 200);
    assert.equal(billing.requests[before]?.headers['x-cgw-subject'], 'spiffe://example.org/ns/prod/sa/reports');
  });

  test('the plain listener: the route wants a certificate, so 401 there, and no HSTS over plain HTTP', async () => {
    const r = await httpCall(gw.listenPort, '/billing/x');
    assert.equal(r.status, 401);
    assert.equal(r.headers['strict-transport-security'], undefined);
  });

  test('rate limits by consumer count each certificate subject on its own', async () => {
    for (let i = 0; i < 2; i++) assert.equal((await httpsCall(tlsPort, '/metered', { cert: pki.allowed })).status, 200);
    assert.equal((await httpsCall(tlsPort, '/metered', { cert: pki.allowed })).status, 429);
    assert.equal((await httpsCall(tlsPort, '/metered', { cert: pki.spiffeOnly })).status, 200, 'another subject has its own count');
  });

  test('HSTS: on TLS answers of a route whose policy sets it, never on plain HTTP, never on routes without it', async () => {
    const tls = await httpsCall(tlsPort, '/web/a');
    assert.equal(tls.status, 200);
    assert.equal(tls.headers['strict-transport-security'], 'max-age=15552000');
    const plain = await httpCall(gw.listenPort, '/web/a');
    assert.equal(plain.status, 200);
    assert.equal(plain.headers['strict-transport-security'], undefined);
    // The upstream's own header is replaced by the route's over TLS.
    const none = await httpsCall(tlsPort, '/legacy/a');
    assert.equal(none.status, 200);
    assert.equal(none.headers['strict-transport-security'], undefined);
  });

  test('redirect-https from a tag: 301 for GET with the path and query, the upstream never reached; TLS serves', async () => {
    const hits = legacy.hits;
    const r = await httpCall(gw.listenPort, '/legacy/a/b?x=1&y=%20', { headers: { host: `Example.org:${gw.listenPort}` } });
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, `https://example.org:${tlsPort}/legacy/a/b?x=1&y=%20`);
    assert.equal(r.headers['strict-transport-security'], undefined);
    const post = await httpCall(gw.listenPort, '/legacy/form', { method: 'POST', headers: { host: 'example.org', 'content-type': 'text/plain' }, body: 'secret=1' });
    assert.equal(post.status, 308, 'other methods keep their method');
    assert.equal(legacy.hits, hits);
    assert.equal((await httpsCall(tlsPort, '/legacy/a')).status, 200);
    assert.ok((await metric(gw, /^cgw_https_redirects_total\{route="\/legacy"\} /)) >= 2);
  });

  test('redirect-https from a policy: the route\'s own host, never another; a Host that is no host name is refused', async () => {
    const hits = shop.hits;
    const r = await httpCall(gw.listenPort, '/shop/cart', { headers: { host: 'shop.example.com' } });
    assert.equal(r.status, 301);
    assert.equal(r.headers.location, `https://shop.example.com:${tlsPort}/shop/cart`);
    // A host-less route: the Host it matched is used, but only when it is a plain host name.
    for (const host of ['evil.com/x', 'a@b', 'x y']) {
      const bad = await httpCall(gw.listenPort, '/legacy/a', { headers: { host } });
      assert.ok(bad.status === 400, `Host ${host}: ${bad.status} ${String(bad.headers.location)}`);
    }
    assert.equal(shop.hits, hits);
    const tls = await httpsCall(tlsPort, '/shop/cart', { headers: { host: 'shop.example.com' } });
    assert.equal(tls.status, 200);
    assert.equal(tls.headers['strict-transport-security'], 'max-age=63072000; includeSubDomains; preload');
  });

  test('many clients at once with mixed certificates each get their own answer', async () => {
    const cases = [
      [pki.allowed, 200],
      [pki.notAllowed, 403],
      [pki.foreign, 401],
      [undefined, 401],
    ] as const;
    const answers = await Promise.all(Array.from({ length: 24 }, (_, i) => cases[i % cases.length] as (typeof cases)[number]).map(async ([cert, want]) => [await httpsCall(tlsPort, '/billing/c', cert ? { cert } : {}), want] as const));
    for (const [answer, want] of answers) assert.equal(answer.status, want);
  });

  test('cgw status shows the client-auth mode and the CA; connections are counted by certificate', async () => {
    const st = await runCli(['status', '--admin', gw.adminUrl]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /^client certs: request \(1 CA from .*ca\.crt\)$/m);
    assert.match(st.stdout, /^ {2}ca: CN=cgw test client CA \(until /m);
    assert.ok((await metric(gw, /^cgw_tls_client_certificates_total\{result="verified"\} /)) > 0);
    assert.ok((await metric(gw, /^cgw_tls_client_certificates_total\{result="unverified"\} /)) > 0);
    assert.ok((await metric(gw, /^cgw_tls_client_certificates_total\{result="absent"\} /)) > 0);
    assert.ok((await metric(gw, /^cgw_auth_rejections_total\{route="\/billing",reason="client_certificate_unverified"\} /)) > 0);
  });

  test('the CA file changes: a good bundle verifies the next handshakes, a bad one is refused and shown while the last good one verifies', async () => {
    const replace = async (text: string): Promise<void> => {
      await writeFile(`${pki.caFile}.tmp`, text);
      await rename(`${pki.caFile}.tmp`, pki.caFile);
    };
    try {
      await replace(pki.otherCaPem);
      await waitFor(async () => (await httpsCall(tlsPort, '/billing/x', { cert: pki.foreign })).status === 200 || undefined, { timeoutMs: 20_000, message: 'a certificate of the new CA verified' });
      assert.equal((await httpsCall(tlsPort, '/billing/x', { cert: pki.allowed })).status, 401, 'the old CA no longer verifies');
      await replace(pki.leafPem);
      await waitFor(async () => /REFUSED: .*is not a CA certificate/.test((await runCli(['status', '--admin', gw.adminUrl])).stdout) || undefined, { timeoutMs: 20_000, message: 'the refused bundle shown' });
      assert.equal((await httpsCall(tlsPort, '/billing/x', { cert: pki.foreign })).status, 200, 'the last good bundle still verifies');
      assert.ok((await metric(gw, /^cgw_tls_certificate_rejections_total\{source="client-ca:/)) >= 1);
    } finally {
      await replace(pki.caPem);
    }
    await waitFor(async () => (await httpsCall(tlsPort, '/billing/x', { cert: pki.allowed })).status === 200 || undefined, { timeoutMs: 20_000, message: 'the first CA verifies again' });
    assert.equal((await httpsCall(tlsPort, '/billing/x', { cert: pki.foreign })).status, 401);
  });

  test('bad mtls policies are refused and the last good one keeps protecting; Consul changes still apply', async () => {
    const key = `${PREFIX}policies/billing`;
    const bad = [
      { ...BILLING_POLICY, auth: { methods: ['mtls'], mtls: { sans: ['*.com'] } } },
      { ...BILLING_POLICY, auth: { methods: ['mtls'], mtls: { subjects: Array.from({ length: 5000 }, (_, i) => `c${i}`) } } },
      { ...BILLING_POLICY, auth: { methods: ['mtls'], mtls: { subjects: [] } } },
    ];
    const texts = [...bad.map((b) => JSON.stringify(b)), '{"appliesTo":{"route":"/billing"},"auth":{"methods":["mtls"],"mtls":{"subjects":["x"],"__proto__":{"anyVerified":true}}}}', '{"appliesTo":{"route":"/billing"},"hsts":{"preload":true}}'];
    for (const text of texts) {
      const rejected = await metric(gw, /^cgw_config_rejected_total\{kind="policy"\} /);
      await consul.kvPut(key, text);
      await waitFor(async () => (await metric(gw, /^cgw_config_rejected_total\{kind="policy"\} /)) > rejected || undefined, { timeoutMs: 20_000, message: `the refusal of ${text.slice(0, 80)} counted` });
      assert.ok((await problems(gw)).some((p) => p.subject.includes('policies/billing')), 'and shown');
      assert.equal((await httpsCall(tlsPort, '/billing/x', { cert: pki.notAllowed })).status, 403, 'the last good allow list still applies');
      assert.equal((await httpsCall(tlsPort, '/billing/x', { cert: pki.allowed })).status, 200);
    }
    await consul.kvPut(key, JSON.stringify(BILLING_POLICY));
    await waitFor(async () => !(await problems(gw)).some((p) => p.subject.includes('policies/billing')) || undefined, { timeoutMs: 20_000, message: 'good again' });
    const late = await startUpstream('late');
    try {
      await consul.register({ id: 'late-1', name: 'late', port: late.port, tags: ['urlprefix-/late redirect-https'] });
      await waitFor(async () => (await httpCall(gw.listenPort, '/late/x')).status === 301 || undefined, { timeoutMs: 20_000, message: 'a service registered afterwards is redirected' });
      assert.equal((await httpsCall(tlsPort, '/late/x')).status, 200);
    } finally {
      await consul.deregister('late-1');
      await late.close();
    }
  });
});

/** A TLS handshake and one request; resolves with the status or the error that ended it. */
function attempt(port: number, cert: ClientCert | undefined): Promise<number | string> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'default.test', rejectUnauthorized: false, ...(cert ? { cert: cert.cert, key: cert.key } : {}) }, () => {
      socket.write('GET /web/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    });
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (text += d));
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    socket.on('close', () => resolve(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ? Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]) : 'closed without an answer'));
    socket.setTimeout(15_000, () => socket.destroy(new Error('timed out')));
  });
}

describe('--tls-client-auth require, with two workers: no verified certificate, no handshake', () => {
  let gw: GatewayProcess;
  let tlsPort: number;

  before(async () => {
    [tlsPort] = (await freePorts(1)) as [number];
    gw = await startGateway({
      consul: consul.addr,
      args: ['--workers', '2', '--wait', '5s', '--listen-tls', `127.0.0.1:${tlsPort}`, '--tls-cert', join(certDir, 'server.crt'), '--tls-key', join(certDir, 'server.key'), '--tls-client-auth', 'require', '--tls-client-ca', pki.caFile],
    });
    await waitFor(async () => (await attempt(tlsPort, pki.allowed)) === 200 || undefined, { timeoutMs: 30_000, message: '/web served to a verified certificate' });
  });
  after(async () => {
    await gw?.kill();
  });

  test('refused: without a certificate, from another CA, expired; served: any verified one; the refusals are counted', async () => {
    const hits = web.hits;
    for (const cert of [undefined, pki.foreign, pki.expired]) {
      const out = await attempt(tlsPort, cert);
      assert.equal(typeof out, 'string', `the handshake must fail, got ${String(out)}`);
    }
    assert.equal(web.hits, hits);
    assert.equal(await attempt(tlsPort, pki.notAllowed), 200, 'no route policy asks for mtls on /web: any verified certificate is let in');
    await waitFor(async () => (await metric(gw, /^cgw_tls_client_certificates_total\{result="refused"\} /)) >= 3 || undefined, { timeoutMs: 10_000, message: 'three refusals counted' });
    assert.equal(await attempt(tlsPort, pki.allowed), 200, 'still serving');
  });

  test('each worker verifies with the CA; cgw status shows the mode', async () => {
    for (let i = 0; i < 6; i++) assert.equal(await attempt(tlsPort, pki.allowed), 200);
    const st = await runCli(['status', '--admin', gw.adminUrl]);
    assert.match(st.stdout, /^client certs: require \(1 CA from /m);
  });
});

describe('settings no listener can honour, and bad start flags', () => {
  test('redirect-https and mtls without the listeners they need: problems shown, the routes serve', async () => {
    const gw = await startGateway({ consul: consul.addr, args: ['--wait', '5s'] });
    try {
      await waitFor(async () => (await httpCall(gw.listenPort, '/legacy/x')).status === 200 || undefined, { timeoutMs: 30_000, message: '/legacy served on plain HTTP' });
      const shown = await problems(gw);
      assert.ok(shown.some((p) => p.subject === '/legacy' && /redirect-https \(tag "urlprefix-\/legacy redirect-https"\) needs an HTTPS listener/.test(p.message)), JSON.stringify(shown));
      assert.ok(shown.some((p) => p.subject === 'policies/billing' && /does not ask for them \(--tls-client-auth none\)/.test(p.message)), JSON.stringify(shown));
    } finally {
      await gw.kill();
    }
  });

  const flags: [string, string[], RegExp][] = [
    ['require without a CA', ['--listen-tls', '127.0.0.1:0', '--tls-cert', 'x', '--tls-key', 'y', '--tls-client-auth', 'require'], /--tls-client-auth: .*needs --tls-client-ca/],
    ['client auth without --listen-tls', ['--tls-client-auth', 'request', '--tls-client-ca', 'ca.pem'], /--tls-client-auth: --tls-client-auth needs an HTTPS listener/],
    ['an unknown mode', ['--tls-client-auth', 'maybe'], /Allowed choices are none, request, require/],
  ];
  for (const [name, args, message] of flags) {
    test(`refused at start: ${name}`, async () => {
      const r = await runCli(['start', '--consul', consul.addr, ...args]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, message);
    });
  }

  test('refused at start: a CA bundle holding a leaf certificate, or missing, names the file', async () => {
    const leaf = join(certDir, 'leaf.pem');
    await writeFile(leaf, pki.leafPem);
    const [port] = (await freePorts(1)) as [number];
    for (const [file, message] of [[leaf, /is not a CA certificate/], [join(certDir, 'nope.pem'), /cannot be read \(ENOENT\)/]] as const) {
      const r = await runCli(['start', '--consul', consul.addr, '--listen-tls', `127.0.0.1:${port}`, '--tls-cert', join(certDir, 'server.crt'), '--tls-key', join(certDir, 'server.key'), '--tls-client-auth', 'request', '--tls-client-ca', file]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(`cannot start: --tls-client-ca ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
      assert.match(r.stderr, message);
    }
  });
});
