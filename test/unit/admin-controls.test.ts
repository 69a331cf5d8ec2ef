/**
 * The pure and in-memory parts of the admin API's controls: request bodies (the CLI's weight
 * rules, whole numbers, the ModifyIndex from the body or If-Match, prototype names, size and
 * depth), and the check-and-set writes over a Consul-like store.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ifMatchIndex, MAX_CONTROL_BODY_BYTES, parseCanaryDelete, parseCanaryPut } from '../../src/controls/canary-request.ts';
import { clearCanaryWeights, writeCanaryWeights } from '../../src/controls/canary-writes.ts';
import { actOnRollout } from '../../src/controls/rollout-actions.ts';
import { KV_WRITERS } from '../../src/core/kv-layout.ts';
import { MemoryConsul } from '../helpers/memory-consul.ts';

describe('parseCanaryPut', () => {
  const cases: { name: string; body: string; ifMatch?: string; ok?: { weights: Record<string, number>; modifyIndex: number }; status?: number; code?: string; message?: RegExp }[] = [
    { name: 'weights and index', body: '{"weights":{"v1":90,"v2":10},"modifyIndex":7}', ok: { weights: { v1: 90, v2: 10 }, modifyIndex: 7 } },
    { name: 'index 0 (no weights yet)', body: '{"weights":{"v1":100},"modifyIndex":0}', ok: { weights: { v1: 100 }, modifyIndex: 0 } },
    { name: 'index from If-Match', body: '{"weights":{"v1":0,"v2":100}}', ifMatch: '"42"', ok: { weights: { v1: 0, v2: 100 }, modifyIndex: 42 } },
    { name: 'If-Match equal to the body', body: '{"weights":{"v1":0,"v2":100},"modifyIndex":42}', ifMatch: '42', ok: { weights: { v1: 0, v2: 100 }, modifyIndex: 42 } },
    { name: 'If-Match and body differ', body: '{"weights":{"v1":0,"v2":100},"modifyIndex":41}', ifMatch: '42', status: 400, message: /differ/ },
    { name: 'no index at all', body: '{"weights":{"v1":0,"v2":100}}', status: 428, code: 'index_required' },
    { name: 'not JSON', body: '{"weights":', status: 400, message: /not JSON/ },
    { name: 'empty', body: '', status: 400, message: /not JSON/ },
    { name: 'an array', body: '[]', status: 400, message: /JSON object/ },
    { name: 'null', body: 'null', status: 400, message: /JSON object/ },
    { name: '__proto__ as a tag', body: '{"weights":{"__proto__":100},"modifyIndex":1}', status: 400, message: /__proto__/ },
    { name: 'constructor as a tag', body: '{"weights":{"constructor":100},"modifyIndex":1}', status: 400, message: /constructor/ },
    { name: 'prototype as a field', body: '{"weights":{"v1":100},"prototype":1,"modifyIndex":1}', status: 400, message: /prototype/ },
    { name: 'an unknown field', body: '{"weights":{"v1":100},"force":true,"modifyIndex":1}', status: 400, message: /force|Unrecognized/i },
    { name: 'negative weight', body: '{"weights":{"v1":-5,"v2":105},"modifyIndex":1}', status: 400, message: />= 0/ },
    { name: 'weight above 100', body: '{"weights":{"v1":101},"modifyIndex":1}', status: 400, message: /<= 100/ },
    { name: 'float weight', body: '{"weights":{"v1":12.5,"v2":87.5},"modifyIndex":1}', status: 400, message: /whole number/ },
    { name: 'weight as a string', body: '{"weights":{"v1":"100"},"modifyIndex":1}', status: 400 },
    { name: 'sum not 100', body: '{"weights":{"v1":10,"v2":20},"modifyIndex":1}', status: 400, message: /sum to 100/ },
    { name: 'no tags', body: '{"weights":{},"modifyIndex":1}', status: 400, message: /at least one tag/ },
    { name: 'tag with "="', body: '{"weights":{"a=b":100},"modifyIndex":1}', status: 400, message: /"="/ },
    { name: 'tag with a space', body: '{"weights":{"v 1":100},"modifyIndex":1}', status: 400, message: /spaces/ },
    { name: 'float index', body: '{"weights":{"v1":100},"modifyIndex":1.5}', status: 400, message: /whole number/ },
    { name: 'negative index', body: '{"weights":{"v1":100},"modifyIndex":-1}', status: 400 },
    { name: 'deeply nested', body: `{"weights":{"v1":100},"x":${'['.repeat(500)}${']'.repeat(500)},"modifyIndex":1}`, status: 400 },
    { name: 'oversized', body: `{"weights":{"v1":100},"pad":"${'x'.repeat(MAX_CONTROL_BODY_BYTES)}"}`, status: 413, code: 'payload_too_large' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const r = parseCanaryPut(c.body, c.ifMatch);
      if (c.ok) return assert.deepEqual(r, { ok: true, ...c.ok });
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.equal(r.status, c.status);
      if (c.code) assert.equal(r.code, c.code);
      if (c.message) assert.match(r.message, c.message);
    });
  }
});

describe('parseCanaryDelete and If-Match', () => {
  test('no body with If-Match, a body with modifyIndex, neither', () => {
    assert.deepEqual(parseCanaryDelete('', '"9"'), { ok: true, modifyIndex: 9 });
    assert.deepEqual(parseCanaryDelete('{"modifyIndex":9}', undefined), { ok: true, modifyIndex: 9 });
    const none = parseCanaryDelete('', undefined);
    assert.equal(none.ok === false && none.status, 428);
    const extra = parseCanaryDelete('{"modifyIndex":9,"__proto__":{}}', undefined);
    assert.equal(extra.ok === false && extra.status, 400);
  });
  const headers: [string | undefined, number | undefined | null][] = [
    [undefined, undefined],
    ['12', 12],
    ['"12"', 12],
    ['W/"12"', 12],
    [' "0" ', 0],
    ['*', null],
    ['"12", "13"', null],
    ['-1', null],
    ['99999999999999999', null],
  ];
  for (const [header, expected] of headers) test(`If-Match ${JSON.stringify(header)} → ${expected}`, () => assert.equal(ifMatchIndex(header), expected));
});

describe('check-and-set writes', () => {
  const make = () => new MemoryConsul({ web: [['urlprefix-/web', 'v1'], ['urlprefix-/web', 'v2']] });

  test('writes on the index read, marked as the admin API, and returns the new index', async () => {
    const c = make();
    const r = await writeCanaryWeights(c, 'gateway/', 'web', { v1: 0, v2: 100 }, 0);
    assert.ok(r.ok);
    const item = c.items.get('gateway/canary/web');
    assert.equal(item?.value, '{"weights":{"v1":0,"v2":100}}');
    assert.equal(item?.flags, KV_WRITERS['cgw admin']);
    assert.equal(r.ok && r.modifyIndex, item?.modifyIndex);
  });

  test('a stale index, a key created meanwhile, or a write lost in the race: 409 and the value kept', async () => {
    const c = make();
    c.put('gateway/canary/web', '{"weights":{"v1":50,"v2":50}}');
    const index = c.index;
    const created = await writeCanaryWeights(c, 'gateway/', 'web', { v1: 100 }, 0);
    assert.equal(!created.ok && created.status, 409);
    const stale = await writeCanaryWeights(c, 'gateway/', 'web', { v1: 100 }, index - 1);
    assert.equal(!stale.ok && stale.code, 'conflict');
    c.beforeWrite = () => c.put('gateway/canary/web', '{"weights":{"v2":100}}');
    const raced = await writeCanaryWeights(c, 'gateway/', 'web', { v1: 100 }, index);
    assert.equal(!raced.ok && raced.status, 409);
    assert.match(!raced.ok ? raced.message : '', /while writing/);
    assert.equal(c.items.get('gateway/canary/web')?.value, '{"weights":{"v2":100}}');
  });

  test('a tag no instance carries is refused as the CLI refuses it (weight 0 is allowed)', async () => {
    const c = make();
    const r = await writeCanaryWeights(c, 'gateway/', 'web', { v1: 50, V2: 50 }, 0);
    assert.equal(!r.ok && r.code, 'unknown_subset');
    assert.match(!r.ok ? r.message : '', /did you mean v2/);
    const zero = await writeCanaryWeights(c, 'gateway/', 'web', { v1: 100, v9: 0 }, 0);
    assert.ok(zero.ok);
    const unknown = await writeCanaryWeights(c, 'gateway/', 'nosuch', { v1: 100 }, 0);
    assert.equal(!unknown.ok && unknown.status, 400);
    assert.deepEqual(c.writes, ['gateway/canary/web']);
  });

  test('clear: 404 without weights, 409 on a stale index, deleted on the index read', async () => {
    const c = make();
    assert.equal((await clearCanaryWeights(c, 'gateway/', 'web', 0)).ok, false);
    c.put('gateway/canary/web', '{"weights":{"v1":100}}');
    const stale = await clearCanaryWeights(c, 'gateway/', 'web', c.index - 1);
    assert.equal(!stale.ok && stale.status, 409);
    assert.ok((await clearCanaryWeights(c, 'gateway/', 'web', c.index)).ok);
    assert.equal(c.items.has('gateway/canary/web'), false);
  });

  test('rollout actions say which kind of refusal, for the CLI exit code and the HTTP status', async () => {
    const c = make();
    const none = await actOnRollout(c, 'gateway/', 'web', 'pause');
    assert.equal(!none.ok && none.kind, 'not_found');
    c.put('gateway/rollouts/web', '{"not":"a rollout"}');
    const invalid = await actOnRollout(c, 'gateway/', 'web', 'pause');
    assert.equal(!invalid.ok && invalid.kind, 'invalid');
  });
});
