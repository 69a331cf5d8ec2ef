/** The access line written by hand is the line pino would write for the same fields. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger, serializedBindings } from '../../src/core/logger.ts';
import { AccessLog, type AccessFields } from '../../src/proxy/access-log.ts';

function capture(level: 'info' | 'warn' = 'info') {
  const lines: string[] = [];
  const logger = createLogger(level, { write: (l: string) => void lines.push(l) }).child({ worker: '1' });
  return { lines, logger };
}

const FIELDS: AccessFields[] = [
  { method: 'GET', path: '/web/x', endpoint: '127.0.0.1:8001', status: 200, durationMs: 1.234, requestId: 'abc', client: '127.0.0.1', retries: 0, subject: null, consumer: null, reason: null },
  { method: 'POST', path: '/a"b\\c\u2028', endpoint: null, status: 401, durationMs: 0.5, requestId: 'r-2', client: '::1', retries: 2, subject: 'sub "x"', consumer: 'acme', reason: 'token_expired' },
];

for (const f of FIELDS) {
  test(`${f.method} ${f.status}: same JSON as pino, one line`, () => {
    const { lines, logger } = capture();
    new AccessLog(logger).write(serializedBindings({ route: '/web', service: 'web' }), f);
    logger.child({ route: '/web', service: 'web' }).info(
      {
        method: f.method,
        path: f.path,
        endpoint: f.endpoint,
        status: f.status,
        durationMs: f.durationMs,
        requestId: f.requestId,
        client: f.client,
        ...(f.retries > 0 ? { retries: f.retries } : {}),
        ...(f.subject !== null ? { subject: f.subject } : {}),
        ...(f.consumer !== null ? { consumer: f.consumer } : {}),
        ...(f.reason !== null ? { reason: f.reason } : {}),
      },
      'access',
    );
    assert.equal(lines.length, 2);
    const [ours, theirs] = lines.map((l) => {
      assert.ok(l.endsWith('\n') && !l.slice(0, -1).includes('\n'));
      const { time: _time, ...rest } = JSON.parse(l) as Record<string, unknown>;
      return rest;
    });
    assert.deepEqual(ours, theirs);
    assert.deepEqual(Object.keys(ours ?? {}), Object.keys(theirs ?? {}), 'same field order');
  });
}

test('nothing is written when info lines are off', () => {
  const { lines, logger } = capture('warn');
  new AccessLog(logger).write('', FIELDS[0] as AccessFields);
  assert.deepEqual(lines, []);
});
