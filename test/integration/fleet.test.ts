/**
 * The fleet view against a real Consul: two gateways register themselves (one of them with
 * workers, where the primary registers), `cgw fleet` lists both on one snapshot, a Consul change
 * moves both, a SIGSTOPped gateway is flagged (lagging, then critical) while the other stays ok,
 * an entry someone else registers under the name with hostile meta is shown as invalid and harms
 * nothing, `--no-register` keeps a gateway out, and a drained gateway leaves the catalog.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send } from '../helpers/http.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

interface FleetRow {
  id: string;
  gatewayId: string | null;
  address: string;
  snapshot: string | null;
  appliedIndex: number | null;
  indexesBehind: number | null;
  lagSeconds: number | null;
  admin: string | null;
  health: string;
  state: string;
  reasons: string[];
}
interface Fleet {
  fleetSnapshot: string | null;
  consulIndex: number | null;
  gateways: FleetRow[];
}

let consul: ConsulAgent;
let upstream: Upstream;
let gwA: GatewayProcess;
let gwB: GatewayProcess;
let gwQuiet: GatewayProcess;
let stoppedB = false;
let drainedB = false;
let stopping = false;

function reportCrash(g: GatewayProcess, name: string): void {
  void g.exited.then((code) => {
    if (!stopping && !(g === gwB && drainedB)) process.stderr.write(`\ngateway ${name} exited (code ${code}); last log lines:\n${g.logs.slice(-30).join('\n')}\n`);
  });
}

async function fleet(...extra: string[]): Promise<{ code: number | null; view: Fleet }> {
  const r = await runCli(['fleet', '--json', '--consul', consul.addr, ...extra]);
  assert.ok(r.code === 0 || r.code === 1, `cgw fleet exit ${r.code}: ${r.stderr}`);
  return { code: r.code, view: JSON.parse(r.stdout) as Fleet };
}

function row(view: Fleet, gatewayId: string): FleetRow | undefined {
  return view.gateways.find((g) => g.gatewayId === gatewayId);
}

async function snapshotOf(gw: GatewayProcess): Promise<string> {
  const s = (await (await fetch(`${gw.adminUrl}/v1/status`)).json()) as { snapshot: { version: string } | null };
  return s.snapshot?.version ?? '';
}

before(async () => {
  consul = await startConsul();
  upstream = await startUpstream('web-1');
  await consul.register({ id: 'web-1', name: 'web', port: upstream.port, tags: ['urlprefix-/web'] });
  [gwA, gwB, gwQuiet] = await Promise.all([
    startGateway({ consul: consul.addr, args: ['--wait', '5s', '--gateway-id', 'fleet-a'] }),
    // With workers the primary runs the control plane, and registers the gateway once.
    startGateway({ consul: consul.addr, args: ['--wait', '5s', '--gateway-id', 'fleet-b', '--workers', '2'] }),
    startGateway({ consul: consul.addr, args: ['--wait', '5s', '--gateway-id', 'fleet-quiet', '--no-register'] }),
  ]);
  reportCrash(gwA, 'a');
  reportCrash(gwB, 'b');
  reportCrash(gwQuiet, 'quiet');
});

after(async () => {
  stopping = true;
  if (stoppedB && gwB) process.kill(gwB.pid, 'SIGCONT');
  await Promise.all([gwA?.kill(), gwB?.kill(), gwQuiet?.kill()]);
  await upstream?.close();
  await consul?.destroy();
});

describe('cgw fleet', () => {
  test('lists both registered gateways on the same snapshot, and not the one started with --no-register', async () => {
    const { code, view } = await waitFor(
      async () => {
        const f = await fleet();
        const a = row(f.view, 'fleet-a');
        const b = row(f.view, 'fleet-b');
        return a?.state === 'ok' && b?.state === 'ok' && a.snapshot === b.snapshot && f;
      },
      { timeoutMs: 30_000, message: 'both gateways ok on one snapshot' },
    );
    assert.equal(code, 0);
    assert.deepEqual(view.gateways.map((g) => g.gatewayId).sort(), ['fleet-a', 'fleet-b']);
    const a = row(view, 'fleet-a') as FleetRow;
    const b = row(view, 'fleet-b') as FleetRow;
    assert.equal(a.id, 'cgw-fleet-a');
    assert.equal(a.address, `127.0.0.1:${gwA.listenPort}`);
    assert.equal(b.address, `127.0.0.1:${gwB.listenPort}`);
    assert.equal(a.admin, `127.0.0.1:${gwA.adminPort}`);
    assert.equal(a.health, 'passing');
    assert.equal(view.fleetSnapshot, a.snapshot);
    assert.equal(a.snapshot, await snapshotOf(gwA), 'the published snapshot is the one in force');
    assert.equal(typeof a.indexesBehind, 'number');

    const text = await runCli(['fleet', '--consul', consul.addr]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /fleet-a .* OK/);
    assert.match(text.stdout, /fleet-b .* OK/);
    assert.doesNotMatch(text.stdout, /fleet-quiet/);

    const notConsul = await runCli(['fleet', '--consul', gwA.adminUrl]);
    assert.equal(notConsul.code, 1);
    assert.match(notConsul.stderr, /is not a Consul agent/);
    for (const bad of [['--service', '__proto__'], ['--service', 'x'.repeat(300)], ['--grace', 'constructor']]) {
      const refused = await runCli(['fleet', '--consul', consul.addr, ...bad]);
      assert.equal(refused.code, 2, `${bad.join(' ')}: ${refused.stderr}`);
    }

    const quiet = await runCli(['status', '--admin', gwQuiet.adminUrl]);
    assert.match(quiet.stdout, /registered: +no \(--no-register/);
    const status = await runCli(['status', '--admin', gwA.adminUrl]);
    assert.match(status.stdout, /registered: +yes: cgw as cgw-fleet-a/);
  });

  test('a change in Consul moves both gateways to the same new snapshot', async () => {
    const before = (await fleet()).view.fleetSnapshot;
    await consul.register({ id: 'api-1', name: 'api', port: upstream.port, tags: ['urlprefix-/api'] });
    await waitFor(
      async () => {
        const { view } = await fleet();
        const a = row(view, 'fleet-a');
        const b = row(view, 'fleet-b');
        return a?.snapshot !== before && a?.snapshot === b?.snapshot && a?.state === 'ok' && b?.state === 'ok';
      },
      { timeoutMs: 30_000, message: 'both gateways on the new snapshot' },
    );
    assert.equal(await snapshotOf(gwA), await snapshotOf(gwB));
  });

  test('a quiet fleet writes nothing: heartbeats do not move the catalog, and no gateway rebuilds', async () => {
    const published = async (gw: GatewayProcess): Promise<string | undefined> =>
      (await (await fetch(`${gw.adminUrl}/metrics`)).text()).split('\n').find((l) => l.startsWith('cgw_snapshots_published_total'));
    // Let the registrations that followed the last change settle (at most one a second per
    // gateway): the services' index holds for a blocking wait of 3 s.
    const index = await waitFor(
      async () => {
        const now = String((await consul.api('GET', '/v1/catalog/services')).headers['x-consul-index']);
        const held = await consul.api('GET', `/v1/catalog/services?index=${now}&wait=3s`);
        return String(held.headers['x-consul-index']) === now && now;
      },
      { timeoutMs: 30_000, message: 'the registrations after the last change settled' },
    );
    const before = [await published(gwA), await published(gwB)];
    // A blocking query returns as soon as the services' index moves; across three heartbeats it must not.
    const blocked = await consul.api('GET', `/v1/catalog/services?index=${index}&wait=11s`);
    assert.equal(String(blocked.headers['x-consul-index']), index, 'no registration, no check write while nothing changed');
    assert.deepEqual([await published(gwA), await published(gwB)], before, 'no snapshot published');
    assert.equal(row((await fleet()).view, 'fleet-a')?.health, 'passing');
  });

  test('a cgw entry with hostile meta is shown as invalid; the gateways still serve and apply changes', async () => {
    const hostile = `{"ID":"intruder","Name":"cgw","Port":1,"Meta":{"__proto__":"x","constructor":"y","cgw_snapshot":"zz","cgw_applied_index":"99999999999999999999","cgw_snapshot_since":"NaN","cgw_admin":"${'a'.repeat(500)}"}}`;
    const reg = await consul.api('PUT', '/v1/agent/service/register', hostile);
    assert.equal(reg.status, 200, reg.text);
    const { view } = await waitFor(async () => {
      const f = await fleet();
      return f.view.gateways.some((g) => g.id === 'intruder') && f;
    });
    const intruder = view.gateways.find((g) => g.id === 'intruder') as FleetRow;
    assert.equal(intruder.state, 'invalid');
    assert.match(intruder.reasons.join(), /not a gateway's registration/);
    assert.equal(row(view, 'fleet-a')?.state, 'ok');
    assert.equal(row(view, 'fleet-b')?.state, 'ok');
    const text = await runCli(['fleet', '--consul', consul.addr]);
    assert.equal(text.code, 0, 'an invalid foreign entry does not fail the fleet');
    assert.match(text.stdout, /intruder .* INVALID/);

    assert.equal((await send(gwA.url, '/web')).status, 200);
    await consul.register({ id: 'late-1', name: 'late', port: upstream.port, tags: ['urlprefix-/late'] });
    await waitFor(async () => (await send(gwA.url, '/late')).status === 200 && (await send(gwB.url, '/late')).status === 200, { message: 'both gateways route /late' });
    await consul.deregister('intruder');
  });

  test('a gateway that disagrees with the others past the grace period is flagged lagging, its check passing', async () => {
    // Other policy documents (the repository's examples): it builds another snapshot from the same Consul.
    const odd = await startGateway({ consul: consul.addr, args: ['--wait', '5s', '--gateway-id', 'fleet-odd', '--policies', 'policies'] });
    try {
      const { code, view } = await waitFor(
        async () => {
          const f = await fleet();
          return row(f.view, 'fleet-odd')?.state === 'lagging' && f;
        },
        { timeoutMs: 30_000, intervalMs: 250, message: 'the odd gateway flagged lagging' },
      );
      assert.equal(code, 1);
      const oddRow = row(view, 'fleet-odd') as FleetRow;
      assert.equal(oddRow.health, 'passing');
      // Lagging means more than the 5 s grace; lagSeconds is rounded to a tenth, so 5.04 s shows as 5.
      assert.ok((oddRow.lagSeconds ?? 0) >= 5, `lag ${oddRow.lagSeconds} s`);
      assert.notEqual(oddRow.snapshot, view.fleetSnapshot);
      assert.equal(view.fleetSnapshot, row(view, 'fleet-a')?.snapshot, 'two against one: the majority is the fleet');
      assert.equal(row(view, 'fleet-a')?.state, 'ok');
      const text = await runCli(['fleet', '--consul', consul.addr, '--grace', '10m']);
      assert.equal(text.code, 0, 'within a longer grace it is only converging');
      assert.match(text.stdout, /fleet-odd .* CONVERGING/);
    } finally {
      await odd.kill();
    }
    await waitFor(async () => !(await fleet()).view.gateways.some((g) => g.gatewayId === 'fleet-odd'), { message: 'the odd gateway deregistered' });
  });

  test('the apply lag metric is exported and 0 on a gateway that is up to date', async () => {
    const text = await (await fetch(`${gwA.adminUrl}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith('cgw_consul_apply_lag_seconds '));
    assert.ok(line, 'cgw_consul_apply_lag_seconds exported');
    assert.equal(Number(line.split(' ')[1]), 0);
  });

  test('a SIGSTOPped gateway is flagged lagging and critical while the other stays ok; SIGCONT brings it back', async () => {
    process.kill(gwB.pid, 'SIGSTOP');
    stoppedB = true;
    await consul.register({ id: 'during-stop', name: 'during', port: upstream.port, tags: ['urlprefix-/during'] });
    const { code, view } = await waitFor(
      async () => {
        const f = await fleet();
        const b = row(f.view, 'fleet-b');
        return b?.state === 'critical' && b.reasons.some((r) => r.startsWith('runs snapshot')) && f;
      },
      // The TTL is 10 s; Consul's timer and a busy machine add to it.
      { timeoutMs: 45_000, intervalMs: 500, message: 'the stopped gateway flagged critical and behind' },
    );
    assert.equal(code, 1, 'a critical gateway makes cgw fleet exit 1');
    const a = row(view, 'fleet-a') as FleetRow;
    const b = row(view, 'fleet-b') as FleetRow;
    assert.equal(a.state, 'ok');
    assert.equal(view.fleetSnapshot, a.snapshot);
    assert.notEqual(b.snapshot, a.snapshot);
    assert.ok((b.lagSeconds ?? 0) > 0);
    assert.equal(b.health, 'critical');
    const text = await runCli(['fleet', '--consul', consul.addr]);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /fleet-b .* CRITICAL/);

    process.kill(gwB.pid, 'SIGCONT');
    stoppedB = false;
    await waitFor(
      async () => {
        const f = await fleet();
        return row(f.view, 'fleet-b')?.state === 'ok' && row(f.view, 'fleet-b')?.snapshot === row(f.view, 'fleet-a')?.snapshot && f.code === 0;
      },
      { timeoutMs: 45_000, intervalMs: 250, message: 'the resumed gateway caught up' },
    );
  });

  test('a drained gateway leaves the catalog', async () => {
    drainedB = true;
    const exit = await gwB.kill('SIGTERM');
    assert.equal(exit, 0);
    const { view } = await waitFor(async () => {
      const f = await fleet();
      return !f.view.gateways.some((g) => g.gatewayId === 'fleet-b') && f;
    });
    assert.deepEqual(view.gateways.map((g) => g.gatewayId), ['fleet-a']);
    const left = await consul.api('GET', '/v1/agent/service/cgw-fleet-b');
    assert.equal(left.status, 404, 'deregistered from the agent, not only critical');
  });

  test('with the agent down the gateway serves on, shows the lag and the failing registration, and registers again once it is back', async () => {
    const lag = async (): Promise<number> => {
      const text = await (await fetch(`${gwA.adminUrl}/metrics`)).text();
      return Number(text.split('\n').find((l) => l.startsWith('cgw_consul_apply_lag_seconds '))?.split(' ')[1]);
    };
    await consul.stop();
    try {
      await waitFor(async () => (await lag()) > 1, { timeoutMs: 30_000, message: 'the apply lag grows while Consul is down' });
      const status = await waitFor(async () => {
        const r = await runCli(['status', '--admin', gwA.adminUrl]);
        return /registered: +FAILING/.test(r.stdout) && r.stdout;
      }, { timeoutMs: 30_000, message: 'cgw status shows the failing registration' });
      assert.match(status, /ECONNREFUSED|refused/i);
      const metrics = await (await fetch(`${gwA.adminUrl}/metrics`)).text();
      assert.match(metrics, /cgw_self_registration_failures_total\{operation="(register|pass)"\} [1-9]/);
      assert.equal((await send(gwA.url, '/web')).status, 200, 'serving goes on from the last snapshot');
    } finally {
      await consul.start();
    }
    await waitFor(async () => row((await fleet()).view, 'fleet-a')?.state === 'ok', { timeoutMs: 60_000, intervalMs: 500, message: 'registered again after the agent came back' });
    await waitFor(async () => (await lag()) === 0, { timeoutMs: 60_000, message: 'no lag once the watches answer again' });
    assert.match((await runCli(['status', '--admin', gwA.adminUrl])).stdout, /registered: +yes/);
  });
});
