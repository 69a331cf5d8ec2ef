import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { classifyFailure } from '../../src/proxy/errors.ts';

describe('classifyFailure: which retry rule applies, and what the client is told', () => {
  const err = (code: string): Error => Object.assign(new Error(code), { code });
  const cases: [string, string, string][] = [
    ['ECONNREFUSED', 'connect-failure', 'upstream_unreachable'],
    ['UND_ERR_CONNECT_TIMEOUT', 'connect-failure', 'upstream_unreachable'],
    ['EHOSTUNREACH', 'connect-failure', 'upstream_unreachable'],
    ['ECONNRESET', 'reset', 'upstream_error'],
    ['UND_ERR_SOCKET', 'reset', 'upstream_error'],
    ['UND_ERR_HEADERS_TIMEOUT', 'timeout', 'upstream_timeout'],
    ['UND_ERR_BODY_TIMEOUT', 'other', 'upstream_timeout'],
    ['UND_ERR_NOT_SUPPORTED', 'local', 'bad_request'],
    ['UND_ERR_INVALID_ARG', 'local', 'bad_request'],
    ['EWHATEVER', 'other', 'upstream_error'],
  ];
  for (const [code, kind, errorCode] of cases) {
    test(`${code} → ${kind}, ${errorCode}`, () => assert.deepEqual(classifyFailure(err(code)), { kind, code: errorCode }));
  }
  test('a value without a code is an upstream error', () => assert.deepEqual(classifyFailure('boom'), { kind: 'other', code: 'upstream_error' }));
});
