import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCanaryArgs, parseCanaryValue, type CanaryWeights } from '../../src/policy/canary.ts';

describe('parseCanaryValue: valid values', () => {
  const cases: { text: string; weights: CanaryWeights['weights'] }[] = [
    { text: '{"weights":{"v1":90,"v2":10}}', weights: { v1: 90, v2: 10 } },
    { text: '{"weights":{"stable":100}}', weights: { stable: 100 } },
    { text: '{"weights":{"a":33.3,"b":33.3,"c":33.4}}', weights: { a: 33.3, b: 33.3, c: 33.4 } },
    { text: '{"weights":{"v1":100,"v2":0}}', weights: { v1: 100, v2: 0 } },
    { text: '  {"weights": {"v1": 50, "v2": 50}}\n', weights: { v1: 50, v2: 50 } },
  ];
  for (const { text, weights } of cases) {
    test(text.trim(), () => {
      assert.deepEqual(parseCanaryValue(text), { ok: true, value: { weights } });
    });
  }
});

describe('parseCanaryValue: rejected values name the problem', () => {
  const cases: { name: string; text: string | null; error: RegExp }[] = [
    { name: 'null (key without value)', text: null, error: /empty/ },
    { name: 'empty string', text: '', error: /empty/ },
    { name: 'whitespace only', text: '  \n ', error: /empty/ },
    { name: 'not JSON', text: 'v1=90,v2=10', error: /^not JSON/ },
    { name: 'truncated JSON', text: '{"weights":{"v1":90', error: /^not JSON/ },
    { name: 'JSON null', text: 'null', error: /expected object/ },
    { name: 'array instead of object', text: '[]', error: /expected object/ },
    { name: 'missing weights', text: '{}', error: /^weights: .*expected record/ },
    { name: 'weights is an array', text: '{"weights":[90,10]}', error: /^weights: .*expected record/ },
    { name: 'weight is a string', text: '{"weights":{"v1":"100"}}', error: /^weights\.v1: .*expected number/ },
    { name: 'extra top-level key', text: '{"weights":{"v1":100},"sticky":true}', error: /Unrecognized key.*"sticky"/ },
    { name: 'weight above 100', text: '{"weights":{"v1":150,"v2":-50}}', error: /weights\.v1: weight must be <= 100/ },
    { name: 'negative weight', text: '{"weights":{"v1":110,"v2":-10}}', error: /weights\.v2: weight must be >= 0/ },
    { name: 'sum below 100', text: '{"weights":{"v1":50,"v2":40}}', error: /weights: weights must sum to 100/ },
    { name: 'sum above 100', text: '{"weights":{"v1":60,"v2":60}}', error: /weights must sum to 100/ },
    { name: 'no tags', text: '{"weights":{}}', error: /at least one tag is required/ },
    { name: 'tag with a space', text: '{"weights":{"v 1":100}}', error: /weights\.v 1/ },
    { name: 'tag with "="', text: '{"weights":{"v=1":100}}', error: /weights\.v=1/ },
    { name: 'empty tag', text: '{"weights":{"":100}}', error: /weights\./ },
  ];
  for (const { name, text, error } of cases) {
    test(name, () => {
      const parsed = parseCanaryValue(text);
      assert.equal(parsed.ok, false, `${JSON.stringify(text)} should be rejected`);
      if (!parsed.ok) assert.match(parsed.error, error);
    });
  }
});

describe('parseCanaryArgs', () => {
  const valid: { args: string[]; weights: CanaryWeights['weights'] }[] = [
    { args: ['v1=90', 'v2=10'], weights: { v1: 90, v2: 10 } },
    { args: ['stable=100'], weights: { stable: 100 } },
    { args: ['v1=33.3', 'v2=66.7'], weights: { v1: 33.3, v2: 66.7 } },
    { args: ['v1=100.0', 'v2=0'], weights: { v1: 100, v2: 0 } },
  ];
  for (const { args, weights } of valid) {
    test(`valid: ${args.join(' ')}`, () => {
      assert.deepEqual(parseCanaryArgs(args), { ok: true, value: { weights } });
    });
  }

  const invalid: { name: string; args: string[]; error: RegExp }[] = [
    { name: "missing '='", args: ['v1', 'v2=10'], error: /"v1" is not tag=weight/ },
    { name: 'missing tag', args: ['=100'], error: /"=100" is not tag=weight/ },
    { name: 'missing weight', args: ['v1='], error: /"v1=" is not tag=weight/ },
    { name: 'non-numeric weight', args: ['v1=ninety', 'v2=10'], error: /"v1=ninety": "ninety" is not a number/ },
    { name: 'exponent notation', args: ['v1=1e2'], error: /"v1=1e2": write the weight as a plain decimal number/ },
    { name: 'negative weight', args: ['v1=-5', 'v2=105'], error: /"v1=-5": the weight must be between 0 and 100/ },
    { name: 'percent sign', args: ['v1=90%', 'v2=10'], error: /"v1=90%": write the weight without "%"/ },
    { name: 'duplicate tag', args: ['v1=50', 'v1=50'], error: /tag "v1" given twice/ },
    { name: 'sum below 100', args: ['v1=90', 'v2=5'], error: /weights must sum to 100/ },
    { name: 'sum above 100', args: ['v1=90', 'v2=20'], error: /weights must sum to 100/ },
    { name: 'weight above 100', args: ['v1=150'], error: /"v1=150": the weight must be between 0 and 100/ },
    { name: 'no arguments', args: [], error: /at least one tag is required/ },
    { name: 'tag with a comma', args: ['v1,v2=100'], error: /"v1,v2=100": tag must not contain spaces/ },
  ];
  for (const { name, args, error } of invalid) {
    test(`invalid (${name}): ${args.join(' ') || '(none)'}`, () => {
      const parsed = parseCanaryArgs(args);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) assert.match(parsed.error, error);
    });
  }

  test('arguments and the equivalent KV value give the same weights', () => {
    const fromArgs = parseCanaryArgs(['blue=25', 'green=75']);
    const fromKv = parseCanaryValue('{"weights":{"blue":25,"green":75}}');
    assert.equal(fromArgs.ok, true);
    assert.deepEqual(fromArgs, fromKv);
  });
});

test('tags named like Object.prototype members are ordinary tags', () => {
  const args = parseCanaryArgs(['constructor=60', 'toString=40']);
  assert.ok(args.ok, args.ok ? '' : args.error);
  const value = parseCanaryValue('{"weights":{"constructor":100}}');
  assert.ok(value.ok);
});

test('an empty tag in a KV value is named in the error', () => {
  const value = parseCanaryValue('{"weights":{"":100}}');
  assert.equal(value.ok, false);
  assert.match(value.ok ? '' : value.error, /tag must not be empty/);
});
