/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): self time per function (name + file + line),
 * highest first. Self time of a node = its samples × the mean sampling interval.
 *
 *   node --import tsx bench/cpuprofile.ts FILE.cpuprofile [TOP]
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../test/helpers/consul.ts';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface SelfTime {
  readonly fn: string;
  readonly where: string;
  readonly ms: number;
  readonly pct: number;
}

export interface Summary {
  readonly totalMs: number;
  /** Sampled time not spent idle, in the program or in the garbage collector. */
  readonly busyMs: number;
  readonly top: SelfTime[];
  /** Self time by where the code lives: dist/<room> (src/ compiled), node_modules/<package>, node: internals, native. */
  readonly sources: SelfTime[];
}

function source(fn: string, where: string): string {
  if (fn.startsWith('RegExp: ')) return 'regular expressions';
  if (!where) return fn.startsWith('(') ? fn : 'native (no script)';
  if (where.startsWith('wasm://')) return "wasm (undici's llhttp parser)";
  const mod = /^node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(where);
  if (mod) return `node_modules/${mod[1]}`;
  const own = /^(dist|src|bench|test)\/([^/:]+)/.exec(where);
  if (own) return own[2]?.endsWith('.ts') ? `${own[1]}/${own[2]}` : `${own[1]}/${own[2]}/`;
  if (where.startsWith('node:')) return 'node: internals';
  return 'other';
}

const rootUrls = [pathToFileURL(repoRoot).href];

/** Also show paths under `dir` (another checkout being measured) relative to it. */
export function addRoot(dir: string): void {
  rootUrls.push(pathToFileURL(dir).href);
}

function where(url: string, line: number, column: number): string {
  if (!url) return '';
  const root = rootUrls.find((r) => url.startsWith(`${r}/`));
  let u = root ? url.slice(root.length + 1) : url.replace(/^file:\/\//, '');
  u = u.replace(/^.*\/node_modules\//, 'node_modules/');
  // Code compiled on the fly (tsx) keeps many functions on one line: the column tells them apart.
  return `${u}:${line + 1}:${column + 1}`;
}

/**
 * `window`: only samples taken between these two instants, in µs of the profile's clock (the
 * monotonic clock of process.hrtime.bigint() / 1000 on Linux).
 */
export function summarise(profile: Profile, top = 25, window?: { fromUs: number; toUs: number }): Summary {
  const hits = new Map<number, number>();
  if (profile.samples && profile.samples.length) {
    // Sample ids weighted by their time deltas (the interval varies with load).
    const deltas = profile.timeDeltas ?? [];
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      t += deltas[i] ?? 0;
      if (window && (t < window.fromUs || t > window.toUs)) continue;
      const id = profile.samples[i] as number;
      hits.set(id, (hits.get(id) ?? 0) + Math.max(0, deltas[i + 1] ?? deltas[i] ?? 0));
    }
  } else {
    const interval = (profile.endTime - profile.startTime) / Math.max(1, profile.nodes.reduce((s, n) => s + (n.hitCount ?? 0), 0));
    for (const n of profile.nodes) hits.set(n.id, (n.hitCount ?? 0) * interval);
  }
  const byFn = new Map<string, { fn: string; where: string; us: number }>();
  let totalUs = 0;
  let idleUs = 0;
  for (const n of profile.nodes) {
    const us = hits.get(n.id) ?? 0;
    if (us === 0) continue;
    totalUs += us;
    const name = n.callFrame.functionName || '(anonymous)';
    if (name === '(idle)') idleUs += us;
    const w = where(n.callFrame.url, n.callFrame.lineNumber, n.callFrame.columnNumber);
    const key = `${name}\u0000${w}`;
    const e = byFn.get(key);
    if (e) e.us += us;
    else byFn.set(key, { fn: name, where: w, us });
  }
  const busyUs = totalUs - idleUs;
  const bySource = new Map<string, number>();
  for (const e of byFn.values()) {
    if (e.fn === '(idle)') continue;
    const src = source(e.fn, e.where);
    bySource.set(src, (bySource.get(src) ?? 0) + e.us);
  }
  const sources = [...bySource.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([where, us]) => ({ fn: '', where, ms: us / 1000, pct: busyUs > 0 ? (100 * us) / busyUs : 0 }));
  const rows = [...byFn.values()]
    .filter((e) => e.fn !== '(idle)')
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((e) => ({ fn: e.fn, where: e.where, ms: e.us / 1000, pct: busyUs > 0 ? (100 * e.us) / busyUs : 0 }));
  return { totalMs: totalUs / 1000, busyMs: busyUs / 1000, top: rows, sources };
}

export function loadProfile(file: string): Profile {
  return JSON.parse(readFileSync(file, 'utf8')) as Profile;
}

export function formatSummary(s: Summary): string {
  const lines = [`sampled ${(s.totalMs / 1000).toFixed(1)} s, busy ${(s.busyMs / 1000).toFixed(1)} s (% below are of busy time)`];
  const w = Math.min(60, Math.max(8, ...s.top.map((r) => r.fn.length)));
  lines.push(`${'self %'.padStart(7)} ${'self ms'.padStart(9)}  ${'function'.padEnd(w)}  where`);
  for (const r of s.top) {
    lines.push(`${r.pct.toFixed(1).padStart(6)}% ${r.ms.toFixed(0).padStart(9)}  ${r.fn.slice(0, w).padEnd(w)}  ${r.where}`);
  }
  lines.push('');
  lines.push(`${'self %'.padStart(7)} ${'self ms'.padStart(9)}  by source`);
  for (const r of s.sources.slice(0, 15)) lines.push(`${r.pct.toFixed(1).padStart(6)}% ${r.ms.toFixed(0).padStart(9)}  ${r.where}`);
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [file, n] = process.argv.slice(2);
  if (!file) {
    console.error('usage: bench/cpuprofile.ts FILE.cpuprofile [TOP]');
    process.exit(2);
  }
  console.log(formatSummary(summarise(loadProfile(file), Number(n ?? 25))));
}
