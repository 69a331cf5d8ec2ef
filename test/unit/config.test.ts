import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ZodError } from 'zod';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultGatewayId } from '../../src/core/kv-layout.ts';
import { consulEnvDefaults, formatConfigError, parseGatewayConfig, type GatewayConfig, type GatewayConfigInput } from '../../src/config.ts';

/** Parses and returns the formatted error text, failing the test if parsing succeeds. */
function configError(input: GatewayConfigInput): string {
  try {
    parseGatewayConfig(input);
  } catch (err) {
    assert.ok(err instanceof ZodError, `expected a ZodError, got ${String(err)}`);
    return formatConfigError(err);
  }
  assert.fail(`expected ${JSON.stringify(input)} to be rejected`);
}

describe('parseGatewayConfig: defaults', () => {
  test('an empty input gives the documented defaults', () => {
    const config = parseGatewayConfig({});
    const expected: GatewayConfig = {
      consul: 'http://127.0.0.1:8500',
      consistency: 'default',
      wait: 60_000,
      consulMaxConns: 32,
      listen: { host: '0.0.0.0', port: 8080 },
      admin: { host: '127.0.0.1', port: 9901 },
      adminInsecure: false,
      kvPrefix: 'gateway/',
      fabioKvKey: 'fabio/config',
      fabioKv: true,
      kvRuntimePrefix: 'gateway-runtime/',
      gatewayId: defaultGatewayId(8080),
      register: true,
      registerService: 'cgw',
      registerAddress: '127.0.0.1',
      logLevel: 'info',
      logFormat: 'auto',
      otlpServiceName: 'cgw',
      otlp: null,
      allowWarning: false,
      accessLog: true,
      accessLogSample: 1,
      picker: 'round_robin',
      connectTimeout: 2000,
      responseTimeout: 60_000,
      drainTimeout: 15_000,
      resyncInterval: 300_000,
      redisSentinelName: 'mymaster',
      maxHeaderSize: 65_536,
      maxHeaderCount: 200,
      maxRequestsPerEndpoint: 256,
      clientHeaderTimeout: 10_000,
      clientBodyTimeout: 30_000,
      requestBufferSize: 65_536,
      cacheMaxBytes: 64 * 1024 * 1024,
      mirrorMaxInFlight: 100,
      listenTls: [],
      tlsCert: [],
      tlsKey: [],
      tlsMinVersion: 'TLSv1.2',
      tlsPollInterval: 5_000,
      tlsClientAuth: 'none',
      h2c: false,
      http2MaxConcurrentStreams: 100,
      stateFileWait: 5_000,
    };
    assert.deepEqual(config, expected);
  });
});

describe('access-log sampling', () => {
  test('a share between 0 and 1', () => {
    assert.equal(parseGatewayConfig({ accessLogSample: '0.25' }).accessLogSample, 0.25);
    for (const bad of ['-0.1', '1.5', 'half', '__proto__']) assert.match(configError({ accessLogSample: bad }), /accessLogSample|share|at (least|most)/);
  });
});

describe('admin API token', () => {
  test('a non-loopback --admin without a token is refused', () => {
    for (const admin of ['0.0.0.0:9901', ':9901', '[::]:9901', '10.0.0.5:9901']) assert.match(configError({ admin }), /listens beyond loopback without a token/);
  });
  test('loopback needs none', () => {
    for (const admin of ['127.0.0.1:9901', '127.1.2.3:9901', 'localhost:9901', '[::1]:9901']) assert.equal(parseGatewayConfig({ admin }).adminToken, undefined);
  });
  test('tokens are long, visible ASCII; a file is read and trimmed', () => {
    for (const adminToken of ['short', 'has a space in it!!', 'x'.repeat(4097), 'tab\there-and-long-enough']) assert.match(configError({ adminToken }), /admin token/);
    const dir = mkdtempSync(join(tmpdir(), 'cgw-token-'));
    try {
      writeFileSync(join(dir, 'token'), `  ${'s'.repeat(20)}\n`);
      assert.equal(parseGatewayConfig({ adminTokenFile: join(dir, 'token') }).adminToken, 's'.repeat(20));
      writeFileSync(join(dir, 'bad'), 'short\n');
      assert.match(configError({ adminTokenFile: join(dir, 'bad') }), /at least 16 characters/);
      assert.match(configError({ adminTokenFile: join(dir, 'missing') }), /cannot read/);
      assert.match(configError({ adminTokenFile: join(dir, 'token'), adminToken: 'x'.repeat(16) }), /not both/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('runtime prefix and gateway id', () => {
  test('the runtime prefix lies beside the watched prefix', () => {
    assert.equal(parseGatewayConfig({ kvPrefix: 'teams/a/cgw' }).kvRuntimePrefix, 'teams/a/cgw-runtime/');
    assert.equal(parseGatewayConfig({ kvPrefix: '' }).kvRuntimePrefix, 'cgw-runtime/');
    assert.equal(parseGatewayConfig({ kvRuntimePrefix: 'fleet/state' }).kvRuntimePrefix, 'fleet/state/');
  });
  test('a runtime prefix inside the watched prefix (or holding it) is refused', () => {
    assert.match(configError({ kvRuntimePrefix: 'gateway/runtime' }), /outside --kv-prefix/);
    assert.match(configError({ kvPrefix: 'a/b', kvRuntimePrefix: 'a' }), /outside --kv-prefix/);
  });
  test('gateway ids are one key segment', () => {
    assert.equal(parseGatewayConfig({ gatewayId: 'edge-1' }).gatewayId, 'edge-1');
    for (const bad of ['a/b', '', 'x'.repeat(201), '../x', '..', 'a b', '__proto__/x']) assert.match(configError({ gatewayId: bad }), /gateway id/);
    assert.equal(defaultGatewayId(8080, 'my host/1'), 'my-host-1-8080');
  });
});

describe('parseGatewayConfig: accepted values', () => {
  const cases: { name: string; input: GatewayConfigInput; check: Partial<GatewayConfig> }[] = [
    { name: 'milliseconds', input: { connectTimeout: '500ms' }, check: { connectTimeout: 500 } },
    { name: 'redis url', input: { redis: 'redis://:pw@127.0.0.1:6379/2' }, check: { redis: 'redis://:pw@127.0.0.1:6379/2' } },
    {
      name: 'sentinel list',
      input: { redisSentinels: '127.0.0.1:26379, 127.0.0.2:26379' },
      check: { redisSentinels: [{ host: '127.0.0.1', port: 26379 }, { host: '127.0.0.2', port: 26379 }] },
    },
    { name: 'policies dir', input: { policies: 'policies' }, check: { policies: 'policies' } },
    { name: 'minutes', input: { wait: '5m' }, check: { wait: 300_000 } },
    { name: 'seconds', input: { responseTimeout: '30s' }, check: { responseTimeout: 30_000 } },
    { name: 'compound duration', input: { drainTimeout: '1m30s' }, check: { drainTimeout: 90_000 } },
    { name: 'fractional duration', input: { connectTimeout: '1.5s' }, check: { connectTimeout: 1500 } },
    { name: 'zero drain timeout', input: { drainTimeout: '0s' }, check: { drainTimeout: 0 } },
    { name: 'wait at the 10m limit', input: { wait: '10m' }, check: { wait: 600_000 } },
    { name: 'IPv4 listen address', input: { listen: '127.0.0.1:18080' }, check: { listen: { host: '127.0.0.1', port: 18080 } } },
    { name: 'host name listen address', input: { listen: 'localhost:80' }, check: { listen: { host: 'localhost', port: 80 } } },
    { name: 'bracketed IPv6 listen address', input: { listen: '[::1]:80' }, check: { listen: { host: '::1', port: 80 } } },
    { name: 'bracketed IPv6 admin address (with a token: it is not loopback)', input: { admin: '[fd00::1]:9901', adminToken: 't'.repeat(16) }, check: { admin: { host: 'fd00::1', port: 9901 } } },
    { name: 'a non-loopback admin without a token, accepted as insecure', input: { admin: '0.0.0.0:9901', adminInsecure: true }, check: { adminInsecure: true } },
    { name: 'all interfaces, Go style', input: { listen: ':8080' }, check: { listen: { host: '', port: 8080 } } },
    { name: 'admin as the URL the CLI uses', input: { admin: 'http://127.0.0.1:9901' }, check: { admin: { host: '127.0.0.1', port: 9901 } } },
    { name: 'admin URL with a trailing slash', input: { admin: 'http://[::1]:9901/' }, check: { admin: { host: '::1', port: 9901 } } },
    { name: 'port 0 (pick a free port)', input: { listen: '127.0.0.1:0' }, check: { listen: { host: '127.0.0.1', port: 0 } } },
    { name: 'port 65535', input: { admin: '127.0.0.1:65535' }, check: { admin: { host: '127.0.0.1', port: 65535 } } },
    { name: 'kv prefix gets a trailing slash', input: { kvPrefix: 'edge' }, check: { kvPrefix: 'edge/' } },
    { name: 'nested kv prefix gets a trailing slash', input: { kvPrefix: 'teams/edge' }, check: { kvPrefix: 'teams/edge/' } },
    { name: 'kv prefix with a slash is kept', input: { kvPrefix: 'edge/' }, check: { kvPrefix: 'edge/' } },
    { name: 'empty kv prefix stays empty', input: { kvPrefix: '' }, check: { kvPrefix: '' } },
    { name: "fabio's own default key /fabio/config loses its leading slash", input: { fabioKvKey: '/fabio/config' }, check: { fabioKvKey: 'fabio/config' } },
    { name: 'fabio key with a trailing slash', input: { fabioKvKey: 'edge/routes/' }, check: { fabioKvKey: 'edge/routes' } },
    { name: 'empty fabio key turns the fabio routes off', input: { fabioKvKey: '' }, check: { fabioKvKey: '' } },
    { name: '--no-fabio-kv', input: { fabioKv: false }, check: { fabioKv: false } },
    { name: 'fabio key under the gateway prefix, beside its areas', input: { fabioKvKey: 'gateway/fabio' }, check: { fabioKvKey: 'gateway/fabio' } },
    { name: 'an overlapping fabio key is fine when it is turned off', input: { fabioKvKey: 'gateway', fabioKv: false }, check: { fabioKv: false } },
    { name: 'consul address without scheme', input: { consul: '10.0.0.5:8500' }, check: { consul: 'http://10.0.0.5:8500' } },
    { name: 'consul https address', input: { consul: 'https://consul.example:8501' }, check: { consul: 'https://consul.example:8501' } },
    { name: 'consul trailing slash removed', input: { consul: 'http://consul:8500/' }, check: { consul: 'http://consul:8500' } },
    { name: 'max connections from a string', input: { consulMaxConns: '32' }, check: { consulMaxConns: 32 } },
    { name: 'least-request picker', input: { picker: 'least_request' }, check: { picker: 'least_request' } },
    { name: 'stale consistency', input: { consistency: 'stale' }, check: { consistency: 'stale' } },
  ];
  for (const { name, input, check } of cases) {
    test(`${name}: ${JSON.stringify(input)}`, () => {
      const config = parseGatewayConfig(input);
      for (const [key, value] of Object.entries(check)) {
        assert.deepEqual(config[key as keyof GatewayConfig], value, key);
      }
    });
  }
});

describe('parseGatewayConfig: rejected values name the flag', () => {
  const cases: { name: string; input: GatewayConfigInput; error: RegExp }[] = [
    { name: 'redis url without scheme', input: { redis: '127.0.0.1:6379' }, error: /--redis: expected redis:\/\// },
    { name: 'bad sentinel entry', input: { redisSentinels: 'nohost' }, error: /--redis-sentinels/ },
    { name: 'duration text', input: { connectTimeout: 'soon' }, error: /^--connect-timeout: not a duration: "soon"/ },
    { name: 'duration without unit', input: { wait: '30' }, error: /^--wait: not a duration: "30"/ },
    { name: 'negative duration', input: { drainTimeout: '-1s' }, error: /^--drain-timeout: not a duration/ },
    { name: 'Go duration unit not supported', input: { resyncInterval: '1d' }, error: /^--resync-interval: not a duration/ },
    { name: 'wait above 10m', input: { wait: '11m' }, error: /^--wait: must be between 1s and 10m/ },
    { name: 'wait below 1s', input: { wait: '500ms' }, error: /^--wait: must be between/ },
    { name: 'response timeout too short', input: { responseTimeout: '5ms' }, error: /^--response-timeout: must be between 10ms/ },
    { name: 'listen without port', input: { listen: 'localhost' }, error: /^--listen: expected host:port/ },
    { name: 'listen port too large', input: { listen: '127.0.0.1:99999' }, error: /^--listen: port must be 0-65535/ },
    { name: 'unbracketed IPv6', input: { listen: '::1:80' }, error: /^--listen: expected host:port/ },
    { name: 'admin URL with a path', input: { admin: 'http://127.0.0.1:9901/v1' }, error: /^--admin: expected host:port/ },
    { name: 'admin with an https scheme', input: { admin: 'https://127.0.0.1:9901' }, error: /^--admin: expected host:port/ },
    { name: 'kv prefix with spaces', input: { kvPrefix: 'my prefix' }, error: /^--kv-prefix: KV prefix may hold/ },
    { name: 'fabio key with spaces', input: { fabioKvKey: 'fabio config' }, error: /^--fabio-kv-key: a KV key may hold/ },
    { name: 'fabio key with a .. segment', input: { fabioKvKey: 'fabio/../gateway' }, error: /^--fabio-kv-key: a KV key has no empty/ },
    { name: 'fabio key with an empty segment', input: { fabioKvKey: 'fabio//config' }, error: /^--fabio-kv-key: a KV key has no empty/ },
    { name: 'fabio key whose subtree holds the gateway prefix', input: { fabioKvKey: 'gateway' }, error: /^--fabio-kv-key: fabio's key and the keys under it must not hold the gateway's own keys/ },
    { name: 'fabio key above a nested gateway prefix', input: { fabioKvKey: 'teams', kvPrefix: 'teams/edge' }, error: /must not hold the gateway's own keys/ },
    { name: 'fabio key among the route documents', input: { fabioKvKey: 'gateway/routes' }, error: /must not hold the gateway's own keys/ },
    { name: 'fabio key among the canary weights', input: { fabioKvKey: 'gateway/canary/web' }, error: /must not hold the gateway's own keys/ },
    { name: 'fabio key among the documents of an empty prefix', input: { fabioKvKey: 'policies', kvPrefix: '' }, error: /must not hold the gateway's own keys/ },
    { name: 'consul with a non-http scheme', input: { consul: 'ftp://consul:21' }, error: /^--consul: expected an http\(s\) URL/ },
    { name: 'too many consul connections', input: { consulMaxConns: 500 }, error: /^--consul-max-conns: / },
    { name: 'unknown picker', input: { picker: 'random' as 'round_robin' }, error: /^--picker: .*round_robin/ },
    { name: 'bad datacenter', input: { dc: 'dc 1' }, error: /^--dc: datacenter names/ },
  ];
  for (const { name, input, error } of cases) {
    test(`${name}: ${JSON.stringify(input)}`, () => {
      assert.match(configError(input), error);
    });
  }

  test('several bad fields give one line each', () => {
    const lines = configError({ wait: 'x', listen: 'nope' }).split('\n');
    assert.equal(lines.length, 2);
    assert.ok(lines.some((l) => l.startsWith('--wait: ')));
    assert.ok(lines.some((l) => l.startsWith('--listen: ')));
  });
});

describe('consulEnvDefaults', () => {
  const cases: { name: string; env: NodeJS.ProcessEnv; expected: Partial<GatewayConfigInput> }[] = [
    { name: 'nothing set', env: {}, expected: {} },
    { name: 'address without scheme → http', env: { CONSUL_HTTP_ADDR: '10.0.0.5:8500' }, expected: { consul: 'http://10.0.0.5:8500' } },
    {
      name: 'address without scheme and CONSUL_HTTP_SSL → https',
      env: { CONSUL_HTTP_ADDR: '10.0.0.5:8501', CONSUL_HTTP_SSL: 'true' },
      expected: { consul: 'https://10.0.0.5:8501' },
    },
    { name: 'address with scheme kept', env: { CONSUL_HTTP_ADDR: 'https://consul:8501' }, expected: { consul: 'https://consul:8501' } },
    {
      name: 'token and TLS files',
      env: {
        CONSUL_HTTP_TOKEN: 'secret',
        CONSUL_CACERT: '/ca.pem',
        CONSUL_CLIENT_CERT: '/cert.pem',
        CONSUL_CLIENT_KEY: '/key.pem',
        CONSUL_TLS_SERVER_NAME: 'consul.internal',
      },
      expected: { token: 'secret', caFile: '/ca.pem', certFile: '/cert.pem', keyFile: '/key.pem', tlsServerName: 'consul.internal' },
    },
    { name: 'empty values are ignored', env: { CONSUL_HTTP_ADDR: '', CONSUL_HTTP_TOKEN: '' }, expected: {} },
  ];
  for (const { name, env, expected } of cases) {
    test(name, () => assert.deepEqual(consulEnvDefaults(env), expected));
  }

  test('environment defaults parse into a valid config', () => {
    const config = parseGatewayConfig(consulEnvDefaults({ CONSUL_HTTP_ADDR: 'consul.service:8500', CONSUL_HTTP_TOKEN: 't0k' }));
    assert.equal(config.consul, 'http://consul.service:8500');
    assert.equal(config.token, 't0k');
  });

  test('flags win over the environment', () => {
    const config = parseGatewayConfig({ ...consulEnvDefaults({ CONSUL_HTTP_ADDR: '10.0.0.5:8500' }), consul: 'http://127.0.0.1:18500' });
    assert.equal(config.consul, 'http://127.0.0.1:18500');
  });
});

describe('parseGatewayConfig: TLS listeners', () => {
  const refused: { name: string; input: Record<string, unknown>; error: RegExp }[] = [
    { name: 'a certificate without its key', input: { tlsCert: ['a.crt'] }, error: /in pairs/ },
    { name: 'two keys for one certificate', input: { tlsCert: ['a.crt'], tlsKey: ['a.key', 'b.key'] }, error: /in pairs/ },
    { name: 'a bad HTTPS listen address', input: { listenTls: ['nope'], tlsDir: '/tmp' }, error: /host:port/ },
    { name: 'TLS 1.1', input: { tlsMinVersion: 'TLSv1.1' }, error: /TLSv1.2|TLSv1.3/ },
    { name: 'no HTTP/2 streams at all', input: { http2MaxConcurrentStreams: '0' }, error: /http2MaxConcurrentStreams/ },
    { name: 'more HTTP/2 streams than the bound', input: { http2MaxConcurrentStreams: '10001' }, error: /http2MaxConcurrentStreams/ },
    { name: 'HTTP/2 streams that are not a whole number', input: { http2MaxConcurrentStreams: '2.5' }, error: /http2MaxConcurrentStreams/ },
    { name: 'HTTP/2 streams named like a prototype', input: { http2MaxConcurrentStreams: '__proto__' }, error: /http2MaxConcurrentStreams/ },
    { name: 'client auth without a CA', input: { listenTls: [':8443'], tlsDir: '/tmp', tlsClientAuth: 'require' }, error: /needs --tls-client-ca/ },
    { name: 'client auth without an HTTPS listener', input: { tlsClientAuth: 'request', tlsClientCa: 'ca.pem' }, error: /needs an HTTPS listener/ },
    { name: 'a CA without client auth', input: { listenTls: [':8443'], tlsDir: '/tmp', tlsClientCa: 'ca.pem' }, error: /no effect without --tls-client-auth/ },
    { name: 'an unknown client-auth mode', input: { listenTls: [':8443'], tlsDir: '/tmp', tlsClientCa: 'ca.pem', tlsClientAuth: 'optional' }, error: /none|request|require/ },
  ];
  for (const c of refused) {
    test(`refused: ${c.name}`, () => assert.throws(() => parseGatewayConfig(c.input as never), c.error));
  }

  test('listeners and certificate pairs keep their order', () => {
    const config = parseGatewayConfig({ listenTls: ['127.0.0.1:8443', ':9443'], tlsCert: ['a.crt', 'b.crt'], tlsKey: ['a.key', 'b.key'], tlsMinVersion: 'TLSv1.3' });
    assert.deepEqual(config.listenTls, [{ host: '127.0.0.1', port: 8443 }, { host: '', port: 9443 }]);
    assert.deepEqual([config.tlsCert, config.tlsKey, config.tlsMinVersion], [['a.crt', 'b.crt'], ['a.key', 'b.key'], 'TLSv1.3']);
  });

  test('an HTTPS listener without certificate files is accepted: its certificates come from Consul KV', () => {
    const config = parseGatewayConfig({ listenTls: ['127.0.0.1:8443'] });
    assert.deepEqual([config.listenTls, config.tlsCert, config.tlsDir], [[{ host: '127.0.0.1', port: 8443 }], [], undefined]);
  });

  test('client certificates: a mode and its CA file', () => {
    const config = parseGatewayConfig({ listenTls: [':8443'], tlsDir: '/tmp', tlsClientAuth: 'request', tlsClientCa: '/etc/cgw/clients.pem' });
    assert.deepEqual([config.tlsClientAuth, config.tlsClientCa], ['request', '/etc/cgw/clients.pem']);
  });
});
