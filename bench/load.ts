/** The load generator shared by the benchmarks: N keep-alive clients for a fixed time. */
import { performance } from 'node:perf_hooks';
import { Pool } from 'undici';

export const seconds = Number(process.env.BENCH_SECONDS ?? 5);
export const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);

export interface Run {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  /** Answers other than 200, and transport errors. */
  readonly errors: number;
}

export async function load(origin: string, path: string, headers: Record<string, string> = {}): Promise<Run> {
  const pool = new Pool(origin, { connections: concurrency, pipelining: 1 });
  const latencies: number[] = [];
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const t = performance.now();
      try {
        const res = await pool.request({ method: 'GET', path, headers });
        await res.body.dump();
        if (res.statusCode !== 200) errors++;
      } catch {
        errors++;
      }
      latencies.push(performance.now() - t);
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - started) / 1000;
  await pool.close();
  latencies.sort((a, b) => a - b);
  const pct = (p: number): number => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] ?? 0;
  return { rps: latencies.length / elapsed, p50: pct(0.5), p99: pct(0.99), errors };
}

export function formatRun(r: Run): string {
  return `${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  errors ${r.errors}`;
}
