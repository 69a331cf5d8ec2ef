import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { LeastRequestPicker, RoundRobinPicker, smoothWeightedSchedule, type Weighted } from '../../src/balancer/pickers.ts';

/** Deterministic pseudo-random numbers in [0, 1) (a 32-bit LCG), so runs are reproducible. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Returns the given values in order, then fails loudly if asked for more. */
function sequence(...values: number[]): () => number {
  let i = 0;
  return () => {
    const v = values[i++];
    if (v === undefined) throw new Error('random called more often than expected');
    return v;
  };
}

function counts<T>(items: readonly T[]): Map<T, number> {
  const out = new Map<T, number>();
  for (const x of items) out.set(x, (out.get(x) ?? 0) + 1);
  return out;
}

describe('smoothWeightedSchedule', () => {
  const exact: { weights: number[]; schedule: number[] }[] = [
    { weights: [5, 1, 1], schedule: [0, 0, 1, 0, 2, 0, 0] },
    { weights: [1], schedule: [0] },
    { weights: [1, 1, 1], schedule: [0, 1, 2] },
    { weights: [2, 2], schedule: [0, 1] },
    { weights: [2.5, 2.5], schedule: [0, 1] },
    { weights: [0.5, 1.5], schedule: [1, 0, 1, 1] },
    { weights: [33.333, 33.333, 33.334], schedule: [0, 1, 2] },
    { weights: [0, 3, 0, 1], schedule: [1, 1, 3, 1] },
    { weights: [], schedule: [] },
    { weights: [0, 0], schedule: [] },
    { weights: [-1, Number.NaN, Number.POSITIVE_INFINITY], schedule: [] },
  ];
  for (const { weights, schedule } of exact) {
    test(`exact schedule for ${JSON.stringify(weights)}`, () => {
      assert.deepEqual(smoothWeightedSchedule(weights), schedule);
    });
  }

  test('5,1,1 spreads the heavy endpoint: within a cycle never more than two turns in a row', () => {
    const s = smoothWeightedSchedule([5, 1, 1]);
    assert.ok(!s.join('').includes('000'), `schedule ${s.join(',')} has three turns in a row`);
  });

  const ratios: { weights: number[]; length: number; expected: number[] }[] = [
    { weights: [90, 10], length: 10, expected: [9, 1] },
    { weights: [9, 1], length: 10, expected: [9, 1] },
    { weights: [75, 25], length: 4, expected: [3, 1] },
    { weights: [33.5, 66.5], length: 200, expected: [67, 133] },
    { weights: [0.001, 0.002], length: 3, expected: [1, 2] },
    { weights: [3, 0, 1, -5, 2], length: 6, expected: [3, 0, 1, 0, 2] },
  ];
  for (const { weights, length, expected } of ratios) {
    test(`counts for ${JSON.stringify(weights)}`, () => {
      const s = smoothWeightedSchedule(weights);
      assert.equal(s.length, length);
      assert.deepEqual(
        weights.map((_, i) => s.filter((x) => x === i).length),
        expected,
      );
    });
  }

  const huge: number[][] = [
    [1_000_000, 3_000_000, 7_000_001],
    [123_457, 987_651],
    [10_000, 10_001, 20_003, 50_007],
    [4095, 4097],
  ];
  for (const weights of huge) {
    test(`huge weights ${JSON.stringify(weights)} are capped near 4096 entries, ratios kept within 1%`, () => {
      const s = smoothWeightedSchedule(weights);
      assert.ok(s.length <= 4096 + weights.length, `schedule has ${s.length} entries`);
      assert.ok(s.length >= 2048, `schedule collapsed to ${s.length} entries`);
      const total = weights.reduce((a, b) => a + b, 0);
      weights.forEach((w, i) => {
        const share = s.filter((x) => x === i).length / s.length;
        const want = w / total;
        assert.ok(Math.abs(share - want) / want < 0.01, `index ${i}: share ${share} vs ${want}`);
      });
    });
  }

  test('a tiny weight next to a huge one keeps at least one turn', () => {
    const s = smoothWeightedSchedule([1e9, 1]);
    assert.ok(s.length <= 4097);
    assert.equal(s.filter((x) => x === 1).length, 1);
  });
});

describe('RoundRobinPicker', () => {
  const weighted: Weighted<string>[] = [
    { item: 'a', weight: 3 },
    { item: 'b', weight: 2 },
    { item: 'zero', weight: 0 },
    { item: 'c', weight: 1 },
  ];
  for (const start of [0, 0.25, 0.5, 0.999]) {
    test(`weights honoured exactly over full cycles (start=${start})`, () => {
      const picker = new RoundRobinPicker(weighted, start);
      const picks = Array.from({ length: 12 }, () => picker.pick());
      assert.equal(picks.filter((p) => p === 'a').length, 6);
      assert.equal(picks.filter((p) => p === 'b').length, 4);
      assert.equal(picks.filter((p) => p === 'c').length, 2);
      assert.ok(!picks.includes('zero'));
    });
  }

  test('start=0 follows the smooth schedule: 5,1,1 → a a b a c a a', () => {
    const picker = new RoundRobinPicker(
      [
        { item: 'a', weight: 5 },
        { item: 'b', weight: 1 },
        { item: 'c', weight: 1 },
      ],
      0,
    );
    assert.deepEqual(
      Array.from({ length: 14 }, () => picker.pick()),
      ['a', 'a', 'b', 'a', 'c', 'a', 'a', 'a', 'a', 'b', 'a', 'c', 'a', 'a'],
    );
  });

  test('size counts only items with weight > 0', () => {
    assert.equal(new RoundRobinPicker(weighted, 0).size, 3);
  });

  const excludeCases: { name: string; items: Weighted<string>[]; exclude: string; allowed: string[] }[] = [
    { name: 'two equal items', items: [{ item: 'a', weight: 1 }, { item: 'b', weight: 1 }], exclude: 'a', allowed: ['b'] },
    { name: 'excluded item is the heavy one', items: [{ item: 'a', weight: 9 }, { item: 'b', weight: 1 }], exclude: 'a', allowed: ['b'] },
    {
      name: 'three items',
      items: [{ item: 'a', weight: 1 }, { item: 'b', weight: 5 }, { item: 'c', weight: 2 }],
      exclude: 'b',
      allowed: ['a', 'c'],
    },
    { name: 'exclude not in the set', items: [{ item: 'a', weight: 1 }, { item: 'b', weight: 1 }], exclude: 'z', allowed: ['a', 'b'] },
  ];
  for (const { name, items, exclude, allowed } of excludeCases) {
    test(`exclude is never returned when another exists: ${name}`, () => {
      for (const start of [0, 0.3, 0.7]) {
        const picker = new RoundRobinPicker(items, start);
        for (let i = 0; i < 50; i++) {
          const got = picker.pick(exclude);
          assert.ok(got !== undefined && allowed.includes(got), `got ${String(got)}`);
        }
      }
    });
  }

  test('a single item is returned even when excluded', () => {
    const picker = new RoundRobinPicker([{ item: 'only', weight: 3 }], 0.5);
    assert.equal(picker.pick('only'), 'only');
    assert.equal(picker.pick(), 'only');
  });

  const emptyCases: { name: string; items: Weighted<string>[] }[] = [
    { name: 'no items', items: [] },
    { name: 'only zero weights', items: [{ item: 'a', weight: 0 }, { item: 'b', weight: 0 }] },
  ];
  for (const { name, items } of emptyCases) {
    test(`empty → undefined (${name})`, () => {
      const picker = new RoundRobinPicker(items, 0);
      assert.equal(picker.size, 0);
      assert.equal(picker.pick(), undefined);
      assert.equal(picker.pick('a'), undefined);
    });
  }
});

describe('LeastRequestPicker', () => {
  const w = (item: string, weight = 1): Weighted<string> => ({ item, weight });

  const deterministic: {
    name: string;
    items: Weighted<string>[];
    load: Record<string, number>;
    random: number[];
    exclude?: string;
    expected: string | undefined;
  }[] = [
    { name: 'lower load wins (second candidate)', items: [w('x'), w('y')], load: { x: 5, y: 0 }, random: [0, 0.9], expected: 'y' },
    { name: 'lower load wins (first candidate)', items: [w('x'), w('y')], load: { x: 5, y: 0 }, random: [0.9, 0], expected: 'y' },
    { name: 'a tie keeps the first candidate', items: [w('x'), w('y')], load: { x: 2, y: 2 }, random: [0.9, 0], expected: 'y' },
    { name: 'a tie keeps the first candidate (reversed)', items: [w('x'), w('y')], load: { x: 2, y: 2 }, random: [0, 0.9], expected: 'x' },
    { name: 'weight-aware: heavier endpoint may carry more', items: [w('x', 10), w('y', 1)], load: { x: 5, y: 0 }, random: [0, 0.9], expected: 'x' },
    { name: 'weight-aware: but not unboundedly', items: [w('x', 10), w('y', 1)], load: { x: 20, y: 0 }, random: [0, 0.9], expected: 'y' },
    { name: 'same candidate twice → its neighbour is compared', items: [w('x'), w('y'), w('z')], load: { x: 3, y: 1, z: 0 }, random: [0, 0], expected: 'y' },
    { name: 'exclude as first probe moves to the next', items: [w('x'), w('y'), w('z')], load: { x: 0, y: 9, z: 5 }, random: [0, 0.9], exclude: 'x', expected: 'z' },
    { name: 'exclude is not returned even when least loaded', items: [w('x'), w('y')], load: { x: 0, y: 100 }, random: [0, 0], exclude: 'x', expected: 'y' },
    { name: 'zero-weight items are not candidates', items: [w('x', 0), w('y'), w('z')], load: { x: 0, y: 4, z: 7 }, random: [0, 0.9], expected: 'y' },
  ];
  for (const c of deterministic) {
    test(c.name, () => {
      const picker = new LeastRequestPicker(c.items, (i) => c.load[i] ?? 0, sequence(...c.random));
      assert.equal(picker.pick(c.exclude), c.expected);
    });
  }

  test('prefers lower in-flight load over many picks', () => {
    const load: Record<string, number> = { idle: 0, busy: 10, swamped: 20 };
    const picker = new LeastRequestPicker([w('idle'), w('busy'), w('swamped')], (i) => load[i] ?? 0, seeded(7));
    const got = counts(Array.from({ length: 3000 }, () => picker.pick()));
    assert.equal(got.get('swamped') ?? 0, 0, 'the most loaded endpoint never wins a comparison');
    assert.ok((got.get('idle') ?? 0) > (got.get('busy') ?? 0), `idle ${got.get('idle')} vs busy ${got.get('busy')}`);
  });

  test('exclude is never returned when another exists', () => {
    const picker = new LeastRequestPicker([w('x'), w('y'), w('z')], (i) => (i === 'x' ? 0 : 5), seeded(11));
    for (let i = 0; i < 1000; i++) assert.notEqual(picker.pick('x'), 'x');
  });

  test('deterministic for the same injected random', () => {
    const load: Record<string, number> = { a: 1, b: 3, c: 0, d: 2 };
    const items = [w('a', 2), w('b', 1), w('c', 1), w('d', 3)];
    const run = (): (string | undefined)[] => {
      const picker = new LeastRequestPicker(items, (i) => load[i] ?? 0, seeded(42));
      return Array.from({ length: 200 }, (_, k) => picker.pick(k % 5 === 0 ? 'c' : undefined));
    };
    const first = run();
    assert.deepEqual(run(), first);
    assert.ok(new Set(first).size > 1, 'picks should vary with the random source');
  });

  test('a single item is returned even when excluded', () => {
    const picker = new LeastRequestPicker([w('only')], () => 100, sequence());
    assert.equal(picker.pick('only'), 'only');
    assert.equal(picker.size, 1);
  });

  test('empty → undefined', () => {
    const picker = new LeastRequestPicker<string>([w('x', 0)], () => 0, sequence());
    assert.equal(picker.size, 0);
    assert.equal(picker.pick(), undefined);
  });
});

describe('pickers with a usable predicate (outlier ejection)', () => {
  const w = (item: string, weight = 1): Weighted<string> => ({ item, weight });
  const not =
    (...unusable: string[]) =>
    (item: string): boolean =>
      !unusable.includes(item);

  const cases: {
    name: string;
    items: Weighted<string>[];
    usable: (item: string) => boolean;
    exclude?: string;
    allowed: string[];
  }[] = [
    { name: 'an unusable item is skipped', items: [w('a'), w('b'), w('c')], usable: not('b'), allowed: ['a', 'c'] },
    { name: 'the heavy item is unusable', items: [w('a', 9), w('b'), w('c')], usable: not('a'), allowed: ['b', 'c'] },
    { name: 'unusable and excluded leave one', items: [w('a'), w('b'), w('c')], usable: not('b'), exclude: 'a', allowed: ['c'] },
    { name: 'panic: nothing usable → any item', items: [w('a'), w('b'), w('c')], usable: not('a', 'b', 'c'), allowed: ['a', 'b', 'c'] },
    { name: 'panic still honours exclude', items: [w('a'), w('b')], usable: not('a', 'b'), exclude: 'a', allowed: ['b'] },
    { name: 'panic prefers an unusable item to the excluded one', items: [w('a'), w('b')], usable: not('b'), exclude: 'a', allowed: ['b'] },
    { name: 'a single unusable, excluded item is still returned', items: [w('only')], usable: not('only'), exclude: 'only', allowed: ['only'] },
  ];
  const pickers: { kind: string; make: (items: Weighted<string>[], start: number) => { pick(e?: string, u?: (i: string) => boolean): string | undefined } }[] = [
    { kind: 'round robin', make: (items, start) => new RoundRobinPicker(items, start) },
    { kind: 'least request', make: (items, start) => new LeastRequestPicker(items, () => 0, seeded(Math.floor(start * 1000) + 1)) },
  ];
  for (const { kind, make } of pickers) {
    for (const c of cases) {
      test(`${kind}: ${c.name}`, () => {
        for (const start of [0, 0.3, 0.7]) {
          const picker = make(c.items, start);
          const got = counts(Array.from({ length: 60 }, () => picker.pick(c.exclude, c.usable)));
          assert.deepEqual([...got.keys()].filter((k) => !c.allowed.includes(k as string)), [], `start=${start}: ${JSON.stringify([...got])}`);
          if (c.allowed.length > 1) assert.equal(got.size, c.allowed.length, `start=${start}: every allowed item is picked: ${JSON.stringify([...got])}`);
        }
      });
    }

    test(`${kind}: empty → undefined with a predicate`, () => {
      assert.equal(make([], 0).pick(undefined, () => true), undefined);
    });
  }

  test('round robin: panic picks rotate instead of sticking to one item', () => {
    const picker = new RoundRobinPicker([w('a'), w('b'), w('c')], 0);
    assert.deepEqual(
      Array.from({ length: 6 }, () => picker.pick(undefined, () => false)),
      ['a', 'b', 'c', 'a', 'b', 'c'],
    );
  });

  test('round robin: a skipped turn goes to the next usable item, the cycle continues after it', () => {
    const picker = new RoundRobinPicker([w('a'), w('b'), w('c'), w('d')], 0);
    assert.deepEqual(
      Array.from({ length: 6 }, () => picker.pick(undefined, not('b'))),
      ['a', 'c', 'd', 'a', 'c', 'd'],
    );
  });

  test('round robin: the predicate is not consulted without one (plain path unchanged)', () => {
    const picker = new RoundRobinPicker([w('a'), w('b')], 0);
    assert.deepEqual([picker.pick(), picker.pick(undefined, undefined)], ['a', 'b']);
  });

  const deterministic: { name: string; items: Weighted<string>[]; load: Record<string, number>; usable: (i: string) => boolean; random: number[]; exclude?: string; expected: string }[] = [
    {
      name: 'an unusable first draw is redrawn, then the lower load wins',
      items: [w('x'), w('y'), w('z')],
      load: { x: 4, y: 1, z: 0 },
      usable: not('z'),
      random: [0.9, 0, 0, 0.5], // z rejected → x; x again (taken) → y
      expected: 'y',
    },
    {
      name: 'after three misses a scan finds the only usable item, which is returned alone',
      items: [w('a'), w('b'), w('c'), w('d')],
      load: {},
      usable: not('a', 'b', 'c'),
      random: [0, 0, 0, 0, 0, 0],
      expected: 'd',
    },
    {
      name: 'exclude and unusable together',
      items: [w('x'), w('y'), w('z')],
      load: { x: 0, y: 0, z: 9 },
      usable: not('y'),
      exclude: 'x',
      random: [0, 0.5, 0.9, 0.9, 0, 0, 0], // x excluded, y unusable → z; then no second candidate
      expected: 'z',
    },
    {
      name: 'panic falls back to the plain pick (which honours exclude)',
      items: [w('x'), w('y')],
      load: { x: 0, y: 5 },
      usable: () => false,
      exclude: 'x',
      random: [0, 0, 0, 0, 0],
      expected: 'y',
    },
  ];
  for (const c of deterministic) {
    test(`least request: ${c.name}`, () => {
      const picker = new LeastRequestPicker(c.items, (i) => c.load[i] ?? 0, sequence(...c.random));
      assert.equal(picker.pick(c.exclude, c.usable), c.expected);
    });
  }

  test('least request: load decides among usable items only', () => {
    const load: Record<string, number> = { idle: 0, ejected: 0, busy: 10 };
    const picker = new LeastRequestPicker([w('idle'), w('ejected'), w('busy')], (i) => load[i] ?? 0, seeded(3));
    const got = counts(Array.from({ length: 500 }, () => picker.pick(undefined, not('ejected'))));
    assert.deepEqual([...got], [['idle', 500]]);
  });
});
