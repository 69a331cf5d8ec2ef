/**
 * Discovery at scale: N routed services × 2 instances registered through the catalog on 50 fake
 * nodes, in a real Consul agent; one cgw (`--workers 1` once the flag exists, otherwise its
 * defaults; output to /dev/null). For each N it prints:
 *   - time from spawn to the first 200 of /-/readyz, the health mode, the routes;
 *   - RSS of cgw's whole process tree once settled, and at the end;
 *   - for 4 kinds of change, repeated --trials times on random services (a new instance
 *     registered, its check going critical, back to passing, deregistered): when Consul's own
 *     blocking query (/v1/health/service/<svc>?index=) returns the change, when cgw first serves a
 *     request from the new instance (or last serves one from the removed instance), both in ms
 *     after the write, and cgw − Consul;
 *   - CPU of cgw's process tree (utime+stime, from /proc) during --cpu-seconds with one health
 *     change every --change-every seconds and no traffic.
 * Prints figures; asserts nothing.
 *
 *   npm run bench:scale                                   # N = 100, 1000, 5000; 20 trials each
 *   npm run bench:scale -- --services 100 --trials 5 --cpu-seconds 10
 *
 * Flags (or environment): --services (BENCH_SCALE_SERVICES, "100,1000,5000"), --trials (20),
 * --cpu-seconds (30), --change-every (5), --gap-ms between changes (300), --poll-ms between two
 * requests through cgw (1), --timeout-ms per change (5000), --seed (1).
 * --cgw-root DIR (BENCH_CGW_ROOT): measure the cgw of another checkout, built (e.g. a git worktree
 * of an older revision); default this one, built first by the npm script.
 *
 * How "served by" is seen: every instance points at one port of bench/backend.mjs that answers
 * with `x-instance: <port>`; the two instances of every service use ports A and B, the new one
 * port C. One request at a time goes through cgw to /svc-<i>/x, one every --poll-ms at most.
 * "First served" is when the first answer from C arrived; "no more" is when the third answer in a
 * row not from C arrived (with round robin over A, B, C the third would have been C's), counted
 * only if the run then reaches 12. Both are upper bounds, late by up to about 3 poll intervals.
 * Consul's time is when its blocking query's answer showing the change arrived.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { Pool } from 'undici';
import { startConsul, type ConsulAgent } from '../test/helpers/consul.ts';
import { mulberry32 } from '../test/helpers/random.ts';
import { cgwHasWorkersFlag, fixed, flag, loadAverage, machine, max, median, startBackend, startCgw, table, type Cgw } from './harness.ts';
import { describeTree, treeCpuSeconds, treeRssBytes } from './proc-tree.ts';

/** Node flags for cgw (e.g. BENCH_CGW_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" to profile a run). */
const cgwNodeArgs = (process.env.BENCH_CGW_NODE_ARGS ?? '').split(' ').filter(Boolean);
const sizes = flag('services', 'BENCH_SCALE_SERVICES', '100,1000,5000').split(',').map(Number).filter((n) => n > 0);
const trials = Number(flag('trials', 'BENCH_TRIALS', '20'));
const cpuSeconds = Number(flag('cpu-seconds', 'BENCH_CPU_SECONDS', '30'));
const changeEvery = Number(flag('change-every', 'BENCH_CHANGE_EVERY', '5'));
const gapMs = Number(flag('gap-ms', 'BENCH_GAP_MS', '300'));
const pollMs = Number(flag('poll-ms', 'BENCH_POLL_MS', '1'));
const timeoutMs = Number(flag('timeout-ms', 'BENCH_TIMEOUT_MS', '5000'));
const seed = Number(flag('seed', 'BENCH_SEED', '1'));
const NODES = 50;
const CLEAN_RUN = 12;
/** Instances of the service while the removed one still counts: A, B and C. */
const CONFIRM_AT = 3;
const TXN_OPS = 64;

type Kind = 'register' | 'critical' | 'passing' | 'deregister';
const KINDS: Kind[] = ['register', 'critical', 'passing', 'deregister'];
interface Sample {
  consulMs: number;
  cgwMs: number;
}
interface Result {
  n: number;
  instances: number;
  registerS: number;
  readyS: number;
  mode: string;
  routes: number;
  processes: string;
  rssSettledMb: number;
  rssEndMb: number;
  cpuS: number;
  changes: number;
  samples: Record<Kind, Sample[]>;
  pollErrors: number;
}

const node = (k: number): string => `bench-node-${k % NODES}`;

async function consulCall(pool: Pool, method: 'GET' | 'PUT', path: string, body?: unknown): Promise<{ status: number; text: string; index: number }> {
  const res = await pool.request({ method, path, headersTimeout: 30_000, bodyTimeout: 30_000, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.body.text();
  return { status: res.statusCode, text, index: Number(res.headers['x-consul-index'] ?? 0) };
}

async function registerAll(pool: Pool, n: number, ports: readonly number[]): Promise<void> {
  // Nodes first: a service op fails on a node no earlier transaction registered.
  const nodes = Array.from({ length: NODES }, (_, k) => ({ Node: { Verb: 'set', Node: { Node: node(k), Address: '127.0.0.1' } } }));
  const r0 = await consulCall(pool, 'PUT', '/v1/txn', nodes);
  if (r0.status !== 200) throw new Error(`txn: ${r0.status} ${r0.text.slice(0, 300)}`);
  const ops: unknown[] = [];
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < 2; k++) {
      const id = `svc-${i}-${k}`;
      const nd = node(2 * i + k);
      ops.push({ Service: { Verb: 'set', Node: nd, Service: { ID: id, Service: `svc-${i}`, Tags: [`urlprefix-/svc-${i}`], Address: '127.0.0.1', Port: ports[k] } } });
      ops.push({ Check: { Verb: 'set', Check: { Node: nd, CheckID: `chk-${id}`, Name: 'bench', Status: 'passing', ServiceID: id } } });
    }
  }
  const batches: unknown[][] = [];
  for (let i = 0; i < ops.length; i += TXN_OPS) batches.push(ops.slice(i, i + TXN_OPS));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < batches.length) {
      const b = batches[next++];
      const r = await consulCall(pool, 'PUT', '/v1/txn', b);
      if (r.status !== 200) throw new Error(`txn: ${r.status} ${r.text.slice(0, 300)}`);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}

interface HealthEntry {
  Service: { ID: string };
  Checks: { CheckID: string; Status: string }[];
}

/** Blocking queries on /v1/health/service/<svc> from `index` until `seen` holds; the arrival time. */
async function consulSees(pool: Pool, svc: string, index: number, seen: (e: HealthEntry[]) => boolean, deadline: number): Promise<number> {
  let idx = index;
  for (let i = 0; i < 1000 && performance.now() < deadline; i++) {
    const r = await consulCall(pool, 'GET', `/v1/health/service/${svc}?index=${idx}&wait=10s`);
    const at = performance.now();
    if (r.status === 200 && seen(JSON.parse(r.text) as HealthEntry[])) return at;
    idx = r.index > 0 ? r.index : idx;
  }
  return Number.NaN;
}

/**
 * Requests through cgw, one at a time, at most one per --poll-ms. 'appears': arrival of the first
 * answer from `port`; 'disappears': arrival of the CONFIRM_AT-th answer in a row not from it, once
 * that run has reached CLEAN_RUN answers.
 */
async function cgwSees(gw: Pool, svc: string, port: string, want: 'appears' | 'disappears', deadline: number, errors: { n: number }): Promise<number> {
  let runStart = Number.NaN;
  let run = 0;
  for (let i = 0; i < 100_000 && performance.now() < deadline; i++) {
    const tick = performance.now();
    let from = '';
    try {
      const res = await gw.request({ method: 'GET', path: `/${svc}/x`, headersTimeout: 5000 });
      await res.body.dump();
      if (res.statusCode !== 200) errors.n++;
      from = String(res.headers['x-instance'] ?? '');
    } catch {
      errors.n++;
    }
    const at = performance.now();
    if (want === 'appears' && from === port) return at;
    if (want === 'disappears') {
      if (from === port) run = 0;
      else {
        if (++run === CONFIRM_AT) runStart = at;
        if (run >= CLEAN_RUN) return runStart;
      }
    }
    const wait = tick + pollMs - performance.now();
    if (wait > 0) await delay(wait);
  }
  return Number.NaN;
}

async function runSize(n: number): Promise<Result> {
  const rand = mulberry32(seed + n); // the same services are picked run after run
  const consul: ConsulAgent = await startConsul();
  const tmp = mkdtempSync(join(tmpdir(), 'cgw-scale-'));
  const backend = await startBackend([0, 0, 0]);
  const [portA, portB, portC] = backend.ports as [number, number, number];
  const cpool = new Pool(consul.addr, { connections: 16 });
  let cgw: Cgw | undefined;
  let gw: Pool | undefined;
  try {
    const t0 = performance.now();
    await registerAll(cpool, n, [portA, portB]);
    const registerS = (performance.now() - t0) / 1000;
    const workers = cgwHasWorkersFlag();
    cgw = await startCgw({ consul: consul.addr, args: workers ? ['--workers', '1'] : [], readyTimeoutMs: 120_000, stderrFile: join(tmp, 'cgw.stderr'), nodeArgs: cgwNodeArgs });
    const readyS = cgw.readyMs / 1000;
    gw = new Pool(cgw.url, { connections: 1, pipelining: 1 });
    const status = (await (await fetch(`${cgw.adminUrl}/v1/status`)).json()) as { consul?: { healthMode?: string }; snapshot?: { routes?: number } };
    await delay(2000);
    const rssSettledMb = treeRssBytes(cgw.pid) / 1048576;
    const processes = describeTree(cgw.pid);

    const samples: Record<Kind, Sample[]> = { register: [], critical: [], passing: [], deregister: [] };
    const errors = { n: 0 };
    const C = String(portC);
    for (let t = 0; t < trials; t++) {
      const i = Math.floor(rand() * n);
      const svc = `svc-${i}`;
      const id = `${svc}-new-${t}`;
      const nd = node(Math.floor(rand() * NODES));
      const check = (s: string) => ({ Node: nd, CheckID: `chk-${id}`, Name: 'bench', Status: s, ServiceID: id });
      const writes: Record<Kind, () => Promise<unknown>> = {
        register: () => consulCall(cpool, 'PUT', '/v1/catalog/register', { Node: nd, Address: '127.0.0.1', SkipNodeUpdate: true, Service: { ID: id, Service: svc, Tags: [`urlprefix-/${svc}`], Address: '127.0.0.1', Port: portC }, Check: check('passing') }),
        critical: () => consulCall(cpool, 'PUT', '/v1/catalog/register', { Node: nd, Address: '127.0.0.1', SkipNodeUpdate: true, Check: check('critical') }),
        passing: () => consulCall(cpool, 'PUT', '/v1/catalog/register', { Node: nd, Address: '127.0.0.1', SkipNodeUpdate: true, Check: check('passing') }),
        deregister: () => consulCall(cpool, 'PUT', '/v1/catalog/deregister', { Node: nd, ServiceID: id }),
      };
      const mine = (e: HealthEntry[]) => e.find((x) => x.Service.ID === id);
      const seen: Record<Kind, (e: HealthEntry[]) => boolean> = {
        register: (e) => mine(e) !== undefined,
        critical: (e) => mine(e)?.Checks.some((c) => c.CheckID === `chk-${id}` && c.Status === 'critical') === true,
        passing: (e) => mine(e)?.Checks.every((c) => c.Status === 'passing') === true,
        deregister: (e) => mine(e) === undefined,
      };
      for (const kind of KINDS) {
        const index = (await consulCall(cpool, 'GET', `/v1/health/service/${svc}`)).index;
        const start = performance.now();
        const deadline = start + timeoutMs;
        const consulAt = consulSees(cpool, svc, index, seen[kind], deadline);
        const wrote = writes[kind]();
        const cgwAt = cgwSees(gw, svc, C, kind === 'register' || kind === 'passing' ? 'appears' : 'disappears', deadline, errors);
        const [c, g] = await Promise.all([consulAt, cgwAt, wrote]);
        samples[kind].push({ consulMs: c - start, cgwMs: g - start });
        await delay(gapMs);
      }
    }

    // CPU with one change every --change-every seconds and no traffic.
    const changes = Math.max(1, Math.round(cpuSeconds / changeEvery));
    const cpu0 = treeCpuSeconds(cgw.pid);
    const began = performance.now();
    for (let c = 0; c < changes; c++) {
      const i = Math.floor(rand() * n);
      const id = `svc-${i}-0`;
      await consulCall(cpool, 'PUT', '/v1/catalog/register', {
        Node: node(2 * i), Address: '127.0.0.1', SkipNodeUpdate: true,
        Check: { Node: node(2 * i), CheckID: `chk-${id}`, Name: 'bench', Status: c % 2 === 0 ? 'critical' : 'passing', ServiceID: id },
      });
      const wait = began + (c + 1) * changeEvery * 1000 - performance.now();
      if (wait > 0) await delay(wait);
    }
    const cpuS = treeCpuSeconds(cgw.pid) - cpu0;
    const rssEndMb = treeRssBytes(cgw.pid) / 1048576;
    return {
      n, instances: 2 * n, registerS, readyS, mode: status.consul?.healthMode ?? '?', routes: status.snapshot?.routes ?? Number.NaN,
      processes, rssSettledMb, rssEndMb, cpuS, changes, samples, pollErrors: errors.n,
    };
  } finally {
    await gw?.close();
    await cgw?.stop();
    await cpool.close();
    await backend.stop();
    await consul.destroy();
    if (!process.env.BENCH_KEEP) rmSync(tmp, { recursive: true, force: true });
  }
}

function printSize(r: Result): void {
  console.log('');
  console.log(`N = ${r.n} services × 2 instances on ${NODES} nodes (${r.instances} instances, registered in ${fixed(r.registerS, 1)} s)`);
  console.log(
    `ready ${fixed(r.readyS, 2)} s after spawn · health mode ${r.mode} · ${r.routes} routes · ` +
      `RSS ${fixed(r.rssSettledMb, 0)} MB settled, ${fixed(r.rssEndMb, 0)} MB at the end (${r.processes}) · ` +
      `CPU ${fixed(r.cpuS, 2)} s in ${cpuSeconds} s with ${r.changes} change${r.changes === 1 ? '' : 's'} · ${r.pollErrors} failed requests through cgw`,
  );
  const rows = KINDS.map((k) => {
    const s = r.samples[k];
    const d = s.map((x) => x.cgwMs - x.consulMs);
    const missed = s.filter((x) => !Number.isFinite(x.cgwMs) || !Number.isFinite(x.consulMs)).length;
    return [
      k === 'register' ? 'register → first served' : k === 'critical' ? 'check critical → no more' : k === 'passing' ? 'check passing → served again' : 'deregister → no more',
      String(s.length),
      `${fixed(median(s.map((x) => x.consulMs)), 1)} / ${fixed(max(s.map((x) => x.consulMs)), 1)}`,
      `${fixed(median(s.map((x) => x.cgwMs)), 1)} / ${fixed(max(s.map((x) => x.cgwMs)), 1)}`,
      fixed(median(d), 1),
      fixed(max(d), 1),
      String(missed),
    ];
  });
  console.log(table(['change', 'n', 'Consul sees it, ms median / max', 'cgw serves it, ms median / max', 'cgw − Consul median', 'cgw − Consul max', 'timed out'], rows));
}

console.log(`Scale: N services × 2 instances, ${trials} trials of each change per N, ${gapMs} ms between changes, poll every ${pollMs} ms`);
for (const line of machine()) console.log(line);
console.log(cgwHasWorkersFlag() ? 'cgw runs with --workers 1' : 'cgw runs with its default flags (no --workers flag yet)');
const results: Result[] = [];
for (const n of sizes) {
  const r = await runSize(n);
  results.push(r);
  printSize(r);
}
console.log('');
console.log('Summary (cgw − Consul in ms, median / max over all four kinds of change)');
console.log(
  table(
    ['N', 'ready s', 'RSS MB (tree)', `CPU s in ${cpuSeconds} s`, 'register', 'critical', 'passing', 'deregister'],
    results.map((r) => [
      String(r.n),
      fixed(r.readyS, 2),
      fixed(Math.max(r.rssSettledMb, r.rssEndMb), 0),
      fixed(r.cpuS, 2),
      ...KINDS.map((k) => {
        const d = r.samples[k].map((x) => x.cgwMs - x.consulMs);
        return `${fixed(median(d), 1)} / ${fixed(max(d), 1)}`;
      }),
    ]),
  ),
);
console.log(`load average at the end: ${loadAverage()}`);
