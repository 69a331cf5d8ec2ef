import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { UpstreamPools } from '../../src/balancer/upstream-pools.ts';
import { listenOn } from '../../src/core/net.ts';
import { classifyFailure } from '../../src/proxy/errors.ts';
import { DEFAULT_CERT, DEFAULT_KEY, API_CERT } from '../helpers/tls-certs.ts';

// The test certificate is self-signed for 127.0.0.1 and localhost.
let server: Server;
let port = 0;

before(async () => {
  server = createServer({ cert: DEFAULT_CERT, key: DEFAULT_KEY }, (req, res) => res.end(`tls ${req.headers.host ?? ''}`));
  port = await listenOn(server, '127.0.0.1', 0);
});

after(() => {
  server.closeAllConnections();
  server.close();
});

const options = { connectTimeoutMs: 5_000, connectionsPerEndpoint: 2 };

async function get(pools: UpstreamPools, target: Parameters<UpstreamPools['get']>[0]): Promise<{ body: string } | { error: unknown }> {
  try {
    const res = await pools.get(target).pool.request({ method: 'GET', path: '/', headersTimeout: 10_000 });
    return { body: await res.body.text() };
  } catch (error) {
    return { error };
  }
}

describe('pools per transport', () => {
  test('http and https to the same address:port, verified and not, never share a pool', () => {
    const pools = new UpstreamPools(options);
    const plain = pools.get({ key: '127.0.0.1:9', address: '127.0.0.1', port: 9 });
    const verified = pools.get({ key: 'https://127.0.0.1:9', address: '127.0.0.1', port: 9, scheme: 'https' });
    const insecure = pools.get({ key: 'https://127.0.0.1:9', address: '127.0.0.1', port: 9, scheme: 'https', tlsSkipVerify: true });
    const named = pools.get({ key: 'https://127.0.0.1:9', address: '127.0.0.1', port: 9, scheme: 'https', serverName: 'api.example.com' });
    assert.equal(new Set([plain, verified, insecure, named]).size, 4);
    assert.equal(new Set([plain.poolId, verified.poolId, insecure.poolId, named.poolId]).size, 4);
    assert.equal(pools.get({ key: 'https://127.0.0.1:9', address: '127.0.0.1', port: 9, scheme: 'https', tlsSkipVerify: true }), insecure);
    assert.equal(plain.authority, '127.0.0.1:9');
    void pools.closeAll(0);
  });
});

describe('TLS to a self-signed upstream', () => {
  test('without trust the handshake fails, read as a connect failure answered 502 upstream_tls_error with the reason', async () => {
    const pools = new UpstreamPools(options);
    const out = await get(pools, { key: `https://127.0.0.1:${port}`, address: '127.0.0.1', port, scheme: 'https' });
    assert.ok('error' in out, 'expected the handshake to fail');
    const failure = classifyFailure(out.error);
    assert.equal(failure.kind, 'connect-failure');
    assert.equal(failure.code, 'upstream_tls_error');
    assert.match(failure.message ?? '', /self-signed certificate.*--upstream-ca.*tlsskipverify=true/);
    await pools.closeAll(0);
  });

  test('tlsskipverify connects', async () => {
    const pools = new UpstreamPools(options);
    assert.deepEqual(await get(pools, { key: `https://127.0.0.1:${port}`, address: '127.0.0.1', port, scheme: 'https', tlsSkipVerify: true }), { body: `tls 127.0.0.1:${port}` });
    await pools.closeAll(0);
  });

  test('--upstream-ca holding the certificate verifies it against the address', async () => {
    const pools = new UpstreamPools({ ...options, upstreamCa: DEFAULT_CERT });
    assert.deepEqual(await get(pools, { key: `https://127.0.0.1:${port}`, address: '127.0.0.1', port, scheme: 'https' }), { body: `tls 127.0.0.1:${port}` });
    await pools.closeAll(0);
  });

  test('a server name (host=) the certificate does not hold is refused: ERR_TLS_CERT_ALTNAME_INVALID', async () => {
    const pools = new UpstreamPools({ ...options, upstreamCa: DEFAULT_CERT });
    const out = await get(pools, { key: `https://127.0.0.1:${port}`, address: '127.0.0.1', port, scheme: 'https', serverName: 'api.example.com' });
    assert.ok('error' in out);
    assert.equal(classifyFailure(out.error).code, 'upstream_tls_error');
    assert.equal((out.error as { code?: string }).code, 'ERR_TLS_CERT_ALTNAME_INVALID');
    await pools.closeAll(0);
  });

  test('a CA that did not sign it does not help', async () => {
    const pools = new UpstreamPools({ ...options, upstreamCa: API_CERT });
    const out = await get(pools, { key: `https://127.0.0.1:${port}`, address: '127.0.0.1', port, scheme: 'https' });
    assert.ok('error' in out);
    assert.equal(classifyFailure(out.error).code, 'upstream_tls_error');
    await pools.closeAll(0);
  });

  test('https to a plain HTTP port is a TLS failure too', async () => {
    const { createServer: createHttp } = await import('node:http');
    const plain = createHttp((_req, res) => res.end('plain'));
    const plainPort = await listenOn(plain, '127.0.0.1', 0);
    try {
      const pools = new UpstreamPools(options);
      const out = await get(pools, { key: `https://127.0.0.1:${plainPort}`, address: '127.0.0.1', port: plainPort, scheme: 'https', tlsSkipVerify: true });
      assert.ok('error' in out);
      assert.equal(classifyFailure(out.error).code, 'upstream_tls_error', String((out.error as { code?: string }).code));
      await pools.closeAll(0);
    } finally {
      plain.closeAllConnections();
      plain.close();
    }
  });
});
