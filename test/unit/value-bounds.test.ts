/**
 * Size, depth and length bounds checked before any parser sees a KV value or policy file
 * (src/policy/value-bounds.ts and yaml-bounds.ts), and what the parsers built on them do with
 * hostile values: every document shipped in policies/ passes, attack shapes are refused quickly,
 * and a refused value is not kept alive or parsed again.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkJsonBounds, MAX_DEPTH, ParseMemo } from '../../src/policy/value-bounds.ts';
import { checkYamlBounds, MAX_YAML_TOKENS } from '../../src/policy/yaml-bounds.ts';
import { parseDocumentText } from '../../src/policy/documents.ts';
import { parseCanaryValue } from '../../src/policy/canary.ts';
import { parseConsumerValue } from '../../src/policy/resolve.ts';

const MAX = 512 * 1024;
/** Generous for a busy 2-core machine; the checks take a few ms, the unbounded parses took seconds. */
const FAST_MS = 1_000;

const nested = (open: string, close: string, n: number): string => open.repeat(n) + close.repeat(n);

function timed<T>(fn: () => T): { value: T; ms: number } {
  const started = performance.now();
  const value = fn();
  return { value, ms: performance.now() - started };
}

describe('checkJsonBounds', () => {
  const cases: { name: string; text: string; ok: boolean; error?: RegExp }[] = [
    { name: 'a canary value', text: '{"weights":{"v1":90,"v2":10}}', ok: true },
    { name: `${MAX_DEPTH} levels`, text: nested('[', ']', MAX_DEPTH), ok: true },
    { name: `${MAX_DEPTH + 1} levels`, text: nested('[', ']', MAX_DEPTH + 1), ok: false, error: /nested deeper than 32 levels/ },
    { name: 'mixed [ and { deep', text: '{"a":['.repeat(20), ok: false, error: /nested deeper/ },
    { name: 'brackets inside strings do not count', text: `{"a":"${'['.repeat(1000)}"}`, ok: true },
    { name: 'escaped quotes inside strings', text: `{"a":"\\"${'['.repeat(100)}\\""}`, ok: true },
    { name: '[ x 100k', text: '['.repeat(100_000), ok: false, error: /nested deeper/ },
    { name: '{"a": x 100k', text: '{"a":'.repeat(100_000), ok: false, error: /nested deeper|larger than/ },
    { name: '600 KB', text: `"${'a'.repeat(600 * 1024)}"`, ok: false, error: /larger than 524288 bytes/ },
    { name: 'multi-byte characters count as bytes', text: `"${'é'.repeat(300 * 1024)}"`, ok: false, error: /larger than 524288 bytes \(614402\)/ },
    { name: 'stray closers do not lend depth to the openers after them', text: `${']}'.repeat(1000)}${'['.repeat(MAX_DEPTH + 1)}`, ok: false, error: /nested deeper/ },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { value, ms } = timed(() => checkJsonBounds(c.text, MAX));
      assert.equal(value.ok, c.ok, JSON.stringify(value));
      if (!value.ok && c.error) assert.match(value.error, c.error);
      assert.ok(ms < FAST_MS, `took ${ms.toFixed(0)} ms`);
    });
  }
});

describe('checkYamlBounds', () => {
  const blockNest = (levels: number, indent: number): string => Array.from({ length: levels }, (_, i) => `${' '.repeat(i * indent)}a:`).join('\n');
  const cases: { name: string; text: string; ok: boolean; error?: RegExp }[] = [
    { name: 'a small policy', text: 'appliesTo: defaults\ntimeouts: {connect: 1s}\n', ok: true },
    { name: `flow ${MAX_DEPTH} levels`, text: `a: ${nested('[', ']', MAX_DEPTH)}`, ok: true },
    { name: `flow ${MAX_DEPTH + 1} levels`, text: `a: ${nested('[', ']', MAX_DEPTH + 1)}`, ok: false, error: /nested deeper/ },
    { name: 'flow brackets inside quoted scalars do not count', text: `a: "${'['.repeat(1000)}"\nb: '${'{'.repeat(1000)}'`, ok: true },
    { name: 'flow brackets inside a comment do not count', text: `# ${'['.repeat(1000)}\na: 1`, ok: true },
    { name: '[ x 100k', text: '['.repeat(100_000), ok: false, error: /nested deeper/ },
    { name: 'stray closers do not lend depth (the parser goes on after them)', text: `a: ${']'.repeat(2000)}\nb: ${'['.repeat(2000)}`, ok: false, error: /nested deeper/ },
    { name: '{"a": x 100k (JSON is YAML)', text: '{"a":'.repeat(100_000), ok: false, error: /nested deeper|larger than/ },
    { name: 'block nesting, 2 spaces a level, 40 levels', text: blockNest(40, 2), ok: true },
    { name: 'block nesting, 2 spaces a level, 1000 levels', text: blockNest(1000, 1), ok: false, error: /indented by more than 128 spaces/ },
    { name: 'block nesting, 1 space a level, 700 levels', text: blockNest(700, 1), ok: false, error: /indented by more than 128 spaces/ },
    { name: 'tabs as indentation', text: `${'\t'.repeat(200)}a: 1`, ok: false, error: /indented/ },
    { name: `- - - x ${MAX_DEPTH} levels on one line`, text: `${'- '.repeat(MAX_DEPTH)}x`, ok: true },
    { name: '- - - - x 100k levels on one line', text: `${'- '.repeat(100_000)}x`, ok: false, error: /nested deeper/ },
    { name: '? ? ? x 100k explicit keys', text: `${'? '.repeat(100_000)}x`, ok: false, error: /nested deeper/ },
    { name: 'mixed block indicators and flow on indented lines', text: Array.from({ length: 200 }, (_, i) => `${' '.repeat(i % 120)}- [ {a: [ ? `).join('\n'), ok: false, error: /nested deeper/ },
    { name: '600 KB', text: `a: ${'x'.repeat(600 * 1024)}`, ok: false, error: /larger than 524288 bytes/ },
    { name: '30 000 keys (quadratic in the parser)', text: Array.from({ length: 30_000 }, (_, i) => `k${i}: 1`).join('\n'), ok: false, error: /more than 10000 YAML tokens/ },
    { name: '30 000 keys of a flow map', text: `{${Array.from({ length: 30_000 }, (_, i) => `"k${i}":1`).join(',')}}`, ok: false, error: /more than 10000 YAML tokens/ },
    { name: '30 000 anchors', text: Array.from({ length: 30_000 }, (_, i) => `k${i}: &a${i} 1`).join('\n'), ok: false, error: /more than 10000 YAML tokens/ },
    { name: '30 000 tags', text: Array.from({ length: 30_000 }, (_, i) => `k${i}: !!str 1`).join('\n'), ok: false, error: /more than 10000 YAML tokens/ },
    { name: '50 000 documents', text: '---\na: 1\n'.repeat(50_000), ok: false, error: /more than 10000 YAML tokens/ },
    { name: '120 000 comment lines', text: '# c\n'.repeat(120_000), ok: false, error: /more than 10000 YAML tokens/ },
    { name: '500 000 newlines', text: '\n'.repeat(500_000), ok: false, error: /more than 10000 YAML tokens/ },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { value, ms } = timed(() => checkYamlBounds(c.text, MAX));
      assert.equal(value.ok, c.ok, JSON.stringify(value));
      if (!value.ok && c.error) assert.match(value.error, c.error);
      assert.ok(ms < FAST_MS, `took ${ms.toFixed(0)} ms`);
    });
  }

  test(`the token bound is far above real documents: ${MAX_YAML_TOKENS}`, () => {
    assert.ok(MAX_YAML_TOKENS >= 10 * 600);
  });
});

const POLICIES = fileURLToPath(new URL('../../policies/', import.meta.url));

describe('every document shipped in policies/ passes the bounds and parses', () => {
  const files = [
    ...readdirSync(POLICIES).filter((f) => /\.(ya?ml|json)$/.test(f)).map((f) => ({ path: join(POLICIES, f), kind: 'policy' as const })),
    ...readdirSync(join(POLICIES, 'routes')).filter((f) => /\.(ya?ml|json)$/.test(f)).map((f) => ({ path: join(POLICIES, 'routes', f), kind: 'route' as const })),
  ];
  test('there are documents to check', () => assert.ok(files.length >= 4));
  for (const f of files) {
    test(f.path.slice(POLICIES.length), () => {
      const text = readFileSync(f.path, 'utf8');
      assert.deepEqual(checkYamlBounds(text, MAX), { ok: true });
      const parsed = parseDocumentText(text, f.kind);
      assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
      // Ten times the content, as one long document, still fits the bounds (only size is tested:
      // the repeated keys would be duplicates).
      assert.deepEqual(checkYamlBounds(`${text}\n`.repeat(5), MAX), { ok: true }, 'a document five times the size of the examples must pass');
    });
  }
});

describe('hostile values through the real parsers: refused, quickly, and without warnings', () => {
  const shapes: { name: string; text: string }[] = [
    { name: '[ x 100k', text: '['.repeat(100_000) },
    { name: '{"a": x 100k', text: '{"a":'.repeat(100_000) },
    { name: 'YAML block nesting 700 levels', text: Array.from({ length: 700 }, (_, i) => `${' '.repeat(i)}a:`).join('\n') },
    { name: '- - - - x 100k', text: `${'- '.repeat(100_000)}x` },
    { name: '600 KB', text: JSON.stringify({ weights: { v1: 100 }, pad: 'a'.repeat(600 * 1024) }) },
    { name: '30 000 keys', text: Array.from({ length: 30_000 }, (_, i) => `k${i}: 1`).join('\n') },
    { name: '30 000 anchors', text: Array.from({ length: 30_000 }, (_, i) => `k${i}: &a${i} 1`).join('\n') },
    { name: '3 000 unknown tags', text: Array.from({ length: 3_000 }, (_, i) => `k${i}: !x${i} 1`).join('\n') },
    { name: '1 000 collection keys', text: Array.from({ length: 1_000 }, (_, i) => `? [a${i}, b]\n: 1`).join('\n') },
  ];
  for (const { name, text } of shapes) {
    test(name, () => {
      const warnings: string[] = [];
      const onWarning = (w: Error) => warnings.push(w.message);
      process.on('warning', onWarning);
      const emit = process.emitWarning;
      process.emitWarning = ((w: string | Error) => warnings.push(String(w))) as typeof process.emitWarning;
      try {
        for (const kind of ['policy', 'route'] as const) {
          const { value, ms } = timed(() => parseDocumentText(`${text}\n# ${kind}`, kind));
          assert.equal(value.ok, false);
          assert.ok(ms < 2 * FAST_MS, `${kind}: took ${ms.toFixed(0)} ms`);
        }
        for (const parse of [parseCanaryValue, parseConsumerValue]) {
          const { value, ms } = timed(() => parse(text));
          assert.equal(value.ok, false);
          assert.ok(ms < FAST_MS, `${parse.name}: took ${ms.toFixed(0)} ms`);
        }
      } finally {
        process.emitWarning = emit;
        process.off('warning', onWarning);
      }
      assert.deepEqual(warnings.slice(0, 3), [], 'a KV value must not make the gateway write warnings');
    });
  }

  test('the largest document within the bounds parses within a second or two', () => {
    // Just under the token bound: the worst shape for the parser (one map, unique keys).
    const keys = Math.floor(MAX_YAML_TOKENS / 7) - 10;
    const text = Array.from({ length: keys }, (_, i) => `k${i}: 1`).join('\n');
    assert.deepEqual(checkYamlBounds(text, MAX), { ok: true });
    const { value, ms } = timed(() => parseDocumentText(text, 'policy'));
    assert.equal(value.ok, false);
    assert.ok(ms < 2 * FAST_MS, `took ${ms.toFixed(0)} ms`);
  });
});

describe('ParseMemo', () => {
  test('a text seen before is not parsed again', () => {
    const memo = new ParseMemo<number>();
    let calls = 0;
    const parse = (t: string) => (calls++, t.length);
    const long = 'x'.repeat(10_000);
    for (let i = 0; i < 5; i++) {
      assert.equal(memo.get('abc', parse), 3);
      assert.equal(memo.get(long, parse), 10_000);
    }
    assert.equal(calls, 2);
  });

  test('bounded in entries: the oldest go first', () => {
    const memo = new ParseMemo<number>(3);
    let calls = 0;
    const parse = (t: string) => (calls++, t.length);
    for (const t of ['a', 'bb', 'ccc', 'dddd']) memo.get(t, parse);
    assert.equal(memo.retained.entries, 3);
    memo.get('dddd', parse);
    assert.equal(calls, 4);
    memo.get('a', parse);
    assert.equal(calls, 5, '"a" was evicted');
  });

  test('bounded in characters: 1024 refused 600 KB versions of one value do not stay alive', () => {
    const memo = new ParseMemo<string>();
    for (let i = 0; i < 1024; i++) memo.get(`${i}:${'a'.repeat(600 * 1024)}`, () => 'refused');
    assert.ok(memo.retained.chars <= 4 * 1024 * 1024, `${memo.retained.chars} characters kept`);
  });

  test('a text larger than a quarter of the budget is answered, not kept', () => {
    const memo = new ParseMemo<string>(1024, 1000);
    assert.equal(memo.get('x'.repeat(251), () => 'refused'), 'refused');
    assert.deepEqual(memo.retained, { entries: 0, chars: 0 });
  });
});
