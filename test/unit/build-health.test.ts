/**
 * A configuration build that fails despite every per-item check must be visible: counted, in
 * /v1/status (buildFailure and a problem) and in /-/readyz's body, while the last good
 * configuration keeps serving (readyz stays 200).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { createAdminServer } from '../../src/admin/server.ts';
import { stubAdminSources } from '../helpers/admin-sources.ts';
import { BuildHealth } from '../../src/state/build-health.ts';

describe('BuildHealth', () => {
  test('no failure: no view, no problem', () => {
    const health = new BuildHealth();
    assert.equal(health.view(), null);
    assert.deepEqual(health.problems(), []);
  });

  test('failures are counted from the first one, the newest error shown, and cleared by a success', () => {
    const health = new BuildHealth();
    health.failed('snapshot', new TypeError("Cannot read properties of undefined (reading 'plan')"));
    const first = health.view();
    assert.equal(first?.failures, 1);
    assert.equal(first?.phase, 'snapshot');
    assert.match(first?.error ?? '', /reading 'plan'/);
    health.failed('runtime', new Error('second'));
    const second = health.view();
    assert.equal(second?.failures, 2);
    assert.equal(second?.phase, 'runtime');
    assert.equal(second?.since, first?.since, 'since the first failure');
    const [problem] = health.problems();
    assert.equal(problem?.kind, 'build');
    assert.equal(problem?.keptLastGood, true);
    assert.match(problem?.message ?? '', /failed 2 times .*Consul changes are not applied, the last good configuration stays in force/);
    health.succeeded();
    assert.equal(health.view(), null);
    assert.deepEqual(health.problems(), []);
  });
});

describe('admin API with a failing build', () => {
  const health = new BuildHealth();
  let server: Server;
  let port: number;
  const sources = stubAdminSources({
    discovery: () => ({ mode: 'per-service', healthWatchBudget: 0, routedServices: 0, openConnections: 0, watches: [], bulk: null, refusing: null }),
    discoveryProblems: () => health.problems(),
    buildFailure: () => health.view(),
  });

  before(async () => {
    server = createAdminServer(sources, { text: () => new Registry().metrics(), contentType: 'text/plain' }, () => {});
    await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const get = async (path: string): Promise<{ status: number; body: Record<string, unknown> }> => {
    const r = await fetch(`http://127.0.0.1:${port}${path}`);
    return { status: r.status, body: (await r.json()) as Record<string, unknown> };
  };

  test('readyz stays 200 (the last good configuration serves) and says the configuration is stale', async () => {
    assert.deepEqual((await get('/-/readyz')).body, { status: 'ready' });
    health.failed('snapshot', new Error('boom'));
    const ready = await get('/-/readyz');
    assert.equal(ready.status, 200);
    assert.equal(ready.body.configurationStale, true);
    assert.equal((ready.body.buildFailure as { failures: number }).failures, 1);
  });

  test('/v1/status shows buildFailure and the build problem', async () => {
    const status = await get('/v1/status');
    assert.equal((status.body.buildFailure as { error: string }).error, 'boom');
    const problems = status.body.problems as { kind: string }[];
    assert.ok(problems.some((p) => p.kind === 'build'));
  });

  test('after a successful build both are clear again', async () => {
    health.succeeded();
    assert.deepEqual((await get('/-/readyz')).body, { status: 'ready' });
    assert.equal((await get('/v1/status')).body.buildFailure, null);
  });
});
