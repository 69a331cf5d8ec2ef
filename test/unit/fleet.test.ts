import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { ZodError } from 'zod';
import { CGW_VERSION, FLEET_META } from '../../src/core/fleet.ts';
import { analyzeFleet, shown, type FleetState } from '../../src/state/fleet.ts';
import { checkFleetFlags, fleetHealthy, renderFleet } from '../../src/cli/fleet.ts';
import { formatConfigError, parseGatewayConfig } from '../../src/config.ts';

const NOW = Date.parse('2026-12-03T10:00:00.000Z');
const GRACE = 5_000;

interface GatewaySpec {
  id: string;
  snapshot: string;
  /** ms before NOW its snapshot came into force. */
  sinceAgo: number;
  applied?: number;
  check?: string;
  meta?: Record<string, unknown>;
}

function entry(g: GatewaySpec): unknown {
  return {
    Node: { Node: 'node-1' },
    Service: {
      ID: `cgw-${g.id}`,
      Service: 'cgw',
      Address: '127.0.0.1',
      Port: 8080,
      Meta: g.meta ?? {
        [FLEET_META.version]: CGW_VERSION,
        [FLEET_META.gatewayId]: g.id,
        [FLEET_META.snapshot]: g.snapshot,
        [FLEET_META.snapshotSince]: String(NOW - g.sinceAgo),
        [FLEET_META.appliedIndex]: String(g.applied ?? 100),
        [FLEET_META.admin]: '127.0.0.1:9901',
      },
    },
    Checks: [
      { CheckID: 'serfHealth', Status: 'passing' },
      { CheckID: `service:cgw-${g.id}`, Status: g.check ?? 'passing' },
    ],
  };
}

function analyze(gateways: GatewaySpec[], consulIndex: number | null = 120) {
  return analyzeFleet({ service: 'cgw', entries: gateways.map(entry), consulIndex, now: NOW, graceMs: GRACE });
}

function states(gateways: GatewaySpec[]): Record<string, FleetState> {
  return Object.fromEntries(analyze(gateways).gateways.map((g) => [g.gatewayId ?? g.id, g.state]));
}

describe('analyzeFleet: who lags', () => {
  const cases: { name: string; gateways: GatewaySpec[]; fleet: string | null; states: Record<string, FleetState> }[] = [
    {
      name: 'all on one snapshot: every gateway ok',
      gateways: [{ id: 'a', snapshot: 's1', sinceAgo: 60_000 }, { id: 'b', snapshot: 's1', sinceAgo: 59_000 }],
      fleet: 's1',
      states: { a: 'ok', b: 'ok' },
    },
    {
      name: 'the minority on an older snapshot for longer than the grace: lagging',
      gateways: [{ id: 'a', snapshot: 's2', sinceAgo: 20_000 }, { id: 'b', snapshot: 's2', sinceAgo: 19_000 }, { id: 'c', snapshot: 's1', sinceAgo: 600_000 }],
      fleet: 's2',
      states: { a: 'ok', b: 'ok', c: 'lagging' },
    },
    {
      name: 'a disagreement younger than the grace: converging, not flagged',
      gateways: [{ id: 'a', snapshot: 's2', sinceAgo: 2_000 }, { id: 'b', snapshot: 's2', sinceAgo: 1_000 }, { id: 'c', snapshot: 's1', sinceAgo: 600_000 }],
      fleet: 's2',
      states: { a: 'ok', b: 'ok', c: 'converging' },
    },
    {
      name: 'two gateways, two snapshots: the newer one is the fleet, the other lags',
      gateways: [{ id: 'a', snapshot: 's2', sinceAgo: 30_000 }, { id: 'b', snapshot: 's1', sinceAgo: 300_000 }],
      fleet: 's2',
      states: { a: 'ok', b: 'lagging' },
    },
    {
      name: 'a gateway that moved on after the fleet lags from its own moment (it disagrees since then)',
      gateways: [{ id: 'a', snapshot: 's1', sinceAgo: 300_000 }, { id: 'b', snapshot: 's1', sinceAgo: 300_000 }, { id: 'c', snapshot: 's9', sinceAgo: 3_000 }],
      fleet: 's1',
      states: { a: 'ok', b: 'ok', c: 'converging' },
    },
    {
      name: 'a critical check is critical even on the fleet snapshot, and does not vote',
      gateways: [{ id: 'a', snapshot: 's1', sinceAgo: 300_000, check: 'critical' }, { id: 'b', snapshot: 's2', sinceAgo: 60_000 }],
      fleet: 's2',
      states: { a: 'critical', b: 'ok' },
    },
    {
      name: 'every gateway critical: they still vote among themselves',
      gateways: [{ id: 'a', snapshot: 's1', sinceAgo: 1_000, check: 'critical' }],
      fleet: 's1',
      states: { a: 'critical' },
    },
    {
      name: 'an unknown check status counts as critical',
      gateways: [{ id: 'a', snapshot: 's1', sinceAgo: 1_000, check: 'maintenance' }, { id: 'b', snapshot: 's1', sinceAgo: 1_000 }],
      fleet: 's1',
      states: { a: 'critical', b: 'ok' },
    },
    {
      name: 'a warning check (a worker behind) is not lagging by itself',
      gateways: [{ id: 'a', snapshot: 's1', sinceAgo: 1_000, check: 'warning' }, { id: 'b', snapshot: 's1', sinceAgo: 1_000 }],
      fleet: 's1',
      states: { a: 'ok', b: 'ok' },
    },
    { name: 'no gateway at all', gateways: [], fleet: null, states: {} },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const view = analyze(c.gateways);
      assert.equal(view.fleetSnapshot, c.fleet);
      assert.deepEqual(states(c.gateways), c.states);
    });
  }

  test('lag is how long the two versions have both been in force; indexes behind from the catalog index', () => {
    const view = analyze([{ id: 'a', snapshot: 's2', sinceAgo: 12_000, applied: 118 }, { id: 'b', snapshot: 's1', sinceAgo: 90_000, applied: 100 }], 120);
    const [a, b] = view.gateways;
    assert.equal(a?.lagSeconds, 0);
    assert.equal(a?.indexesBehind, 2);
    assert.equal(b?.lagSeconds, 12);
    assert.equal(b?.indexesBehind, 20);
    assert.match(b?.reasons.join() ?? '', /runs snapshot s1, the fleet s2, for 12\.0 s/);
    assert.equal(analyze([{ id: 'a', snapshot: 's', sinceAgo: 0, applied: 130 }], 120).gateways[0]?.indexesBehind, 0, 'never negative');
    assert.equal(analyze([{ id: 'a', snapshot: 's', sinceAgo: 0 }], null).gateways[0]?.indexesBehind, null);
  });

  test('healthy only without lagging or critical gateways, and with at least one gateway', () => {
    assert.equal(fleetHealthy(analyze([{ id: 'a', snapshot: 's', sinceAgo: 0 }])), true);
    assert.equal(fleetHealthy(analyze([{ id: 'a', snapshot: 's', sinceAgo: 0, check: 'critical' }])), false);
    assert.equal(fleetHealthy(analyze([])), false);
    assert.equal(fleetHealthy(analyzeFleet({ service: 'cgw', entries: [entry({ id: 'x', snapshot: 's', sinceAgo: 0, meta: {} })], consulIndex: 1, now: NOW, graceMs: GRACE })), false);
  });
});

describe('analyzeFleet: entries someone else registered under the name', () => {
  const good = { id: 'good', snapshot: 's1', sinceAgo: 60_000 };
  const hostile: { name: string; meta: Record<string, unknown> }[] = [
    { name: 'no meta at all', meta: {} },
    { name: 'prototype names as meta keys', meta: JSON.parse(`{"__proto__": {"${FLEET_META.snapshot}": "s9"}, "constructor": "x", "${FLEET_META.snapshot}": "s9"}`) as Record<string, unknown> },
    { name: 'non-numeric and huge indexes', meta: { ...entryMeta('s1'), [FLEET_META.appliedIndex]: '1e999' } },
    { name: 'an index past 2^53', meta: { ...entryMeta('s1'), [FLEET_META.appliedIndex]: '9999999999999999' } },
    { name: 'a negative time', meta: { ...entryMeta('s1'), [FLEET_META.snapshotSince]: '-5' } },
    { name: 'a time far in the future', meta: { ...entryMeta('s1'), [FLEET_META.snapshotSince]: String(NOW + 400 * 86_400_000) } },
    { name: 'an oversized snapshot version', meta: { ...entryMeta('s'.repeat(600)) } },
    { name: 'terminal escapes in a value', meta: { ...entryMeta('s1\u001b[2J') } },
    { name: 'values that are not strings', meta: { ...entryMeta('s1'), [FLEET_META.appliedIndex]: 5 } },
  ];
  for (const h of hostile) {
    test(`${h.name}: shown as invalid, the real gateway judged as before`, () => {
      const view = analyzeFleet({ service: 'cgw', entries: [entry(good), entry({ id: 'evil', snapshot: '', sinceAgo: 0, meta: h.meta })], consulIndex: 120, now: NOW, graceMs: GRACE });
      assert.equal(view.fleetSnapshot, 's1');
      assert.deepEqual(view.gateways.map((g) => g.state), ['ok', 'invalid']);
      assert.match(view.gateways[1]?.reasons[0] ?? '', /not a gateway's registration/);
      assert.doesNotMatch(renderFleet(view), /\u001b/);
    });
  }

  test('entries that are not health entries at all, and answers that are not a list', () => {
    for (const entries of [[null], [42], ['x'], [{ Service: { ID: 'x'.repeat(5000) } }], [{ Node: {}, Service: {}, Checks: 'no' }]]) {
      const view = analyzeFleet({ service: 'cgw', entries, consulIndex: 1, now: NOW, graceMs: GRACE });
      assert.deepEqual(view.gateways.map((g) => g.state), ['invalid']);
    }
    assert.deepEqual(analyzeFleet({ service: 'cgw', entries: { not: 'a list' }, consulIndex: 1, now: NOW, graceMs: GRACE }).gateways, []);
  });

  test('a thousand hostile entries are judged quickly and none takes part in the vote', () => {
    const entries = [entry(good), ...Array.from({ length: 1000 }, (_, i) => entry({ id: `e${i}`, snapshot: '', sinceAgo: 0, meta: { [FLEET_META.snapshot]: 'evil' } }))];
    const view = analyzeFleet({ service: 'cgw', entries, consulIndex: 1, now: NOW, graceMs: GRACE });
    assert.equal(view.fleetSnapshot, 's1');
    assert.equal(view.counts.invalid, 1000);
    assert.equal(view.counts.ok, 1);
  });

  test('text shown from entries is cut and cleaned', () => {
    assert.equal(shown('a\u0007b\nc'), 'a?b?c');
    assert.equal(shown('x'.repeat(500)).length, 80);
  });
});

function entryMeta(snapshot: string): Record<string, string> {
  return {
    [FLEET_META.version]: CGW_VERSION,
    [FLEET_META.gatewayId]: 'evil',
    [FLEET_META.snapshot]: snapshot,
    [FLEET_META.snapshotSince]: String(NOW - 1000),
    [FLEET_META.appliedIndex]: '100',
    [FLEET_META.admin]: '127.0.0.1:1',
  };
}

describe('fleet flags', () => {
  test('cgw fleet refuses bad service names and grace periods with exit 2', () => {
    for (const service of ['__proto__', 'constructor!', '', 'a'.repeat(64), 'a b', '-x', 'a/b']) {
      assert.throws(() => checkFleetFlags({ service, grace: '5s' }), (e: Error & { exitCode?: number }) => e.exitCode === 2 && /--service/.test(e.message), service);
    }
    for (const grace of ['5', 'soon', '11m', '-1s', '__proto__']) {
      assert.throws(() => checkFleetFlags({ service: 'cgw', grace }), (e: Error & { exitCode?: number }) => e.exitCode === 2 && /--grace/.test(e.message), grace);
    }
    assert.deepEqual(checkFleetFlags({ service: 'cgw-edge', grace: '0s' }), { service: 'cgw-edge', graceMs: 0 });
  });

  test('cgw start: --register-service and --register-address are checked, defaults as documented', () => {
    const refused = (input: Record<string, unknown>, flag: RegExp): void => {
      try {
        parseGatewayConfig(input);
      } catch (err) {
        assert.ok(err instanceof ZodError);
        assert.match(formatConfigError(err), flag);
        return;
      }
      assert.fail(`${JSON.stringify(input)} was accepted`);
    };
    for (const bad of ['__proto__', '', 'a'.repeat(64), 'cgw fleet', 'cgw/x', '-cgw', 'cgw-', 'ünï']) refused({ registerService: bad }, /--register-service/);
    for (const bad of ['__proto__', 'host:80', 'a b', '', 'x'.repeat(254), 'http://x', '-bad', 'a..b']) refused({ registerAddress: bad }, /--register-address/);
    assert.equal(parseGatewayConfig({}).registerAddress, '127.0.0.1');
    assert.equal(parseGatewayConfig({ listen: '10.1.2.3:8080' }).registerAddress, '10.1.2.3');
    assert.equal(parseGatewayConfig({ listen: '[::]:8080' }).registerAddress, '127.0.0.1');
    assert.equal(parseGatewayConfig({ registerAddress: 'gw1.example.internal' }).registerAddress, 'gw1.example.internal');
    assert.equal(parseGatewayConfig({ registerAddress: 'fd00::1' }).registerAddress, 'fd00::1');
    assert.equal(parseGatewayConfig({ register: false }).register, false);
    assert.equal(parseGatewayConfig({ registerService: 'constructor' }).registerService, 'constructor', 'a valid DNS label; the gateway never uses it as an object key');
  });

  test('the published release equals package.json', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(CGW_VERSION, pkg.version);
  });
});
