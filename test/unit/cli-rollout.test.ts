/**
 * `cgw rollout` against an in-memory Consul: what start writes (weights first, checked against the
 * catalog, then the document), one rollout at a time per service, the actions by hand with their
 * weights, and check-and-set losses with their exit codes.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CliError } from '../../src/cli/admin-client.ts';
import { actOnRollout, listRollouts, readRollout, soakLeftMs, startRollout } from '../../src/cli/rollout.ts';
import { MemoryConsul } from '../helpers/memory-consul.ts';

const T0 = new Date('2026-12-03T10:00:00.000Z');
const PREFIX = 'gateway/';
const consul = (): MemoryConsul => new MemoryConsul({ web: [['urlprefix-/web', 'v1'], ['urlprefix-/web', 'v2']] });
const failsWith = (code: number, message: RegExp) => (err: unknown) => {
  assert.ok(err instanceof CliError, String(err));
  assert.equal(err.exitCode, code, err.message);
  assert.match(err.message, message);
  return true;
};
const weightsOf = (c: MemoryConsul): unknown => JSON.parse(c.items.get('gateway/canary/web')?.value ?? 'null');

describe('cgw rollout start', () => {
  test('writes the first step\'s weights, then the rollout', async () => {
    const c = consul();
    const started = await startRollout(c, PREFIX, 'web', { canary: 'v2', stable: 'v1', steps: '10,100', soak: '30s' }, T0, 'cli');
    assert.deepEqual(c.writes, ['gateway/canary/web', 'gateway/rollouts/web']);
    assert.deepEqual(weightsOf(c), { weights: { v2: 10, v1: 90 } });
    const stored = await readRollout(c, PREFIX, 'web');
    assert.deepEqual(stored?.rollout, started.rollout);
    assert.equal(soakLeftMs(started.rollout, new Date(T0.getTime() + 10_000)), 20_000);
  });

  test('a tag no instance carries is refused before anything is written', async () => {
    const c = consul();
    await assert.rejects(startRollout(c, PREFIX, 'web', { canary: 'v3', stable: 'v1' }, T0), failsWith(2, /v3/));
    assert.deepEqual(c.writes, []);
  });

  test('bad flags are refused with the flag named (exit 2)', async () => {
    await assert.rejects(startRollout(consul(), PREFIX, 'web', { canary: 'v2', stable: 'v1', steps: '5,50' }, T0), failsWith(2, /last step must be 100/));
    await assert.rejects(startRollout(consul(), PREFIX, 'web', { canary: 'v2', stable: 'v1', soak: 'a while' }, T0), failsWith(2, /--soak/));
    await assert.rejects(startRollout(consul(), PREFIX, '../web', { canary: 'v2', stable: 'v1' }, T0), failsWith(2, /not a valid service name/));
  });

  test('one rollout at a time: another start waits until it ended; after an abort it may start again', async () => {
    const c = consul();
    await startRollout(c, PREFIX, 'web', { canary: 'v2', stable: 'v1' }, T0);
    await assert.rejects(startRollout(c, PREFIX, 'web', { canary: 'v2', stable: 'v1' }, T0), failsWith(1, /is progressing.*must end/));
    await actOnRollout(c, PREFIX, 'web', 'abort', T0);
    const again = await startRollout(c, PREFIX, 'web', { canary: 'v2', stable: 'v1', steps: '50,100' }, T0);
    assert.equal(again.rollout.steps[0], 50);
  });

  test('a write by someone else between the read and the write loses the check-and-set (exit 3)', async () => {
    const c = consul();
    let once = false;
    c.beforeWrite = () => {
      // Another operator starts a rollout while this one writes its weights.
      if (!once && c.writes.length === 1) {
        once = true;
        c.put('gateway/rollouts/web', '{}');
      }
    };
    await assert.rejects(startRollout(c, PREFIX, 'web', { canary: 'v2', stable: 'v1' }, T0), failsWith(3, /check-and-set lost/));
  });
});

describe('cgw rollout promote|pause|resume|abort', () => {
  test('abort: stable 100, canary 0, state aborted, recorded', async () => {
    const c = consul();
    await startRollout(c, PREFIX, 'web', { canary: 'v2', stable: 'v1' }, T0);
    const done = await actOnRollout(c, PREFIX, 'web', 'abort', T0, 'cli');
    assert.deepEqual([done.rollout.state, done.weights], ['aborted', { v2: 0, v1: 100 }]);
    assert.deepEqual(weightsOf(c), { weights: { v2: 0, v1: 100 } });
    assert.equal(done.rollout.history.at(-1)?.by, 'cli');
  });

  test('promote: canary 100, stable 0', async () => {
    const c = consul();
    await startRollout(c, PREFIX, 'web', { canary: 'v2', stable: 'v1' }, T0);
    await actOnRollout(c, PREFIX, 'web', 'promote', T0);
    assert.deepEqual(weightsOf(c), { weights: { v2: 100, v1: 0 } });
    await assert.rejects(actOnRollout(c, PREFIX, 'web', 'pause', T0), failsWith(1, /has ended \(promoted\)/));
  });

  test('pause and resume change the document, not the weights', async () => {
    const c = consul();
    await startRollout(c, PREFIX, 'web', { canary: 'v2', stable: 'v1' }, T0);
    const before = weightsOf(c);
    assert.equal((await actOnRollout(c, PREFIX, 'web', 'pause', T0)).rollout.state, 'paused');
    assert.equal((await actOnRollout(c, PREFIX, 'web', 'resume', T0)).rollout.state, 'progressing');
    assert.deepEqual(weightsOf(c), before);
  });

  test('no rollout, or an invalid document, is said plainly', async () => {
    const c = consul();
    await assert.rejects(actOnRollout(c, PREFIX, 'web', 'abort', T0), failsWith(1, /no rollout of web/));
    c.put('gateway/rollouts/web', '{"__proto__": {"state": "progressing"}}');
    await assert.rejects(actOnRollout(c, PREFIX, 'web', 'abort', T0), failsWith(2, /not a valid rollout/));
  });

  test('cgw rollouts lists every rollout, invalid ones marked, the folder key skipped', async () => {
    const c = new MemoryConsul({ web: [['v1'], ['v2']], api: [['a'], ['b']] });
    await startRollout(c, PREFIX, 'web', { canary: 'v2', stable: 'v1' }, T0);
    await startRollout(c, PREFIX, 'api', { canary: 'b', stable: 'a' }, T0);
    c.put('gateway/rollouts/', '');
    c.put('gateway/rollouts/broken', 'x');
    const list = await listRollouts(c, PREFIX);
    assert.deepEqual(list.map((s) => [s.key, s.rollout?.state ?? null, s.invalid === null]), [
      ['gateway/rollouts/api', 'progressing', true],
      ['gateway/rollouts/broken', null, false],
      ['gateway/rollouts/web', 'progressing', true],
    ]);
  });
});
