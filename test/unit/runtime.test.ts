import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ConsulViews } from '../../src/core/types.ts';
import { webInstance } from '../helpers/instances.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics, type Metrics } from '../../src/core/metrics.ts';
import { buildSnapshot, type Snapshot } from '../../src/state/snapshot.ts';
import { UpstreamPools } from '../../src/balancer/upstream-pools.ts';
import { ServiceBalancer } from '../../src/balancer/service-balancer.ts';
import { JwtKeyCache } from '../../src/filters/auth.ts';
import { RateLimiterBackend } from '../../src/filters/rate-limit.ts';
import { buildRuntime, type CompiledRoute, type Runtime, type RuntimeDeps } from '../../src/runtime/runtime.ts';
import { ResilienceRegistry } from '../../src/resilience/registry.ts';

const logger = createLogger('silent');
// Pools are created lazily and never connect: no request is sent in these tests.
const pools = new UpstreamPools({ connectTimeoutMs: 1000, connectionsPerEndpoint: 1 });
after(() => pools.closeAll(0));


function snapshot(ports: number[], critical: number[] = []): Snapshot {
  const instances = [...ports.map((port) => webInstance({ port })), ...critical.map((port) => webInstance({ port, status: 'critical' }))];
  const views: ConsulViews = { catalog: { web: ['urlprefix-/web'] }, health: new Map([['web', instances]]), kv: [] };
  return buildSnapshot(views, { allowWarning: false, kvPrefix: 'gateway/' });
}

function deps(metrics: Metrics = createMetrics({ defaultMetrics: false })): RuntimeDeps {
  return {
    pools,
    metrics,
    pickerKind: 'round_robin',
    keys: new JwtKeyCache(),
    limiter: new RateLimiterBackend({ logger }),
    resilience: new ResilienceRegistry(metrics, logger),
    responseTimeoutMs: 30_000,
    connectTimeoutMs: 1000,
    logger,
  };
}

function routeOf(runtime: Runtime): CompiledRoute {
  const found = runtime.router.match(undefined, '/web');
  assert.ok(found, 'route /web compiled');
  return found;
}

/** Records the label set of every `inc` of a counter (children bound by `labels` call it too). */
function spyInc(counter: { inc: (...args: never[]) => unknown }): unknown[] {
  const seen: unknown[] = [];
  const inc = counter.inc;
  counter.inc = function (this: unknown, ...args: never[]) {
    seen.push(args[0]);
    return inc.apply(this, args);
  };
  return seen;
}

async function valueOf(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = metrics.registry.getSingleMetric(name);
  assert.ok(metric);
  const { values } = await metric.get();
  return values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value;
}

describe('buildRuntime: per-route metrics', () => {
  test('rate-limit, auth and size counters use label sets bound once per route and value, not built per request', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const seen = {
      rate: spyInc(metrics.rateLimitDecisions),
      auth: spyInc(metrics.authRejections),
      size: spyInc(metrics.requestLimitRejections),
    };
    const route = routeOf(buildRuntime(snapshot([34001]), undefined, deps(metrics)));
    for (let i = 0; i < 3; i++) {
      route.countRateLimit('allowed');
      route.countRateLimit('limited');
      route.countAuthRejection('token_expired');
      route.countSizeRejection('body');
    }
    route.countSizeRejection('headers');
    const distinct = (labels: unknown[]): number => new Set(labels).size;
    assert.equal(seen.rate.length, 6);
    assert.equal(distinct(seen.rate), 2, 'one label set per result');
    assert.equal(distinct(seen.auth), 1, 'one label set per reason');
    assert.equal(distinct(seen.size), 2, 'one label set per kind');

    assert.equal(await valueOf(metrics, 'cgw_rate_limit_decisions_total', { route: route.id, result: 'allowed' }), 3);
    assert.equal(await valueOf(metrics, 'cgw_rate_limit_decisions_total', { route: route.id, result: 'limited' }), 3);
    assert.equal(await valueOf(metrics, 'cgw_auth_rejections_total', { route: route.id, reason: 'token_expired' }), 3);
    assert.equal(await valueOf(metrics, 'cgw_request_limit_rejections_total', { route: route.id, kind: 'body' }), 3);
    assert.equal(await valueOf(metrics, 'cgw_request_limit_rejections_total', { route: route.id, kind: 'headers' }), 1);
  });
});

describe('buildRuntime: work per build', () => {
  test('the outlier detector is told the endpoint set once per build, whether the balancer is new or reused', () => {
    const d = deps();
    const first = buildRuntime(snapshot([34101, 34102], [34103]), undefined, d);
    const outlier = d.resilience.peek('web')?.outlier;
    assert.ok(outlier);
    assert.deepEqual(Object.keys(outlier.status()), ['127.0.0.1:34101', '127.0.0.1:34102'], 'healthy endpoints only');
    const calls: string[][] = [];
    const setEndpoints = outlier.setEndpoints.bind(outlier);
    outlier.setEndpoints = (keys) => {
      calls.push([...keys]);
      setEndpoints(keys);
    };

    const changed = buildRuntime(snapshot([34101]), first, d);
    assert.notEqual(changed.balancers.get('web'), first.balancers.get('web'), 'a new balancer');
    assert.deepEqual(calls, [['127.0.0.1:34101']], 'once for a new balancer');
    assert.deepEqual(Object.keys(outlier.status()), ['127.0.0.1:34101']);

    calls.length = 0;
    const same = buildRuntime(snapshot([34101]), changed, d);
    assert.equal(same.balancers.get('web'), changed.balancers.get('web'), 'the balancer is reused');
    assert.deepEqual(calls, [['127.0.0.1:34101']], 'once for a reused balancer');
  });

  test("a service's fingerprint is hashed once per build, whether its balancer is new or reused", (t) => {
    const d = deps();
    let hashed = 0;
    const fingerprintOf = ServiceBalancer.fingerprintOf;
    t.mock.method(ServiceBalancer, 'fingerprintOf', (...args: Parameters<typeof fingerprintOf>) => {
      hashed++;
      return fingerprintOf(...args);
    });
    const first = buildRuntime(snapshot([34201, 34202]), undefined, d);
    assert.equal(hashed, 1, 'first build');
    hashed = 0;
    const changed = buildRuntime(snapshot([34201]), first, d);
    assert.notEqual(changed.balancers.get('web'), first.balancers.get('web'), 'a new balancer');
    assert.equal(hashed, 1, 'a changed service');
    hashed = 0;
    const same = buildRuntime(snapshot([34201]), changed, d);
    assert.equal(same.balancers.get('web'), changed.balancers.get('web'), 'the balancer is reused');
    assert.equal(hashed, 1, 'an unchanged service');
    assert.equal(same.balancers.get('web')?.fingerprint, fingerprintOf(snapshot([34201]).services.web!, 'round_robin', 1000));
  });
});
