/**
 * The in-process cost of one health change at N routed services, without Consul: the pure
 * build (buildSnapshot, told which service's health moved, as the control plane tells it), the
 * change log's diff, and putting it in force in a data plane (balancer of the changed service).
 * Prints the median and max over --changes changes per N. No asserts.
 *
 *   node --import tsx bench/rebuild.ts                 # N = 100, 1000, 5000
 *   BENCH_SCALE_SERVICES=5000 node --import tsx bench/rebuild.ts
 */
import { performance } from 'node:perf_hooks';
import type { ConsulViews, ServiceInstance } from '../src/core/types.ts';
import { parseGatewayConfig } from '../src/config.ts';
import { createLogger } from '../src/core/logger.ts';
import { createMetrics } from '../src/core/metrics.ts';
import { DataPlane } from '../src/data-plane.ts';
import { buildSnapshot, type Snapshot } from '../src/state/snapshot.ts';
import { diffSnapshots } from '../src/state/diff.ts';
import { fixed, flag, max, median, table } from './harness.ts';

const sizes = flag('services', 'BENCH_SCALE_SERVICES', '100,1000,5000').split(',').map(Number).filter((n) => n > 0);
const changes = Number(flag('changes', 'BENCH_CHANGES', '200'));

function instance(service: string, k: number, status: 'passing' | 'critical'): ServiceInstance {
  const id = `${service}-${k}`;
  return {
    id,
    service,
    node: `node-${k}`,
    address: '127.0.0.1',
    port: 9000 + k,
    tags: [`urlprefix-/${service}`],
    weights: { passing: 1, warning: 1 },
    checks: [{ id: `chk-${id}`, status, serviceId: id }],
  };
}

const rows: string[][] = [];
for (const n of sizes) {
  const catalog: Record<string, string[]> = {};
  const health = new Map<string, readonly ServiceInstance[]>();
  for (let i = 0; i < n; i++) {
    const name = `svc-${i}`;
    catalog[name] = [`urlprefix-/${name}`];
    health.set(name, [instance(name, 0, 'passing'), instance(name, 1, 'passing')]);
  }
  const kv: ConsulViews['kv'] = [];
  const views: ConsulViews = { catalog, kv, health };
  const options = { allowWarning: false, kvPrefix: 'cgw/' };
  const plane = new DataPlane(parseGatewayConfig({ consul: 'http://127.0.0.1:1' }), createLogger('silent'), createMetrics());
  let snapshot: Snapshot = buildSnapshot(views, options);
  if (!plane.apply(snapshot).ok) throw new Error('first snapshot not applied');
  const build: number[] = [];
  const diff: number[] = [];
  const apply: number[] = [];
  for (let c = 0; c < changes; c++) {
    const name = `svc-${(c * 7919) % n}`;
    health.set(name, [instance(name, 0, 'passing'), instance(name, 1, c % 2 === 0 ? 'critical' : 'passing')]);
    const t0 = performance.now();
    const next = buildSnapshot(views, options, snapshot, undefined, new Set([name]));
    const t1 = performance.now();
    diffSnapshots(snapshot, next);
    const t2 = performance.now();
    if (!plane.apply(next).ok) throw new Error('snapshot not applied');
    const t3 = performance.now();
    build.push(t1 - t0);
    diff.push(t2 - t1);
    apply.push(t3 - t2);
    snapshot = next;
  }
  await plane.close();
  const cell = (xs: number[]): string => `${fixed(median(xs), 2)} / ${fixed(max(xs), 2)}`;
  rows.push([String(n), cell(build), cell(diff), cell(apply)]);
}
console.log(`One health change at N services, ${changes} changes each (ms, median / max)`);
console.log(table(['N', 'build snapshot', 'diff (change log)', 'apply (data plane)'], rows));
