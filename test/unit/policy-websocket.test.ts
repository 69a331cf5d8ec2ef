/** The `websocket` policy section: durations with bounds, defaults, unknown fields refused, inherited as one section. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { policyDocumentSchema } from '../../src/policy/schema.ts';
import { DEFAULT_WEBSOCKET } from '../../src/policy/effective.ts';

const cases: { name: string; websocket: unknown; ok: boolean; idle?: number; lifetime?: number }[] = [
  { name: 'both set', websocket: { idleTimeout: '30s', maxLifetime: '2h' }, ok: true, idle: 30_000, lifetime: 7_200_000 },
  { name: 'defaults', websocket: {}, ok: true, idle: 300_000, lifetime: 86_400_000 },
  { name: 'a week of lifetime', websocket: { maxLifetime: '168h' }, ok: true, lifetime: 604_800_000 },
  { name: 'idle below 1s', websocket: { idleTimeout: '500ms' }, ok: false },
  { name: 'idle above 24h', websocket: { idleTimeout: '25h' }, ok: false },
  { name: 'lifetime above a week', websocket: { maxLifetime: '169h' }, ok: false },
  { name: 'not a duration', websocket: { idleTimeout: 'soon' }, ok: false },
  { name: 'a number instead of text', websocket: { idleTimeout: 1000 }, ok: false },
  { name: 'an unknown field', websocket: { idleTimeout: '1m', maxFrame: 10 }, ok: false },
  { name: '__proto__ as a field', websocket: JSON.parse('{"__proto__":{"idleTimeout":"1s"}}'), ok: false },
  { name: 'not an object', websocket: 'on', ok: false },
];

for (const c of cases) {
  test(`websocket section: ${c.name}`, () => {
    const r = policyDocumentSchema.safeParse({ appliesTo: { route: '/chat' }, websocket: c.websocket });
    assert.equal(r.success, c.ok, r.success ? '' : r.error.message);
    if (!r.success) return;
    if (c.idle !== undefined) assert.equal(r.data.websocket?.idleTimeout, c.idle);
    if (c.lifetime !== undefined) assert.equal(r.data.websocket?.maxLifetime, c.lifetime);
  });
}

test('without a document the defaults are 5 minutes idle and 24 hours of lifetime', () => {
  assert.deepEqual(DEFAULT_WEBSOCKET, { idleTimeout: 300_000, maxLifetime: 86_400_000 });
});
