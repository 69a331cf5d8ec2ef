/**
 * CPU time and memory of a whole process tree, read from /proc (Linux only). A proxy that forks
 * workers is charged for every descendant: a root PID and all processes whose parent chain leads
 * to it, each with its own utime+stime plus cutime+cstime (children it has already reaped).
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

function sysconf(name: string, fallback: number): number {
  try {
    const n = Number(execFileSync('getconf', [name], { encoding: 'utf8' }).trim());
    return Number.isFinite(n) && n > 0 ? n : fallback;
  } catch {
    return fallback;
  }
}

const CLOCK_TICKS = sysconf('CLK_TCK', 100);
const PAGE_SIZE = sysconf('PAGESIZE', 4096);

interface Stat {
  readonly pid: number;
  /** The executable's name as the kernel keeps it (at most 15 characters). */
  readonly comm: string;
  readonly ppid: number;
  /** utime+stime+cutime+cstime, in clock ticks. */
  readonly ticks: number;
  readonly rssBytes: number;
}

function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // exited between readdir and read
  }
  // "pid (comm) state ppid ..." where comm may hold spaces and parentheses: split after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): field n is f[n - 3].
  const num = (field: number): number => Number(f[field - 3] ?? 0);
  return {
    pid,
    comm: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')),
    ppid: num(4),
    ticks: num(14) + num(15) + num(16) + num(17),
    rssBytes: num(24) * PAGE_SIZE,
  };
}

function allStats(): Stat[] {
  const out: Stat[] = [];
  for (const name of readdirSync('/proc')) {
    if (name.charCodeAt(0) < 48 || name.charCodeAt(0) > 57) continue;
    const s = readStat(Number(name));
    if (s) out.push(s);
  }
  return out;
}

/** The root and every live descendant. */
export function treeStats(root: number): Stat[] {
  const all = allStats();
  const children = new Map<number, Stat[]>();
  for (const s of all) {
    const list = children.get(s.ppid);
    if (list) list.push(s);
    else children.set(s.ppid, [s]);
  }
  const self = all.find((s) => s.pid === root);
  if (!self) return [];
  const out: Stat[] = [];
  const queue = [self];
  for (let i = 0; i < queue.length && i < 10_000; i++) {
    const s = queue[i] as Stat;
    out.push(s);
    queue.push(...(children.get(s.pid) ?? []));
  }
  return out;
}

/** CPU seconds (user + system) charged so far to the tree under `root`, reaped children included. */
export function treeCpuSeconds(root: number): number {
  return treeStats(root).reduce((sum, s) => sum + s.ticks, 0) / CLOCK_TICKS;
}

/** Resident memory of every process of the tree, summed (shared pages counted once per process). */
export function treeRssBytes(root: number): number {
  return treeStats(root).reduce((sum, s) => sum + s.rssBytes, 0);
}

/** Number of processes in the tree (1 for a single process). */
export function treeSize(root: number): number {
  return treeStats(root).length;
}

/** "3 processes: nginx ×3" or "2 processes: node, esbuild". */
export function describeTree(root: number): string {
  const stats = treeStats(root);
  const counts = new Map<string, number>();
  for (const s of stats) counts.set(s.comm, (counts.get(s.comm) ?? 0) + 1);
  const names = [...counts].map(([name, n]) => (n > 1 ? `${name} ×${n}` : name)).join(', ');
  return `${stats.length} process${stats.length === 1 ? '' : 'es'}: ${names}`;
}
