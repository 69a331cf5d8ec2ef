import { test } from 'node:test';
import assert from 'node:assert/strict';
import { logDestination } from '../../src/core/log-destination.ts';

test('--log-format picks the destination: JSON (pino default) or pino-pretty', () => {
  const cases: { format: 'auto' | 'json' | 'pretty'; isTTY: boolean; pretty: boolean }[] = [
    { format: 'auto', isTTY: true, pretty: true },
    { format: 'auto', isTTY: false, pretty: false },
    { format: 'json', isTTY: true, pretty: false },
    { format: 'json', isTTY: false, pretty: false },
    { format: 'pretty', isTTY: false, pretty: true },
    { format: 'pretty', isTTY: true, pretty: true },
  ];
  for (const c of cases) {
    const destination = logDestination(c.format, { isTTY: c.isTTY });
    assert.equal(destination !== undefined, c.pretty, `${c.format} on ${c.isTTY ? 'a terminal' : 'a pipe'}`);
    if (destination) (destination as unknown as { end(): void }).end();
  }
});
