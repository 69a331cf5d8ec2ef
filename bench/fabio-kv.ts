/**
 * The control plane's cost of a change of fabio's route keys (no Consul): the snapshot build from
 * a table at the limits (64 keys, 10,000 commands, 1,000 targets, hundreds of refused lines) and
 * from a plain table, and a catalog change afterwards (the lines are not run again). Prints the
 * median and max over --runs builds. No asserts.
 *
 *   node --import tsx bench/fabio-kv.ts
 */
import { performance } from 'node:perf_hooks';
import type { ConsulViews, KvEntry } from '../src/core/types.ts';
import { buildSnapshot, type Snapshot } from '../src/state/snapshot.ts';
import { fixed, flag, max, median, table } from './harness.ts';

const runs = Number(flag('runs', 'BENCH_RUNS', '20'));
const OPTIONS = { allowWarning: false, kvPrefix: 'gateway/' };

function worstCase(version: number): KvEntry[] {
  const adds = Array.from({ length: 1_200 }, (_, i) => `route add s${i % 50} /r${i} http://10.0.${Math.floor(i / 250)}.${(i % 250) + 1}:80 weight 0.001 tags "a,b" opts "strip=/r${i}"`);
  const dels = Array.from({ length: 4_000 }, (_, i) => (i % 2 === 0 ? `route del s${i % 50} tags "b,${i}"` : `route weight s${i % 50} /r${i % 1_000} weight 0.5 tags "a"`));
  const junk = Array.from({ length: 4_000 }, (_, i) => `route bogus ${i}`);
  return [
    { key: 'fabio/config', value: adds.join('\n'), modifyIndex: version },
    { key: 'fabio/config/a', value: dels.join('\n'), modifyIndex: version },
    ...Array.from({ length: 62 }, (_, k) => ({ key: `fabio/config/z${String(k).padStart(2, '0')}`, value: `${junk.join('\n')}\n# ${version}`, modifyIndex: version })),
  ];
}

function plain(version: number): KvEntry[] {
  return [{ key: 'fabio/config', value: `${Array.from({ length: 50 }, (_, i) => `route add s /p${i} http://10.0.0.${i + 1}:80`).join('\n')}\n# ${version}`, modifyIndex: version }];
}

const catalog = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`svc${i}`, [`urlprefix-/svc${i}`]]));

const rows: string[][] = [];
for (const [name, make] of [['none', (): KvEntry[] => []], ['plain (50 lines)', plain], ['at the limits', worstCase]] as const) {
  const change: number[] = [];
  const catalogChange: number[] = [];
  let previous: Snapshot | undefined;
  for (let r = 0; r < runs; r++) {
    const views: ConsulViews = { catalog: catalog(100), health: new Map(), kv: [], fabio: make(r + 1) };
    let t = performance.now();
    previous = buildSnapshot(views, OPTIONS, previous);
    change.push(performance.now() - t);
    t = performance.now();
    previous = buildSnapshot({ ...views, catalog: catalog(101 + r) }, OPTIONS, previous);
    catalogChange.push(performance.now() - t);
  }
  rows.push([name, fixed(median(change), 1), fixed(max(change), 1), fixed(median(catalogChange), 1), String(previous?.routes.length ?? 0), String(previous?.problems.length ?? 0)]);
}
console.log(table(['fabio keys', 'change median ms', 'change max ms', 'catalog change median ms', 'routes', 'problems'], rows));
