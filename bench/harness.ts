/**
 * Shared pieces of the comparison, scale and profile benchmarks: starting the backend, cgw and
 * wrk as child processes (stopped by PID), the machine description, small statistics.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { findConsul, repoRoot } from '../test/helpers/consul.ts';
import { freePorts } from '../test/helpers/ports.ts';
import { exitOf, hasExited, terminate, track } from '../test/helpers/process.ts';
import { assertBuilt } from '../test/helpers/build.ts';
import { treeStats } from './proc-tree.ts';

export { repoRoot };
/**
 * The checkout whose cgw is measured: this one by default, or `--cgw-root DIR` (BENCH_CGW_ROOT),
 * e.g. a `git worktree` of another revision, built, to compare before and after a change.
 */
export const cgwRoot = resolve(flag('cgw-root', 'BENCH_CGW_ROOT', repoRoot));
/**
 * cgw as it ships: bin/cgw runs the compiled dist/cli/main.js (`npm run build`; the bench:* npm
 * scripts build first). In this checkout a dist/ older than src/ is refused, so no stale code is
 * measured; another root must have been built (`npm run build` there).
 */
export const CGW = join(cgwRoot, 'bin', 'cgw');

function checkBuilt(): void {
  if (cgwRoot === repoRoot) assertBuilt();
  else if (!existsSync(join(cgwRoot, 'dist', 'cli', 'main.js'))) throw new Error(`${cgwRoot}/dist/cli/main.js is missing: run npm run build there`);
}

/** `--name value` or `--name=value` from argv, else the environment variable, else the default. */
export function flag(name: string, env: string, fallback: string): string {
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === `--${name}`) return argv[i + 1] ?? fallback;
    if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
  }
  return process.env[env] ?? fallback;
}

export function hasFlag(name: string): boolean {
  return process.argv.slice(2).includes(`--${name}`);
}

export interface Child {
  readonly proc: ChildProcess;
  readonly pid: number;
  /** SIGTERM the root by PID, wait (SIGKILL after `graceMs`), then SIGKILL any descendant left. */
  stop(graceMs?: number): Promise<void>;
}

/** Spawns a tracked child; stdout is read by `onStdout` or thrown away; stderr goes to a file or is ignored. */
export async function startChild(
  cmd: string,
  args: string[],
  opts: { stdout?: 'ignore' | 'pipe'; stderrFile?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Child> {
  const stderr = opts.stderrFile ? openSync(opts.stderrFile, 'a') : 'ignore';
  const proc = spawn(cmd, args, { cwd: repoRoot, env: opts.env ?? process.env, stdio: ['ignore', opts.stdout ?? 'ignore', stderr] });
  track(proc);
  await new Promise<void>((resolve, reject) => {
    proc.once('spawn', () => resolve());
    proc.once('error', reject);
  });
  const pid = proc.pid as number;
  return {
    proc,
    pid,
    async stop(graceMs = 10_000) {
      const family = treeStats(pid).map((s) => s.pid).filter((p) => p !== pid);
      await terminate(proc, 'SIGTERM', graceMs);
      for (const p of family) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* gone already */
        }
      }
    },
  };
}

/** Resolves with the first stdout line of `child` (bounded by `timeoutMs`). */
export function firstLine(child: Child, timeoutMs = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const out = child.proc.stdout;
    if (!out) return reject(new Error('child stdout is not piped'));
    let buf = '';
    const timer = setTimeout(() => reject(new Error('no output from child in time')), timeoutMs);
    out.setEncoding('utf8');
    out.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        out.removeAllListeners('data');
        out.resume();
        resolve(buf.slice(0, nl));
      }
    });
    child.proc.once('exit', (code) => reject(new Error(`child exited (${code}) before printing a line`)));
  });
}

/** The upstream of every bench: a separate node process answering on `ports` (0: a free one each). */
export async function startBackend(ports: number[] = [0]): Promise<Child & { ports: number[] }> {
  const child = await startChild(process.execPath, [join(repoRoot, 'bench', 'backend.mjs'), ...ports.map(String)], { stdout: 'pipe' });
  const line = await firstLine(child);
  return { ...child, ports: (JSON.parse(line) as { ports: number[] }).ports };
}

let startHelp: string | undefined;
/** Does `cgw start --help` list `--workers`? (It is being added; until then cgw runs as it is.) */
export function cgwHasWorkersFlag(): boolean {
  return cgwHasStartFlag('--workers');
}

/** Whether the measured cgw's `start` knows a flag (an older checkout may not). */
export function cgwHasStartFlag(name: string): boolean {
  if (startHelp === undefined) {
    checkBuilt();
    const r = spawnSync(process.execPath, [CGW, 'start', '--help'], { cwd: repoRoot, encoding: 'utf8', timeout: 60_000 });
    startHelp = `${r.stdout}${r.stderr}`;
  }
  return new RegExp(`${name}\\b`).test(startHelp);
}

export interface Cgw extends Child {
  readonly url: string;
  readonly adminUrl: string;
  /** From spawn to the first 200 of /-/readyz. */
  readonly readyMs: number;
}

/**
 * `cgw start` with its defaults (access log and info logs on) plus `args`, its stdout to
 * /dev/null (the logs are written, to nowhere) and stderr to `stderrFile` when given.
 */
export async function startCgw(opts: { consul: string; args?: string[]; readyTimeoutMs?: number; stderrFile?: string; nodeArgs?: string[] }): Promise<Cgw> {
  checkBuilt();
  const [listen, admin] = (await freePorts(2)) as [number, number];
  const args = [...(opts.nodeArgs ?? []), CGW, 'start', '--consul', opts.consul, '--listen', `127.0.0.1:${listen}`, '--admin', `127.0.0.1:${admin}`, ...(opts.args ?? [])];
  const t0 = performance.now();
  const child = await startChild(process.execPath, args, opts.stderrFile ? { stderrFile: opts.stderrFile } : {});
  const adminUrl = `http://127.0.0.1:${admin}`;
  const deadline = t0 + (opts.readyTimeoutMs ?? 60_000);
  for (;;) {
    if (hasExited(child.proc)) {
      const code = await exitOf(child.proc);
      const why = opts.stderrFile ? `; stderr: ${readFileSync(opts.stderrFile, 'utf8').slice(-2000)}` : '';
      throw new Error(`cgw exited (${code}) before it was ready${why}`);
    }
    try {
      const res = await fetch(`${adminUrl}/-/readyz`, { signal: AbortSignal.timeout(5000) });
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (performance.now() > deadline) {
      await child.stop();
      throw new Error(`cgw not ready after ${opts.readyTimeoutMs ?? 60_000} ms`);
    }
    await delay(10);
  }
  return { ...child, url: `http://127.0.0.1:${listen}`, adminUrl, readyMs: performance.now() - t0 };
}

export function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  const p = r.stdout.trim();
  return r.status === 0 && p ? p : undefined;
}

export interface WrkResult {
  readonly requests: number;
  readonly seconds: number;
  readonly rps: number;
  readonly p50ms: number;
  readonly p99ms: number;
  readonly maxms: number;
  /** Non-2xx/3xx answers plus socket errors (connect, read, write, timeout). */
  readonly errors: number;
}

/** `wrk -t<threads> -c<connections> -d<seconds>s` with bench/wrk-report.lua; resolves with its JSON summary. */
export async function runWrk(url: string, o: { threads: number; connections: number; seconds: number }): Promise<WrkResult> {
  const args = [`-t${o.threads}`, `-c${o.connections}`, `-d${o.seconds}s`, '--timeout', '5s', '-s', join(repoRoot, 'bench', 'wrk-report.lua'), url];
  const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.resume();
  const timer = setTimeout(() => void terminate(child, 'SIGKILL'), (o.seconds + 30) * 1000);
  const code = await exitOf(child);
  clearTimeout(timer);
  const line = out.split('\n').find((l) => l.startsWith('{"requests"'));
  if (code !== 0 || !line) throw new Error(`wrk exited ${code}: ${out.slice(-500)}`);
  const j = JSON.parse(line) as Record<string, number>;
  const n = (k: string): number => j[k] ?? 0;
  const seconds = n('duration_us') / 1e6;
  return {
    requests: n('requests'),
    seconds,
    rps: n('requests') / seconds,
    p50ms: n('p50_us') / 1000,
    p99ms: n('p99_us') / 1000,
    maxms: n('max_us') / 1000,
    errors: n('status') + n('connect') + n('read') + n('write') + n('timeout'),
  };
}

export const WRK_MISSING = 'wrk is not installed: on Debian/Ubuntu `apt-get install wrk` (as root), or build it from https://github.com/wg/wrk';

export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

export function max(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x));
  return s.length ? Math.max(...s) : Number.NaN;
}

/** A plain-text table with right-aligned figures (first column left-aligned). */
export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(head), sep, ...rows.map(line)].join('\n');
}

export function fixed(x: number, digits: number): string {
  return Number.isFinite(x) ? x.toFixed(digits) : '—';
}

function firstLineOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 });
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.split('\n')[0]?.trim() ?? '';
}

/** "1-min 5-min 15-min" load averages: other work on the machine moves every figure. */
export function loadAverage(): string {
  try {
    return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    return '?';
  }
}

/** nproc, CPU model, memory, Node, Consul, nginx, wrk, the code's revision and the load, one line each. */
export function machine(): string[] {
  let model = cpus()[0]?.model ?? 'unknown';
  try {
    model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? model;
  } catch {
    /* not Linux */
  }
  const nginx = which('nginx') ? firstLineOf('nginx', ['-v']).replace(/^nginx version:\s*/, '') : 'not installed';
  const wrk = which('wrk') ? firstLineOf('wrk', ['-v']).split(' [')[0] ?? '' : 'not installed';
  const rev = spawnSync('git', ['describe', '--always', '--dirty'], { cwd: cgwRoot, encoding: 'utf8' }).stdout.trim();
  const mem = /MemTotal:\s*(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1];
  return [
    `machine: ${firstLineOf('nproc', [])} cores (${model}), ${mem ? (Number(mem) / 1048576).toFixed(0) : '?'} GiB`,
    `node ${process.version}, ${firstLineOf(findConsul(), ['version'])}, nginx ${nginx}, ${wrk}`,
    `cgw revision ${rev || 'unknown'}${cgwRoot === repoRoot ? '' : ` in ${cgwRoot}`}${cgwHasWorkersFlag() ? '' : ' (no --workers flag yet)'}`,
    `load average at start: ${loadAverage()}`,
  ];
}
