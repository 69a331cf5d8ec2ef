/**
 * The admin token as an operator meets it: a non-loopback --admin without a token does not start
 * (exit 2, nothing bound); a gateway with a token on loopback serves the CLI's reads and refuses
 * writes without the token; the CLI sends CGW_ADMIN_TOKEN.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, type GatewayProcess } from '../helpers/gateway.ts';

const TOKEN = 'an-admin-token-of-some-length';
let consul: ConsulAgent;
let gw: GatewayProcess;

before(async () => {
  consul = await startConsul();
  gw = await startGateway({ consul: consul.addr, args: ['--admin-token', TOKEN] });
});

after(async () => {
  await gw?.kill();
  await consul?.stop();
});

test('a non-loopback --admin without a token is refused before anything listens', async () => {
  for (const admin of ['0.0.0.0:0', ':0']) {
    const r = await runCli(['start', '--consul', consul.addr, '--listen', '127.0.0.1:0', '--admin', admin]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--admin listens beyond loopback without a token/);
  }
  const short = await runCli(['start', '--consul', consul.addr, '--listen', '127.0.0.1:0', '--admin-token', 'short']);
  assert.equal(short.code, 2);
  assert.match(short.stderr, /at least 16 characters/);
});

test('on loopback the CLI reads without the token; writes need it; the CLI sends CGW_ADMIN_TOKEN', async () => {
  const status = await runCli(['status', '--admin', gw.adminUrl]);
  assert.equal(status.code, 0, status.stderr);
  const write = await request(`${gw.adminUrl}/v1/canary/web`, { method: 'PUT' });
  assert.equal(write.statusCode, 401);
  assert.equal(write.headers['www-authenticate'], 'Bearer realm="cgw-admin"');
  await write.body.dump();
  const withToken = await runCli(['status', '--admin', gw.adminUrl], { env: { CGW_ADMIN_TOKEN: TOKEN } });
  assert.equal(withToken.code, 0, withToken.stderr);
  const missingFile = await runCli(['status', '--admin', gw.adminUrl], { env: { CGW_ADMIN_TOKEN_FILE: '/nonexistent/token' } });
  assert.equal(missingFile.code, 2);
  assert.match(missingFile.stderr, /CGW_ADMIN_TOKEN_FILE: cannot read/);
});
