import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { normalizePath, requestTarget } from '../../src/proxy/target.ts';

describe('normalizePath: one spelling per path, so a route policy cannot be sidestepped', () => {
  const cases: [string, string | undefined][] = [
    ['/api/admin', '/api/admin'],
    ['/api/%61dmin/x', '/api/admin/x'],
    ['/api/%7Euser', '/api/~user'],
    ['/a%2db%5fc%2Ed', '/a-b_c.d'],
    ['/files/a%20b', '/files/a%20b'],
    ['/files/a%c3%a9', '/files/a%C3%A9'],
    ['/api//admin/x', '/api/admin/x'],
    ['//api///admin', '/api/admin'],
    ['/api/%2Fadmin', undefined],
    ['/api%2fadmin', undefined],
    ['/api/%5Cadmin', undefined],
    ['/api\\admin', undefined],
    ['/api/%zzadmin', undefined],
    ['/api/%4', undefined],
    ['/api/../admin', undefined],
    ['/api/%2e%2e/admin', undefined],
    ['/api/.%2e/admin', undefined],
    ['/api/./x', undefined],
    ['/api/...', '/api/...'],
    ['/', '/'],
  ];
  for (const [raw, expected] of cases) {
    test(`${raw} → ${expected ?? 'refused'}`, () => assert.equal(normalizePath(raw), expected));
  }
});

describe('requestTarget', () => {
  const req = (url: string, host?: string): IncomingMessage => ({ url, headers: host === undefined ? {} : { host } }) as IncomingMessage;

  test('origin form: path, query and Host', () => {
    assert.deepEqual(requestTarget(req('/api/%61dmin?x=1', 'shop.example.com')), { path: '/api/admin', query: '?x=1', host: 'shop.example.com' });
  });

  test('absolute form: the URL authority wins and replaces Host, so the upstream sees the host that was routed', () => {
    const r = req('http://www.example.com/secret', 'admin.example.com');
    assert.deepEqual(requestTarget(r), { path: '/secret', query: '', host: 'www.example.com' });
    assert.equal(r.headers.host, 'www.example.com');
  });

  test('anything but an absolute path is refused', () => {
    assert.equal(requestTarget(req('*', 'h')), undefined);
    assert.equal(requestTarget(req('api/x', 'h')), undefined);
    assert.equal(requestTarget(req('http://[bad', 'h')), undefined);
  });
});
