/** Which upgrades the gateway relays, and how a malformed WebSocket handshake is refused (RFC 6455 §4). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { classifyUpgrade, type UpgradeHead } from '../../src/proxy/websocket-handshake.ts';

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

function head(headers: Record<string, string>, method = 'GET', minor = 1): UpgradeHead {
  return { method, httpVersionMajor: 1, httpVersionMinor: minor, headers: { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-key': KEY, 'sec-websocket-version': '13', ...headers } };
}

const cases: { name: string; input: UpgradeHead; kind: string; code?: string }[] = [
  { name: 'a valid handshake', input: head({}), kind: 'websocket' },
  { name: 'Upgrade in another case, Connection with keep-alive', input: head({ upgrade: 'WebSocket', connection: 'keep-alive, Upgrade' }), kind: 'websocket' },
  { name: 'no key', input: head({ 'sec-websocket-key': '' }), kind: 'invalid', code: 'bad_websocket_handshake' },
  { name: 'a key of the wrong length', input: head({ 'sec-websocket-key': 'c2hvcnQ=' }), kind: 'invalid', code: 'bad_websocket_handshake' },
  { name: 'a key with characters outside base64', input: head({ 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZ!==' }), kind: 'invalid', code: 'bad_websocket_handshake' },
  { name: 'version 8', input: head({ 'sec-websocket-version': '8' }), kind: 'invalid', code: 'websocket_version_unsupported' },
  { name: 'no version', input: head({ 'sec-websocket-version': '' }), kind: 'invalid', code: 'websocket_version_unsupported' },
  { name: 'POST', input: head({}, 'POST'), kind: 'invalid', code: 'bad_websocket_handshake' },
  { name: 'HTTP/1.0', input: head({}, 'GET', 0), kind: 'invalid', code: 'bad_websocket_handshake' },
  { name: 'Connection without upgrade', input: head({ connection: 'keep-alive' }), kind: 'invalid', code: 'bad_websocket_handshake' },
  { name: 'a body', input: head({ 'content-length': '5' }), kind: 'invalid', code: 'bad_websocket_handshake' },
  { name: 'h2c', input: head({ upgrade: 'h2c' }), kind: 'other' },
  { name: '__proto__ as the protocol', input: head({ upgrade: '__proto__' }), kind: 'other' },
];

for (const c of cases) {
  test(`handshake: ${c.name}`, () => {
    const r = classifyUpgrade(c.input);
    assert.equal(r.kind, c.kind);
    if (c.code !== undefined) assert.equal(r.kind === 'invalid' ? r.code : undefined, c.code);
  });
}

test('version 13 is named in the refusal of another version (§4.2.2)', () => {
  const r = classifyUpgrade(head({ 'sec-websocket-version': '7' }));
  assert.equal(r.kind === 'invalid' ? r.headers?.['sec-websocket-version'] : undefined, '13');
});

test('another protocol with a body is told apart from one without', () => {
  const r = classifyUpgrade(head({ upgrade: 'h2c', 'content-length': '3' }));
  assert.deepEqual(r, { kind: 'other', protocols: 'h2c', hasBody: true });
});
