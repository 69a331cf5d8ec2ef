import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConsulHttpError, type ConsulClient } from '../../src/consul/client.ts';
import { SelfRegistration, type SelfFacts } from '../../src/consul/self-registration.ts';
import { FLEET_META } from '../../src/core/fleet.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { waitFor } from '../helpers/wait.ts';

interface Call {
  readonly path: string;
  readonly body: unknown;
}

/** The agent, as far as registration talks to it: records every PUT, fails while `failWith` is set. */
function fakeAgent() {
  const calls: Call[] = [];
  const agent = {
    calls,
    failWith: undefined as Error | undefined,
    put(path: string, body: unknown): Promise<void> {
      calls.push({ path, body });
      return agent.failWith ? Promise.reject(agent.failWith) : Promise.resolve();
    },
    registrations: () => calls.filter((c) => c.path === '/v1/agent/service/register'),
    passes: () => calls.filter((c) => c.path.startsWith('/v1/agent/check/pass/')),
  };
  return agent;
}

function setup(opts: { facts?: SelfFacts | undefined; minRegisterIntervalMs?: number } = {}) {
  const agent = fakeAgent();
  const metrics = createMetrics({ defaultMetrics: false });
  let facts: SelfFacts | undefined = 'facts' in opts ? opts.facts : { snapshot: 'aaaa', snapshotSince: 1_000, appliedIndex: 10, ready: true };
  const registration = new SelfRegistration({
    client: agent as unknown as ConsulClient,
    service: 'cgw',
    gatewayId: 'gw1',
    address: '127.0.0.1',
    port: 8080,
    admin: '127.0.0.1:9901',
    facts: () => facts,
    // The smallest TTL the loop allows: a pass every 500 ms, so the tests see several quickly.
    ttlMs: 1_500,
    deregisterCriticalAfter: '1m',
    minRegisterIntervalMs: opts.minRegisterIntervalMs ?? 0,
    logger: createLogger('silent'),
    metrics,
  });
  return { agent, metrics, registration, setFacts: (f: SelfFacts | undefined) => (facts = f) };
}

describe('self-registration', () => {
  test('registers once a snapshot is in force, with the TTL check and the meta, then keeps passing the check', async (t) => {
    const { agent, registration, setFacts } = setup({ facts: undefined });
    t.after(() => registration.close());
    registration.start();
    assert.equal(registration.status().state, 'pending');
    setFacts({ snapshot: 'aaaa', snapshotSince: 1_000, appliedIndex: 10, ready: true });
    registration.notify();
    await waitFor(() => agent.passes().length >= 2, { message: 'two check passes' });
    const [first] = agent.registrations();
    const body = first?.body as { ID: string; Name: string; Port: number; Meta: Record<string, string>; Check: Record<string, string> };
    assert.equal(body.ID, 'cgw-gw1');
    assert.equal(body.Name, 'cgw');
    assert.equal(body.Port, 8080);
    assert.equal(body.Meta[FLEET_META.snapshot], 'aaaa');
    assert.equal(body.Meta[FLEET_META.appliedIndex], '10');
    assert.equal(body.Meta[FLEET_META.snapshotSince], '1000');
    assert.equal(body.Check.TTL, '1.5s');
    assert.equal(body.Check.Status, 'passing', 'registered passing: a re-registration must not flip the check to critical');
    assert.equal(body.Check.DeregisterCriticalServiceAfter, '1m');
    assert.equal(agent.registrations().length, 1, 'unchanged meta is not written again');
    assert.equal(agent.passes()[0]?.path, '/v1/agent/check/pass/service%3Acgw-gw1');
    assert.equal(registration.status().state, 'registered');
  });

  test('a meta change is written again, no more often than the minimum interval', async (t) => {
    const { agent, registration, setFacts } = setup({ minRegisterIntervalMs: 60_000 });
    t.after(() => registration.close());
    registration.start();
    await waitFor(() => agent.registrations().length === 1);
    setFacts({ snapshot: 'bbbb', snapshotSince: 2_000, appliedIndex: 11, ready: true });
    registration.notify();
    // Passes go on meanwhile (the check must not expire), the new meta waits for the interval.
    const passesBefore = agent.passes().length;
    await waitFor(() => agent.passes().length >= passesBefore + 2 || agent.registrations().length > 1, { message: 'passes while the change waits' });
    assert.equal(agent.registrations().length, 1);
  });

  test('meta changes with no minimum interval are written on the next turn; readiness lost warns the check', async (t) => {
    const { agent, registration, setFacts } = setup();
    t.after(() => registration.close());
    registration.start();
    await waitFor(() => agent.registrations().length === 1);
    setFacts({ snapshot: 'bbbb', snapshotSince: 2_000, appliedIndex: 11, ready: false });
    registration.notify();
    const second = await waitFor(() => agent.registrations()[1]);
    const body = second.body as { Meta: Record<string, string>; Check: { Status: string } };
    assert.equal(body.Meta[FLEET_META.snapshot], 'bbbb');
    assert.equal(body.Check.Status, 'warning');
    await waitFor(() => agent.calls.some((c) => c.path.startsWith('/v1/agent/check/warn/')), { message: 'a warn while not ready' });
  });

  test('failures are counted, shown and retried; it registers again once the agent accepts', async (t) => {
    const { agent, metrics, registration } = setup();
    t.after(() => registration.close());
    agent.failWith = new ConsulHttpError(403, '/v1/agent/service/register', 'Permission denied');
    registration.start();
    await waitFor(() => agent.registrations().length >= 2, { message: 'a retry after a refusal' });
    const status = registration.status();
    assert.equal(status.state, 'failing');
    assert.match(status.lastError ?? '', /register: .*403/);
    assert.ok(status.failures >= 2);
    const counted = (await metrics.selfRegistrationFailures.get()).values.find((v) => v.labels.operation === 'register')?.value ?? 0;
    assert.ok(counted >= 2, `counted ${counted}`);
    agent.failWith = undefined;
    await waitFor(() => registration.status().state === 'registered', { timeoutMs: 40_000, message: 'registered after the agent recovered' });
    assert.equal(registration.status().consecutiveFailures, 0);
  });

  test('a failed pass (the agent forgot the check) registers again', async (t) => {
    const { agent, registration } = setup();
    t.after(() => registration.close());
    registration.start();
    await waitFor(() => agent.passes().length >= 1);
    agent.failWith = new ConsulHttpError(500, '/v1/agent/check/pass/x', 'Unknown check');
    await waitFor(() => registration.status().state === 'failing');
    agent.failWith = undefined;
    await waitFor(() => agent.registrations().length >= 2, { timeoutMs: 40_000, message: 'registered again after the failed pass' });
  });

  test('a fact source that throws counts as a failure and the heartbeat goes on', async (t) => {
    const { agent, registration, setFacts } = setup();
    t.after(() => registration.close());
    let broken = true;
    const real = { snapshot: 'aaaa', snapshotSince: 1_000, appliedIndex: 10, ready: true };
    setFacts(
      new Proxy(real, {
        get: (target, key) => {
          if (broken) throw new Error('boom');
          return Reflect.get(target, key);
        },
      }),
    );
    registration.start();
    await waitFor(() => registration.status().state === 'failing', { message: 'the error counted' });
    assert.match(registration.status().lastError ?? '', /boom/);
    broken = false;
    await waitFor(() => agent.registrations().length === 1, { timeoutMs: 40_000, message: 'registered once the facts read again' });
  });

  test('deregister on drain: one call, then nothing more', async () => {
    const { agent, registration } = setup();
    registration.start();
    await waitFor(() => agent.passes().length >= 1);
    await registration.deregister();
    registration.close();
    assert.equal(registration.status().state, 'deregistered');
    const after = agent.calls.length;
    assert.equal(agent.calls.at(-1)?.path, '/v1/agent/service/deregister/cgw-gw1');
    registration.notify();
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(agent.calls.length, after, 'no call after deregistering');
  });
});
