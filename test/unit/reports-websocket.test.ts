/** With --workers, open WebSocket connections in `cgw status` are the sum over the workers' reports. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mergeReports } from '../../src/admin/reports.ts';
import type { DataPlaneReport } from '../../src/core/types.ts';

function report(open: number, byRoute: Record<string, number>): DataPlaneReport {
  return {
    version: 'v1',
    limits: { maxConnections: 10, openConnections: open, connectionsRefused: { count: 0, lastAt: null }, upstreamBusy: {} },
    rateLimiter: 'none',
    circuitsNotClosed: [],
    services: {},
    tls: null,
    websocket: { open, byRoute },
  };
}

test('open WebSocket connections add up over workers, per route', () => {
  const merged = mergeReports([report(3, { '/chat': 2, '/feed': 1 }), report(2, { '/chat': 2 }), report(0, {})]);
  assert.equal(merged?.websocket.open, 5);
  assert.deepEqual({ ...merged?.websocket.byRoute }, { '/chat': 4, '/feed': 1 });
});

test('a route named __proto__ is counted like any other', () => {
  const merged = mergeReports([report(1, JSON.parse('{"__proto__":1}') as Record<string, number>), report(1, JSON.parse('{"__proto__":1}') as Record<string, number>)]);
  assert.equal(merged?.websocket.open, 2);
  assert.equal(Object.getOwnPropertyDescriptor(merged?.websocket.byRoute, '__proto__')?.value, 2);
});

test('a worker of an older build without the field does not break the merge', () => {
  const { websocket: _dropped, ...old } = report(0, {});
  const merged = mergeReports([report(1, { '/chat': 1 }), old as DataPlaneReport]);
  assert.equal(merged?.websocket.open, 1);
});
