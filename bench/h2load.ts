import { spawn } from 'node:child_process';
import { exitOf, terminate, track } from '../test/helpers/process.ts';
import type { WrkResult } from './harness.ts';

export const H2LOAD_MISSING = 'h2load not installed (Debian/Ubuntu: apt-get install nghttp2-client): HTTP/2 rows skipped';

/**
 * HTTP/2 load with h2load (nghttp2): `connections` sessions over `threads` threads, `streams`
 * concurrent streams each, for about `seconds`: a fixed number of requests (`-n`, at an assumed
 * 4,000 req/s), because in duration mode (`-D`) h2load hung past its end against nginx 1.22 here.
 * h2load reports no percentiles, so p99 is left unknown (printed as —) and p50 is its mean time
 * per request.
 */
export async function runH2load(url: string, o: { threads: number; connections: number; streams: number; seconds: number }): Promise<WrkResult> {
  const args = ['-t', String(o.threads), '-c', String(o.connections), '-m', String(o.streams), '-n', String(Math.max(1_000, Math.round(4_000 * o.seconds))), url];
  const child = spawn('h2load', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.resume();
  const timer = setTimeout(() => void terminate(child, 'SIGKILL'), (o.seconds * 10 + 30) * 1000);
  const code = await exitOf(child);
  clearTimeout(timer);
  // "finished in 8.01s, ..." or, under a second, "finished in 570.12ms, ...".
  const finished = /finished in ([\d.]+)(ms|s), ([\d.]+) req\/s/.exec(out);
  const counts = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const status2xx = /status codes: (\d+) 2xx/.exec(out);
  const timing = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)/.exec(out);
  if (code !== 0 || !finished || !counts) throw new Error(`h2load exited ${code}: ${out.slice(-500)}`);
  const done = Number(counts[2]);
  const ok = status2xx ? Number(status2xx[1]) : Number(counts[3]);
  return {
    requests: done,
    seconds: Number(finished[1]) / (finished[2] === 'ms' ? 1000 : 1),
    rps: Number(finished[3]),
    p50ms: timing ? ms(timing[3] as string) : Number.NaN,
    p99ms: Number.NaN,
    maxms: timing ? ms(timing[2] as string) : Number.NaN,
    errors: done - ok + Number(counts[4]) + Number(counts[5]),
  };
}

/** h2load prints durations as 123us, 4.56ms or 1.2s. */
function ms(text: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(text);
  if (!m) return Number.NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n / 1000 : m[2] === 's' ? n * 1000 : n;
}
