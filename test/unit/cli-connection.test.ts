/**
 * consul/connection.ts: one resolution of --consul, --token and the CONSUL_* environment for the
 * gateway and every CLI command, and the admin address forms of --admin / CGW_ADMIN.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CliError, resolveAdminAddress } from '../../src/cli/admin-client.ts';
import { consulEnvDefaults, consulTls, parseGatewayConfig } from '../../src/config.ts';
import { ConsulSettingError, resolveConsulConnection } from '../../src/consul/connection.ts';
import { TEST_CA_PEM, TEST_SERVER_CERT_PEM, TEST_SERVER_KEY_PEM } from '../helpers/cli-tls-fixtures.ts';

let dir: string;
const file = (name: string): string => join(dir, name);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cgw-connection-'));
  await writeFile(file('token'), '  s3cr3t-from-file\n');
  await writeFile(file('blank-token'), ' \n\n');
  await writeFile(file('two-lines'), 'abc\ndef\n');
  await writeFile(file('ca.pem'), TEST_CA_PEM);
  await writeFile(file('cert.pem'), TEST_SERVER_CERT_PEM);
  await writeFile(file('key.pem'), TEST_SERVER_KEY_PEM);
  await writeFile(file('garbage.pem'), 'not a certificate\n');
});
after(() => rm(dir, { recursive: true, force: true }));

describe('resolveConsulConnection: the address', () => {
  const cases: { name: string; flag?: string; env?: NodeJS.ProcessEnv; address: string; hostname?: string; port?: number }[] = [
    { name: 'nothing set: the local agent', address: 'http://127.0.0.1:8500', hostname: '127.0.0.1', port: 8500 },
    { name: 'host:port flag', flag: '10.0.0.5:8500', address: 'http://10.0.0.5:8500' },
    { name: 'localhost:port is host:port, not a scheme', flag: 'localhost:8500', address: 'http://localhost:8500', hostname: 'localhost' },
    { name: 'http URL flag', flag: 'http://consul.internal:8500', address: 'http://consul.internal:8500' },
    { name: 'https URL flag', flag: 'https://consul.internal:8501', address: 'https://consul.internal:8501', port: 8501 },
    { name: 'trailing slash dropped', flag: 'http://127.0.0.1:8500/', address: 'http://127.0.0.1:8500' },
    { name: 'IPv6 host:port', flag: '[::1]:8500', address: 'http://[::1]:8500', hostname: '::1' },
    { name: 'host without port: the scheme default', flag: 'consul.internal', address: 'http://consul.internal', port: 80 },
    { name: 'CONSUL_HTTP_ADDR without scheme', env: { CONSUL_HTTP_ADDR: '127.0.0.1:18500' }, address: 'http://127.0.0.1:18500' },
    { name: 'CONSUL_HTTP_ADDR with scheme', env: { CONSUL_HTTP_ADDR: 'https://10.1.1.1:8501' }, address: 'https://10.1.1.1:8501' },
    { name: 'the flag wins over CONSUL_HTTP_ADDR', flag: '10.0.0.9:8500', env: { CONSUL_HTTP_ADDR: '10.0.0.5:8500' }, address: 'http://10.0.0.9:8500' },
    { name: 'empty CONSUL_HTTP_ADDR is unset', env: { CONSUL_HTTP_ADDR: '' }, address: 'http://127.0.0.1:8500' },
    { name: 'CONSUL_HTTP_SSL=true: https without scheme', env: { CONSUL_HTTP_ADDR: '10.0.0.5:8501', CONSUL_HTTP_SSL: 'true' }, address: 'https://10.0.0.5:8501' },
    { name: 'CONSUL_HTTP_SSL=true applies to the flag too', flag: '10.0.0.5:8501', env: { CONSUL_HTTP_SSL: 'true' }, address: 'https://10.0.0.5:8501' },
    { name: 'CONSUL_HTTP_SSL=1 (Go ParseBool)', flag: '10.0.0.5:8501', env: { CONSUL_HTTP_SSL: '1' }, address: 'https://10.0.0.5:8501' },
    { name: 'CONSUL_HTTP_SSL=false', flag: '10.0.0.5:8500', env: { CONSUL_HTTP_SSL: 'false' }, address: 'http://10.0.0.5:8500' },
    { name: 'an explicit scheme wins over CONSUL_HTTP_SSL', flag: 'http://10.0.0.5:8500', env: { CONSUL_HTTP_SSL: 'true' }, address: 'http://10.0.0.5:8500' },
    { name: 'CONSUL_HTTP_SSL alone: https to the local agent', env: { CONSUL_HTTP_SSL: 'true' }, address: 'https://127.0.0.1:8500' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const conn = resolveConsulConnection({ address: c.flag }, c.env ?? {});
      assert.equal(conn.address, c.address);
      assert.equal(conn.secure, c.address.startsWith('https:'));
      if (c.hostname !== undefined) assert.equal(conn.hostname, c.hostname);
      if (c.port !== undefined) assert.equal(conn.port, c.port);
    });
  }

  const invalid: { name: string; flag?: string; env?: NodeJS.ProcessEnv; setting: string; message: RegExp }[] = [
    { name: 'empty flag', flag: ' ', setting: '--consul', message: /is empty/ },
    { name: 'another scheme', flag: 'ftp://consul:21', setting: '--consul', message: /scheme ftp:\/\/ is not supported/ },
    { name: 'a unix socket', flag: 'unix:///var/run/consul.sock', setting: '--consul', message: /unix sockets are not supported/ },
    { name: 'a path', flag: 'http://127.0.0.1:8500/v1', setting: '--consul', message: /only scheme, host and port/ },
    { name: 'credentials in the URL', flag: 'http://me:pw@127.0.0.1:8500', setting: '--consul', message: /only scheme, host and port/ },
    { name: 'a port out of range', flag: '127.0.0.1:99999', setting: '--consul', message: /is not host:port or a URL/ },
    { name: 'spaces in the host', flag: 'my host:8500', setting: '--consul', message: /is not host:port or a URL/ },
    { name: 'a bad CONSUL_HTTP_ADDR names the variable', env: { CONSUL_HTTP_ADDR: 'ftp://x:1' }, setting: 'CONSUL_HTTP_ADDR', message: /scheme ftp/ },
    { name: 'CONSUL_HTTP_SSL that is no boolean', flag: '127.0.0.1:8500', env: { CONSUL_HTTP_SSL: 'yes' }, setting: 'CONSUL_HTTP_SSL', message: /expected true or false/ },
  ];
  for (const c of invalid) {
    test(`refused: ${c.name}`, () => {
      assert.throws(
        () => resolveConsulConnection({ address: c.flag }, c.env ?? {}),
        (err: unknown) => err instanceof ConsulSettingError && err.setting === c.setting && err.message.startsWith(`${c.setting}: `) && c.message.test(err.message),
      );
    });
  }
});

describe('resolveConsulConnection: the token', () => {
  const cases: { name: string; flag?: string; env: () => NodeJS.ProcessEnv; token: string | undefined; source?: RegExp }[] = [
    { name: 'none', env: () => ({}), token: undefined },
    { name: 'CONSUL_HTTP_TOKEN', env: () => ({ CONSUL_HTTP_TOKEN: 'env-token' }), token: 'env-token', source: /^CONSUL_HTTP_TOKEN$/ },
    { name: 'CONSUL_HTTP_TOKEN_FILE, trimmed', env: () => ({ CONSUL_HTTP_TOKEN_FILE: file('token') }), token: 's3cr3t-from-file', source: /^CONSUL_HTTP_TOKEN_FILE \(/ },
    { name: 'the file wins over CONSUL_HTTP_TOKEN (as in Consul)', env: () => ({ CONSUL_HTTP_TOKEN: 'env-token', CONSUL_HTTP_TOKEN_FILE: file('token') }), token: 's3cr3t-from-file' },
    { name: 'a blank file falls back to CONSUL_HTTP_TOKEN', env: () => ({ CONSUL_HTTP_TOKEN: 'env-token', CONSUL_HTTP_TOKEN_FILE: file('blank-token') }), token: 'env-token' },
    { name: '--token wins over both', flag: 'flag-token', env: () => ({ CONSUL_HTTP_TOKEN: 'env-token', CONSUL_HTTP_TOKEN_FILE: file('token') }), token: 'flag-token', source: /^--token$/ },
    { name: '--token wins, so an unreadable token file is not read', flag: 'flag-token', env: () => ({ CONSUL_HTTP_TOKEN_FILE: file('missing') }), token: 'flag-token' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const conn = resolveConsulConnection({ token: c.flag }, c.env());
      assert.equal(conn.token, c.token);
      if (c.source) assert.match(conn.tokenSource ?? '', c.source);
    });
  }

  const invalid: { name: string; flag?: string; env: () => NodeJS.ProcessEnv; setting: string; message: RegExp }[] = [
    { name: 'an unreadable token file', env: () => ({ CONSUL_HTTP_TOKEN_FILE: file('missing') }), setting: 'CONSUL_HTTP_TOKEN_FILE', message: /cannot read .*missing: no such file/ },
    { name: 'a directory as token file', env: () => ({ CONSUL_HTTP_TOKEN_FILE: dir }), setting: 'CONSUL_HTTP_TOKEN_FILE', message: /is a directory/ },
    { name: 'a token file of two lines', env: () => ({ CONSUL_HTTP_TOKEN_FILE: file('two-lines') }), setting: 'CONSUL_HTTP_TOKEN_FILE', message: /must be the token alone/ },
    { name: 'a token with a space', flag: 'two words', env: () => ({}), setting: '--token', message: /must be the token alone/ },
  ];
  for (const c of invalid) {
    test(`refused: ${c.name}`, () => {
      assert.throws(
        () => resolveConsulConnection({ token: c.flag }, c.env()),
        (err: unknown) => err instanceof ConsulSettingError && err.setting === c.setting && c.message.test(err.message),
      );
    });
  }
});

describe('resolveConsulConnection: TLS', () => {
  test('CA, client certificate and key, and server name are read and checked', () => {
    const conn = resolveConsulConnection(
      { address: 'https://127.0.0.1:8501' },
      { CONSUL_CACERT: file('ca.pem'), CONSUL_CLIENT_CERT: file('cert.pem'), CONSUL_CLIENT_KEY: file('key.pem'), CONSUL_TLS_SERVER_NAME: 'server.dc1.consul' },
    );
    assert.equal(conn.tls?.ca, TEST_CA_PEM);
    assert.equal(conn.tls?.cert, TEST_SERVER_CERT_PEM);
    assert.equal(conn.tls?.key, TEST_SERVER_KEY_PEM);
    assert.equal(conn.tls?.servername, 'server.dc1.consul');
  });

  test('no TLS setting: no TLS material', () => {
    assert.equal(resolveConsulConnection({}, {}).tls, undefined);
  });

  const invalid: { name: string; env: () => NodeJS.ProcessEnv; setting: string; message: RegExp }[] = [
    { name: 'a missing CA file', env: () => ({ CONSUL_CACERT: file('nope.pem') }), setting: 'CONSUL_CACERT', message: /cannot read .*nope\.pem: no such file/ },
    { name: 'a CA file that is no certificate', env: () => ({ CONSUL_CACERT: file('garbage.pem') }), setting: 'CONSUL_CACERT', message: /is not a PEM certificate/ },
    { name: 'a client certificate without its key', env: () => ({ CONSUL_CLIENT_CERT: file('cert.pem') }), setting: 'CONSUL_CLIENT_KEY', message: /set both/ },
    { name: 'a key without its certificate', env: () => ({ CONSUL_CLIENT_KEY: file('key.pem') }), setting: 'CONSUL_CLIENT_CERT', message: /set both/ },
    { name: 'a key file that is no key', env: () => ({ CONSUL_CLIENT_CERT: file('cert.pem'), CONSUL_CLIENT_KEY: file('garbage.pem') }), setting: 'CONSUL_CLIENT_KEY', message: /is not a PEM private key/ },
  ];
  for (const c of invalid) {
    test(`refused: ${c.name}`, () => {
      assert.throws(
        () => resolveConsulConnection({ address: 'https://127.0.0.1:8501' }, c.env()),
        (err: unknown) => err instanceof ConsulSettingError && err.setting === c.setting && c.message.test(err.message),
      );
    });
  }
});

describe('cgw start resolves through the same functions', () => {
  test('consulEnvDefaults reads the token file and CONSUL_HTTP_SSL', () => {
    const defaults = consulEnvDefaults({ CONSUL_HTTP_ADDR: 'consul.service:8501', CONSUL_HTTP_SSL: 'true', CONSUL_HTTP_TOKEN_FILE: file('token') });
    assert.deepEqual(defaults, { consul: 'https://consul.service:8501', token: 's3cr3t-from-file' });
    const config = parseGatewayConfig(defaults);
    assert.equal(config.consul, 'https://consul.service:8501');
    assert.equal(config.token, 's3cr3t-from-file');
  });

  test('consulEnvDefaults refuses what the CLI refuses, naming the variable', () => {
    assert.throws(() => consulEnvDefaults({ CONSUL_HTTP_TOKEN_FILE: file('missing') }), /^ConsulSettingError: CONSUL_HTTP_TOKEN_FILE: cannot read/);
    assert.throws(() => consulEnvDefaults({ CONSUL_HTTP_ADDR: 'unix:///x.sock' }), (err: unknown) => err instanceof ConsulSettingError && err.setting === 'CONSUL_HTTP_ADDR');
  });

  test('consulTls reads and checks the files the config names', () => {
    const config = parseGatewayConfig({ consul: 'https://127.0.0.1:8501', caFile: file('ca.pem'), tlsServerName: 'server.dc1.consul' });
    assert.deepEqual(consulTls(config), { ca: TEST_CA_PEM, servername: 'server.dc1.consul' });
    assert.throws(() => consulTls(parseGatewayConfig({ caFile: file('garbage.pem') })), (err: unknown) => err instanceof ConsulSettingError && err.setting === 'CONSUL_CACERT');
    assert.equal(consulTls(parseGatewayConfig({})), undefined);
  });
});

describe('resolveAdminAddress: --admin and CGW_ADMIN', () => {
  const cases: { name: string; flag?: string; env?: NodeJS.ProcessEnv; address: string }[] = [
    { name: 'default', address: 'http://127.0.0.1:9901' },
    { name: 'host:port', flag: '127.0.0.1:9901', address: 'http://127.0.0.1:9901' },
    { name: 'localhost:port', flag: 'localhost:9902', address: 'http://localhost:9902' },
    { name: ':port is the local gateway', flag: ':9903', address: 'http://127.0.0.1:9903' },
    { name: 'URL', flag: 'http://10.0.0.7:9901', address: 'http://10.0.0.7:9901' },
    { name: 'URL with a trailing slash', flag: 'http://10.0.0.7:9901/', address: 'http://10.0.0.7:9901' },
    { name: 'IPv6', flag: '[::1]:9901', address: 'http://[::1]:9901' },
    { name: 'CGW_ADMIN host:port', env: { CGW_ADMIN: '127.0.0.1:19901' }, address: 'http://127.0.0.1:19901' },
    { name: 'CGW_ADMIN URL', env: { CGW_ADMIN: 'http://127.0.0.1:19901' }, address: 'http://127.0.0.1:19901' },
    { name: 'the flag wins over CGW_ADMIN', flag: '127.0.0.1:1', env: { CGW_ADMIN: '127.0.0.1:19901' }, address: 'http://127.0.0.1:1' },
  ];
  for (const c of cases) test(c.name, () => assert.equal(resolveAdminAddress(c.flag, c.env ?? {}), c.address));

  const invalid: { name: string; flag?: string; env?: NodeJS.ProcessEnv; message: RegExp }[] = [
    { name: 'another scheme', flag: 'ftp://x:1', message: /^--admin: .*scheme ftp/ },
    { name: 'a path', flag: 'http://127.0.0.1:9901/v1', message: /^--admin: .*only scheme, host and port/ },
    { name: 'nonsense', flag: 'a b', message: /^--admin: .*not host:port or a URL/ },
    { name: 'a bad CGW_ADMIN names it', env: { CGW_ADMIN: 'nope::' }, message: /^CGW_ADMIN: / },
  ];
  for (const c of invalid) {
    test(`refused: ${c.name}`, () => {
      assert.throws(() => resolveAdminAddress(c.flag, c.env ?? {}), (err: unknown) => err instanceof CliError && err.exitCode === 2 && c.message.test(err.message));
    });
  }
});
