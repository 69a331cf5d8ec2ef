/**
 * Where cgw's CPU goes on the request path: cgw runs under `node --cpu-prof` (its default flags,
 * `--workers 1` once the flag exists, output to /dev/null) while wrk loads one route for N seconds;
 * then the .cpuprofile files it wrote at exit are summarised: self time per function (name + file
 * + line) over the load window only (start-up and warm-up left out), top 25 with % of busy time,
 * and self time by source (dist/<room>, node_modules/<package>, node internals, native).
 * Run it before and after a change to compare. Prints figures; asserts nothing.
 *
 *   npm run bench:profile                       # 15 s of wrk -t2 -c64 after 3 s of warm-up
 *   npm run bench:profile -- --seconds 10 --top 40 --keep /tmp/cgw-prof
 *
 * Flags (or environment): --seconds (BENCH_SECONDS, 15), --warmup (BENCH_WARMUP, 3), --connections
 * (64), --threads (2), --top (25), --keep DIR (keep the .cpuprofile files there, for Chrome DevTools
 * or speedscope; default: a temporary directory, removed), --args "..." (extra `cgw start` flags).
 * --cgw-root DIR (BENCH_CGW_ROOT): measure the cgw of another checkout, built (e.g. a git worktree
 * of an older revision); default this one, built first by the npm script.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startConsul } from '../test/helpers/consul.ts';
import { addRoot, formatSummary, loadProfile, summarise } from './cpuprofile.ts';
import { WRK_MISSING, cgwHasWorkersFlag, cgwRoot, fixed, flag, machine, runWrk, startBackend, startCgw, which } from './harness.ts';
import { treeCpuSeconds } from './proc-tree.ts';

const seconds = Number(flag('seconds', 'BENCH_SECONDS', '15'));
const warmup = Number(flag('warmup', 'BENCH_WARMUP', '3'));
const connections = Number(flag('connections', 'BENCH_CONNECTIONS', '64'));
const threads = Number(flag('threads', 'BENCH_THREADS', '2'));
const top = Number(flag('top', 'BENCH_TOP', '25'));
const keep = flag('keep', 'BENCH_KEEP', '');
const extra = flag('args', 'BENCH_CGW_ARGS', '').split(' ').filter(Boolean);

if (!which('wrk')) {
  console.error(WRK_MISSING);
  process.exit(1);
}

addRoot(cgwRoot);
const work = mkdtempSync(join(tmpdir(), 'cgw-profile-'));
const profDir = keep || join(work, 'prof');
mkdirSync(profDir, { recursive: true });
const before = new Set(readdirSync(profDir));
const consul = await startConsul();
const backend = await startBackend();
let window = { fromUs: 0, toUs: 0 };
let load = { rps: 0, p99ms: 0, requests: 0, errors: 0 };
let cpuUs = 0;
try {
  await consul.register({ id: 'bench-1', name: 'bench', port: backend.ports[0] as number, tags: ['urlprefix-/bench'] });
  const workers = cgwHasWorkersFlag();
  const cgw = await startCgw({
    consul: consul.addr,
    args: [...(workers ? ['--workers', '1'] : []), ...extra],
    nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profDir],
    stderrFile: join(work, 'cgw.stderr'),
  });
  try {
    const url = `${cgw.url}/bench/x`;
    if (warmup > 0) await runWrk(url, { threads, connections, seconds: warmup });
    const cpu0 = treeCpuSeconds(cgw.pid);
    const fromUs = Number(process.hrtime.bigint() / 1000n);
    const r = await runWrk(url, { threads, connections, seconds });
    window = { fromUs, toUs: Number(process.hrtime.bigint() / 1000n) };
    cpuUs = ((treeCpuSeconds(cgw.pid) - cpu0) * 1e6) / Math.max(1, r.requests);
    load = r;
  } finally {
    await cgw.stop(30_000); // the profile is written as the process exits
  }
  console.log(`cgw CPU profile: wrk -t${threads} -c${connections} for ${seconds} s (after ${warmup} s of warm-up), one route, one backend`);
  for (const line of machine()) console.log(line);
  console.log(`cgw start ${[...(workers ? ['--workers', '1'] : []), ...extra].join(' ') || '(default flags)'}; output to /dev/null`);
  console.log(`under the profiler: ${fixed(load.rps, 0)} req/s, p99 ${fixed(load.p99ms, 2)} ms, ${fixed(cpuUs, 1)} µs CPU/request, ${load.errors} errors (the profiler itself costs some)`);
  const files = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile') && !before.has(f));
  // One file per thread or process that ran JavaScript (workers, loader threads): show each
  // that was busy during the load.
  const summaries = files
    .map((f) => ({ f, s: summarise(loadProfile(join(profDir, f)), top, window) }))
    .sort((a, b) => b.s.busyMs - a.s.busyMs);
  for (const { f, s } of summaries) {
    if (s.busyMs < 0.05 * seconds * 1000) {
      console.log(`\n${f}: ${fixed(s.busyMs, 0)} ms busy during the load (not shown)`);
      continue;
    }
    console.log(`\n${f}`);
    console.log(formatSummary(s));
  }
  if (keep) console.log(`\nprofiles kept in ${profDir}`);
} finally {
  await backend.stop();
  await consul.destroy();
  rmSync(work, { recursive: true, force: true });
}
