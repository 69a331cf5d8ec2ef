/** Splitting Consul's `/v1/health/state/any` answer into one text per check, without parsing it. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { splitChecks } from '../../src/consul/bulk-health.ts';

const check = (node: string, id: string, status: string, extra: Record<string, unknown> = {}) => ({ Node: node, CheckID: id, Name: 'c', Status: status, Output: '', ServiceName: '', ModifyIndex: 7, ...extra });

const cases: { name: string; answer: unknown; expected: string[] }[] = [
  { name: 'a 404 (no checks at all)', answer: null, expected: [] },
  { name: 'an empty list', answer: '[]', expected: [] },
  {
    name: 'Consul\'s compact output: each object as written',
    answer: JSON.stringify([check('n1', 'serfHealth', 'passing'), check('n1', 'service:a', 'critical', { ServiceName: 'a', Definition: { HTTP: 'x' } })]),
    expected: [JSON.stringify(check('n1', 'serfHealth', 'passing')), JSON.stringify(check('n1', 'service:a', 'critical', { ServiceName: 'a', Definition: { HTTP: 'x' } }))],
  },
  {
    name: 'an output holding the separator text stays inside its check (its quotes are escaped)',
    answer: JSON.stringify([check('n1', 'c1', 'passing', { Output: '},{"Node":"evil","CheckID":"x"' }), check('n2', 'c2', 'passing')]),
    expected: [JSON.stringify(check('n1', 'c1', 'passing', { Output: '},{"Node":"evil","CheckID":"x"' })), JSON.stringify(check('n2', 'c2', 'passing'))],
  },
  {
    name: 'another layout (pretty-printed): parsed whole, validated and written compactly',
    answer: JSON.stringify([check('n1', 'c1', 'passing')], null, 2),
    expected: [JSON.stringify({ Node: 'n1', CheckID: 'c1', Status: 'passing', ServiceName: '', ModifyIndex: 7 })],
  },
];
for (const c of cases) test(c.name, () => assert.deepEqual(splitChecks(c.answer), c.expected));

test('a pretty-printed answer that is not a list of checks is refused', () => {
  assert.throws(() => splitChecks(JSON.stringify([{ Node: 1 }], null, 2)));
  assert.throws(() => splitChecks(42));
});
