/**
 * Side by side, interleaved in one run: wrk -t2 -c64 against the backend itself, nginx, a bare
 * undici proxy and cgw (--workers 1 and its default, once the flag exists), all on this machine's
 * cores, all against one backend registered in a real Consul agent. For each target: req/s, p99
 * and the CPU charged to the target's whole process tree (utime+stime of it and every descendant,
 * from /proc) per request. Prints figures; asserts nothing.
 *
 *   npm run bench:compare                          # 10 s per target, 3 rounds
 *   npm run bench:compare -- --seconds 5 --rounds 2 --targets direct,bare,cgw1
 *
 * Flags (or environment): --seconds (BENCH_SECONDS, 10), --rounds (BENCH_ROUNDS, 3), --warmup
 * seconds per target before the first round (BENCH_WARMUP, 2), --connections (64), --threads (2),
 * --targets (comma list of direct, nginx, bare, cgw1, cgw, nginx-tls, cgw1-tls, nginx-h2, cgw1-h2; default all
 * available), --no-nginx. The TLS rows: the same nginx on a second, HTTPS server block, and a
 * `cgw --workers 1` of its own with `--listen-tls` (a self-signed test certificate; wrk negotiates
 * TLS 1.3 and keeps its 64 connections, so this is the cost of TLS records, not of handshakes).
 * The h2 rows load the same two TLS listeners over HTTP/2 with h2load (nghttp2-client), --streams
 * (BENCH_STREAMS, 3) concurrent streams on each of the --connections sessions.
 * cgw runs with its default flags (info logs and access log on), its output sent to /dev/null.
 * --cgw-root DIR (BENCH_CGW_ROOT): measure the cgw of another checkout, built (e.g. a git worktree
 * of an older revision); default this one, built first by the npm script.
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { DEFAULT_CERT, DEFAULT_KEY } from '../test/helpers/tls-certs.ts';
import { startConsul } from '../test/helpers/consul.ts';
import { freePorts } from '../test/helpers/ports.ts';
import {
  WRK_MISSING, cgwHasStartFlag, cgwHasWorkersFlag, fixed, flag, hasFlag, loadAverage, machine, median, repoRoot, runWrk, startBackend, startCgw, startChild,
  table, which, type Child, type WrkResult,
} from './harness.ts';
import { describeTree, treeCpuSeconds } from './proc-tree.ts';
import { H2LOAD_MISSING, runH2load } from './h2load.ts';

const seconds = Number(flag('seconds', 'BENCH_SECONDS', '10'));
const rounds = Number(flag('rounds', 'BENCH_ROUNDS', '3'));
const warmup = Number(flag('warmup', 'BENCH_WARMUP', '2'));
const connections = Number(flag('connections', 'BENCH_CONNECTIONS', '64'));
const threads = Number(flag('threads', 'BENCH_THREADS', '2'));
const wanted = flag('targets', 'BENCH_TARGETS', 'direct,nginx,bare,cgw1,cgw,nginx-tls,cgw1-tls,nginx-h2,cgw1-h2').split(',').map((s) => s.trim());
/**
 * Concurrent streams per HTTP/2 connection for the h2 rows (h2load -m). 3 × 64 connections stays
 * below cgw's default --max-requests-per-endpoint (256): beyond it cgw answers 503 upstream_busy
 * at once where nginx queues, which would measure refusals, not proxying.
 */
const streams = Number(flag('streams', 'BENCH_STREAMS', '3'));
const h2load = which('h2load') !== undefined;

if (!which('wrk')) {
  console.error(WRK_MISSING);
  process.exit(1);
}

interface Target {
  readonly key: string;
  readonly label: string;
  readonly url: string;
  /** Root of the process tree charged for this target. */
  readonly pid: number;
  /** Loaded with h2load over HTTP/2 instead of wrk. */
  readonly h2: boolean;
  readonly runs: { wrk: WrkResult; cpuUs: number; backendUs: number }[];
}

/** For the readiness check of the TLS rows: their certificate is self-signed. */
const insecure = new Agent({ connect: { rejectUnauthorized: false } });

const notes: string[] = [];
const children: Child[] = [];
const tmp = mkdtempSync(join(tmpdir(), 'cgw-compare-'));
const consul = await startConsul();
try {
  const backend = await startBackend();
  children.push(backend);
  const backendPort = backend.ports[0] as number;
  const origin = `http://127.0.0.1:${backendPort}`;
  await consul.register({ id: 'bench-1', name: 'bench', port: backendPort, tags: ['urlprefix-/bench'] });

  const targets: Target[] = [];
  const add = (key: string, label: string, url: string, pid: number, h2 = false): void => {
    if (h2 && !h2load) {
      notes.push(`${label}: ${H2LOAD_MISSING}`);
      return;
    }
    targets.push({ key, label, url, pid, h2, runs: [] });
  };
  if (wanted.includes('direct')) add('direct', 'direct to the backend (node:http)', `${origin}/bench/x`, backend.pid);

  // One certificate for both TLS rows: the test fixture (self-signed; wrk does not verify).
  const certFile = join(tmp, 'bench.crt');
  const keyFile = join(tmp, 'bench.key');
  writeFileSync(certFile, DEFAULT_CERT);
  writeFileSync(keyFile, DEFAULT_KEY);
  const wantsNginx = wanted.includes('nginx') || wanted.includes('nginx-tls') || wanted.includes('nginx-h2');
  if (wantsNginx && !hasFlag('no-nginx')) {
    if (which('nginx')) {
      const [port, tlsPort] = (await freePorts(2)) as [number, number];
      const dir = join(tmp, 'nginx');
      mkdirSync(join(dir, 'tmp'), { recursive: true });
      writeFileSync(join(dir, 'nginx.conf'), nginxConf(dir, port, backendPort, { port: tlsPort, cert: certFile, key: keyFile }));
      const nginx = await startChild(which('nginx') as string, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], {
        stderrFile: join(dir, 'stderr.log'),
      });
      children.push(nginx);
      if (wanted.includes('nginx')) add('nginx', 'nginx, 2 workers, upstream keepalive', `http://127.0.0.1:${port}/bench/x`, nginx.pid);
      if (wanted.includes('nginx-tls')) add('nginx-tls', 'nginx over TLS 1.3 (same process)', `https://127.0.0.1:${tlsPort}/bench/x`, nginx.pid);
      if (wanted.includes('nginx-h2')) add('nginx-h2', `nginx over h2 (TLS 1.3, same process), ${streams} streams/conn`, `https://127.0.0.1:${tlsPort}/bench/x`, nginx.pid, true);
    } else {
      notes.push('nginx: not installed, row skipped (Debian/Ubuntu: apt-get install nginx)');
    }
  }

  if (wanted.includes('bare')) {
    const [port] = (await freePorts(1)) as [number];
    const bare = await startChild(process.execPath, [join(repoRoot, 'bench', 'bare-proxy.mjs'), String(port), origin], { stdout: 'pipe' });
    bare.proc.stdout?.resume();
    children.push(bare);
    add('bare', 'bare undici proxy (bench/bare-proxy.mjs)', `http://127.0.0.1:${port}/bench/x`, bare.pid);
  }

  const workers = cgwHasWorkersFlag();
  const extra = (process.env.BENCH_CGW_ARGS ?? '').split(' ').filter(Boolean);
  if (wanted.includes('cgw1')) {
    const cgw = await startCgw({ consul: consul.addr, args: [...(workers ? ['--workers', '1'] : []), ...extra], stderrFile: join(tmp, 'cgw1.stderr') });
    children.push(cgw);
    add('cgw1', workers ? 'cgw --workers 1' : 'cgw (defaults; no --workers flag yet)', `${cgw.url}/bench/x`, cgw.pid);
  }
  if ((wanted.includes('cgw1-tls') || wanted.includes('cgw1-h2')) && cgwHasStartFlag('--listen-tls')) {
    // A process of its own: TLS and plain requests through one process cost the plain ones about
    // 40 % more CPU (measured), which would blur the plain row.
    const [tlsPort] = (await freePorts(1)) as [number];
    const args = [...(workers ? ['--workers', '1'] : []), '--listen-tls', `127.0.0.1:${tlsPort}`, '--tls-cert', certFile, '--tls-key', keyFile, ...extra];
    const cgw = await startCgw({ consul: consul.addr, args, stderrFile: join(tmp, 'cgw1-tls.stderr') });
    children.push(cgw);
    if (wanted.includes('cgw1-tls')) add('cgw1-tls', 'cgw --workers 1 over TLS 1.3', `https://127.0.0.1:${tlsPort}/bench/x`, cgw.pid);
    // The same process: its TLS listener negotiates h2 by ALPN (h2load offers h2 only).
    if (wanted.includes('cgw1-h2')) add('cgw1-h2', `cgw --workers 1 over h2 (TLS 1.3), ${streams} streams/conn`, `https://127.0.0.1:${tlsPort}/bench/x`, cgw.pid, true);
  } else if (wanted.includes('cgw1-tls')) {
    notes.push('cgw over TLS: `cgw start --help` lists no --listen-tls flag, row skipped');
  }
  if (wanted.includes('cgw') && workers) {
    const cgw = await startCgw({ consul: consul.addr, stderrFile: join(tmp, 'cgw.stderr') });
    children.push(cgw);
    add('cgw', 'cgw, default workers', `${cgw.url}/bench/x`, cgw.pid);
  } else if (wanted.includes('cgw') && !workers) {
    notes.push('cgw with its default workers: `cgw start --help` lists no --workers flag yet, so only one cgw row');
  }

  // Every target must answer 200 before anything is measured.
  for (const t of targets) {
    let status = 0;
    for (let i = 0; i < 100 && status !== 200; i++) {
      try {
        const res = await request(t.url, { dispatcher: insecure });
        await res.body.dump();
        status = res.statusCode;
      } catch {
        /* not listening yet */
      }
      if (status !== 200) await delay(100);
    }
    if (status !== 200) throw new Error(`${t.label}: ${t.url} answers ${status}, not 200`);
  }

  console.log(`Side by side: wrk -t${threads} -c${connections} (h2 rows: h2load -t${threads} -c${connections} -m${streams}), ${seconds} s per target per round, ${rounds} rounds interleaved`);
  for (const line of machine()) console.log(line);
  if (warmup > 0) {
    for (const t of targets) await load(t, warmup);
  }
  for (let r = 0; r < rounds; r++) {
    const order = targets.map((_, i) => targets[(i + r) % targets.length] as Target);
    for (const t of order) {
      const backendBefore = treeCpuSeconds(backend.pid);
      const before = treeCpuSeconds(t.pid);
      const wrk = await load(t, seconds);
      const cpu = treeCpuSeconds(t.pid) - before;
      const backendCpu = treeCpuSeconds(backend.pid) - backendBefore;
      const run = { wrk, cpuUs: (cpu * 1e6) / Math.max(1, wrk.requests), backendUs: (backendCpu * 1e6) / Math.max(1, wrk.requests) };
      t.runs.push(run);
      console.log(
        `  round ${r + 1} ${t.key.padEnd(6)} ${fixed(wrk.rps, 0).padStart(7)} req/s  p99 ${fixed(wrk.p99ms, 2)} ms  ` +
          `${fixed(run.cpuUs, 1)} µs CPU/req (${describeTree(t.pid)})  errors ${wrk.errors}`,
      );
    }
  }

  const med = (t: Target, f: (x: Target['runs'][number]) => number): number => median(t.runs.map(f));
  console.log('');
  console.log(
    table(
      ['target', 'req/s', 'p99 ms', 'CPU µs/request', 'backend CPU µs/request', 'errors'],
      targets.map((t) => [
        t.label,
        fixed(med(t, (x) => x.wrk.rps), 0),
        fixed(med(t, (x) => x.wrk.p99ms), 2),
        fixed(med(t, (x) => x.cpuUs), 1),
        t.key === 'direct' ? '(same)' : fixed(med(t, (x) => x.backendUs), 1),
        String(t.runs.reduce((s, x) => s + x.wrk.errors, 0)),
      ]),
    ),
  );
  console.log(`Medians of ${rounds} rounds. CPU is the target's process tree only (for "direct", the backend itself).`);

  const by = (k: string): Target | undefined => targets.find((t) => t.key === k);
  const direct = by('direct');
  const bare = by('bare');
  const ratioRows: string[][] = [];
  for (const k of ['cgw1', 'cgw']) {
    const c = by(k);
    if (!c) continue;
    const cpu = med(c, (x) => x.cpuUs);
    const p99 = med(c, (x) => x.wrk.p99ms);
    if (bare) {
      ratioRows.push([`${c.label}: CPU/request ÷ bare proxy's`, fixed(cpu / med(bare, (x) => x.cpuUs), 2)]);
      ratioRows.push([`${c.label}: p99 ÷ bare proxy's`, fixed(p99 / med(bare, (x) => x.wrk.p99ms), 2)]);
    }
    if (direct) ratioRows.push([`${c.label}: CPU/request ÷ (3 × direct backend's)`, fixed(cpu / (3 * med(direct, (x) => x.cpuUs)), 2)]);
  }
  // What TLS adds, each proxy against its own plain row.
  for (const [tlsKey, plainKey] of [['cgw1-tls', 'cgw1'], ['nginx-tls', 'nginx']] as const) {
    const t = by(tlsKey);
    const p = by(plainKey);
    if (t && p) ratioRows.push([`${t.label}: CPU/request ÷ the same over plain HTTP`, fixed(med(t, (x) => x.cpuUs) / med(p, (x) => x.cpuUs), 2)]);
  }
  const cgwH2 = by('cgw1-h2');
  const nginxH2 = by('nginx-h2');
  if (cgwH2 && nginxH2) ratioRows.push(['cgw over h2: CPU/request ÷ nginx over h2', fixed(med(cgwH2, (x) => x.cpuUs) / med(nginxH2, (x) => x.cpuUs), 2)]);
  const cgwTls = by('cgw1-tls');
  const nginxTls = by('nginx-tls');
  if (cgwTls && nginxTls) ratioRows.push(['cgw over TLS: CPU/request ÷ nginx over TLS', fixed(med(cgwTls, (x) => x.cpuUs) / med(nginxTls, (x) => x.cpuUs), 2)]);
  if (ratioRows.length) {
    console.log('');
    console.log(table(['ratio', 'value'], ratioRows));
  }
  for (const n of notes) console.log(`note: ${n}`);
  console.log(`load average at the end: ${loadAverage()}`);
} finally {
  for (const c of children.reverse()) await c.stop();
  await consul.destroy();
  rmSync(tmp, { recursive: true, force: true });
}

function load(t: Target, forSeconds: number): Promise<WrkResult> {
  return t.h2 ? runH2load(t.url, { threads, connections, streams, seconds: forSeconds }) : runWrk(t.url, { threads, connections, seconds: forSeconds });
}

function nginxConf(dir: string, port: number, backendPort: number, tls: { port: number; cert: string; key: string }): string {
  const t = join(dir, 'tmp');
  return `# written by bench/compare.ts
worker_processes 2;
error_log ${join(dir, 'error.log')} warn;
pid ${join(dir, 'nginx.pid')};
events { worker_connections 1024; }
http {
  access_log /dev/null;
  client_body_temp_path ${t}/body;
  proxy_temp_path ${t}/proxy;
  fastcgi_temp_path ${t}/fastcgi;
  uwsgi_temp_path ${t}/uwsgi;
  scgi_temp_path ${t}/scgi;
  upstream backend {
    server 127.0.0.1:${backendPort};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  server {
    # h2 by ALPN beside HTTP/1.1, as cgw's TLS listener (nginx 1.22 spells it on listen).
    listen 127.0.0.1:${tls.port} ssl http2;
    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}
