import { z } from 'zod';
import { FLEET_META } from '../core/fleet.ts';
import { GATEWAY_ID_PATTERN } from '../core/kv-layout.ts';

/**
 * `cgw fleet`, the pure part: what Consul's `/v1/health/service/<name>` says about every gateway
 * of the fleet, judged. Anyone with `service:write` can register an entry under the gateways'
 * service name, so every entry is validated; one that is not a gateway's is shown as invalid and
 * takes no part in the judgement of the others.
 *
 * - The fleet's snapshot is the version most gateways run (those whose check is not critical);
 *   a tie goes to the version that came into force last (it holds the newer Consul state).
 * - A gateway running another version disagrees since the later of the two moments its own
 *   version and the fleet's came into force (each gateway publishes its own moment); past the
 *   grace period it is lagging. The moments come from each gateway's clock: a skew between hosts
 *   shifts the figure by as much.
 * - A critical check (the TTL of 10 s ran out: a stopped, frozen or cut-off gateway) is critical.
 * - Indexes behind: Consul's catalog index now minus the index the gateway's snapshot reflects.
 *   Every Consul write moves the index, the gateways' own registrations included, so a small
 *   figure is normal; a growing one next to a critical check or a lag is the signal.
 */

export type FleetState = 'ok' | 'converging' | 'lagging' | 'critical' | 'invalid';
export type CheckHealth = 'passing' | 'warning' | 'critical';

export interface FleetGateway {
  /** Consul service ID. */
  readonly id: string;
  readonly node: string;
  /** host:port as registered. */
  readonly address: string;
  readonly gatewayId: string | null;
  readonly version: string | null;
  readonly snapshot: string | null;
  /** ISO time since when it runs `snapshot`. */
  readonly snapshotSince: string | null;
  readonly appliedIndex: number | null;
  /** Consul's catalog index now minus `appliedIndex`; null when either is unknown. */
  readonly indexesBehind: number | null;
  /** How long it has run another snapshot than the fleet's (0 when the same). */
  readonly lagSeconds: number | null;
  readonly admin: string | null;
  /** The worst of its checks (the gateway's TTL check and the node's). */
  readonly health: CheckHealth;
  readonly state: FleetState;
  readonly reasons: readonly string[];
}

export interface FleetView {
  readonly service: string;
  readonly consulIndex: number | null;
  /** The snapshot version most gateways run; null without a valid gateway. */
  readonly fleetSnapshot: string | null;
  readonly graceSeconds: number;
  readonly gateways: readonly FleetGateway[];
  readonly counts: Readonly<Record<FleetState, number>>;
}

/** Longest text kept from a foreign entry (Consul allows meta values of 512 characters). */
const SHOWN_MAX = 80;
/** A moment this far ahead of the reader's clock is not believed. */
const FUTURE_SLACK_MS = 24 * 3_600_000;

const text = z.string().max(4096);
const entrySchema = z.object({
  Node: z.object({ Node: text }).loose(),
  Service: z
    .object({
      ID: text,
      Address: text.optional().default(''),
      Port: z.number().int().min(0).max(65535).optional().default(0),
      Meta: z.record(z.string(), z.unknown()).nullish(),
    })
    .loose(),
  Checks: z
    .array(z.object({ Status: z.string().max(64) }).loose())
    .max(1000)
    .nullish(),
});

const metaSchema = z.object({
  [FLEET_META.version]: z.string().regex(/^[0-9A-Za-z.+-]{1,64}$/, 'not a release number'),
  [FLEET_META.gatewayId]: z.string().regex(GATEWAY_ID_PATTERN, 'not a gateway id'),
  [FLEET_META.snapshot]: z.string().regex(/^[0-9A-Za-z]{1,64}$/, 'not a snapshot version'),
  [FLEET_META.snapshotSince]: z.string().regex(/^\d{1,15}$/, 'not a time in epoch milliseconds').transform(Number),
  [FLEET_META.appliedIndex]: z
    .string()
    .regex(/^\d{1,16}$/, 'not a Consul index')
    .transform(Number)
    .refine((n) => Number.isSafeInteger(n), 'not a Consul index'),
  [FLEET_META.admin]: z.string().regex(/^[A-Za-z0-9.:[\]-]{1,300}$/, 'not a host:port'),
});

/** Control characters and overlong text from a foreign entry must not garble a terminal. */
export function shown(value: string): string {
  // eslint-disable-next-line no-control-regex
  const clean = value.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '?');
  return clean.length > SHOWN_MAX ? `${clean.slice(0, SHOWN_MAX - 1)}…` : clean;
}

function worstCheck(checks: readonly { Status: string }[]): CheckHealth {
  let worst: CheckHealth = 'passing';
  for (const c of checks) {
    if (c.Status === 'critical' || (c.Status !== 'passing' && c.Status !== 'warning')) return 'critical';
    if (c.Status === 'warning') worst = 'warning';
  }
  return worst;
}

interface Parsed {
  readonly base: Pick<FleetGateway, 'id' | 'node' | 'address' | 'health'>;
  readonly meta: z.output<typeof metaSchema> | null;
  readonly problems: readonly string[];
}

function parseEntry(raw: unknown, index: number): Parsed {
  const entry = entrySchema.safeParse(raw);
  if (!entry.success) {
    return { base: { id: `entry ${index + 1}`, node: '', address: '', health: 'critical' }, meta: null, problems: ['not a Consul health entry'] };
  }
  const { Node, Service, Checks } = entry.data;
  const host = Service.Address.includes(':') ? `[${Service.Address}]` : Service.Address;
  const base = { id: shown(Service.ID), node: shown(Node.Node), address: shown(`${host}:${Service.Port}`), health: worstCheck(Checks ?? []) };
  // Object.hasOwn only: a hostile entry may carry `__proto__` or `constructor` keys.
  const record: Record<string, unknown> = {};
  for (const key of Object.values(FLEET_META)) if (Service.Meta && Object.hasOwn(Service.Meta, key)) record[key] = Service.Meta[key];
  const meta = metaSchema.safeParse(record);
  if (meta.success) return { base, meta: meta.data, problems: [] };
  const problems = meta.error.issues.map((i) => `${String(i.path[0] ?? 'meta')}: ${/received undefined$/.test(i.message) ? 'missing' : i.message}`);
  return { base, meta: null, problems: [...new Set(problems)].slice(0, 6) };
}

export interface FleetInput {
  readonly service: string;
  /** `/v1/health/service/<service>` as Consul answered it. */
  readonly entries: unknown;
  /** X-Consul-Index of `/v1/catalog/services`, read at the same time; null when unknown. */
  readonly consulIndex: number | null;
  readonly now: number;
  readonly graceMs: number;
}

export function analyzeFleet(input: FleetInput): FleetView {
  const { now, graceMs } = input;
  const list = Array.isArray(input.entries) ? input.entries : [];
  const parsed = list.map(parseEntry).map((p) => {
    const since = p.meta?.[FLEET_META.snapshotSince];
    if (p.meta && since !== undefined && since > now + FUTURE_SLACK_MS) return { ...p, meta: null, problems: [`${FLEET_META.snapshotSince}: in the future`] };
    return p;
  });
  const valid = parsed.filter((p) => p.meta !== null);
  const voters = valid.filter((p) => p.base.health !== 'critical');
  const fleet = fleetSnapshot(voters.length > 0 ? voters : valid);
  const gateways = parsed.map((p): FleetGateway => {
    const m = p.meta;
    if (!m) {
      return {
        ...p.base,
        gatewayId: null,
        version: null,
        snapshot: null,
        snapshotSince: null,
        appliedIndex: null,
        indexesBehind: null,
        lagSeconds: null,
        admin: null,
        state: 'invalid',
        reasons: [`not a gateway's registration: ${p.problems.join('; ')}`],
      };
    }
    const snapshot = m[FLEET_META.snapshot];
    const since = m[FLEET_META.snapshotSince];
    const applied = m[FLEET_META.appliedIndex];
    const reasons: string[] = [];
    let lagMs = 0;
    if (fleet && snapshot !== fleet.version) {
      lagMs = Math.max(0, now - Math.max(since, fleet.since));
      reasons.push(`runs snapshot ${snapshot}, the fleet ${fleet.version}, for ${(lagMs / 1000).toFixed(1)} s`);
    }
    if (p.base.health === 'critical') reasons.push('its check is critical: no heartbeat within the TTL (stopped, frozen or cut off from its agent)');
    else if (p.base.health === 'warning') reasons.push('its check warns: not every data plane runs its snapshot yet');
    const state: FleetState = p.base.health === 'critical' ? 'critical' : lagMs > graceMs ? 'lagging' : lagMs > 0 || (fleet && snapshot !== fleet.version) ? 'converging' : 'ok';
    return {
      ...p.base,
      gatewayId: m[FLEET_META.gatewayId],
      version: m[FLEET_META.version],
      snapshot,
      snapshotSince: new Date(since).toISOString(),
      appliedIndex: applied,
      indexesBehind: input.consulIndex === null ? null : Math.max(0, input.consulIndex - applied),
      lagSeconds: Math.round(lagMs / 100) / 10,
      admin: m[FLEET_META.admin],
      state,
      reasons,
    };
  });
  const counts: Record<FleetState, number> = { ok: 0, converging: 0, lagging: 0, critical: 0, invalid: 0 };
  for (const g of gateways) counts[g.state] += 1;
  return { service: input.service, consulIndex: input.consulIndex, fleetSnapshot: fleet?.version ?? null, graceSeconds: graceMs / 1000, gateways, counts };
}

/** The version most gateways run; on a tie, the one whose earliest gateway took it last. */
function fleetSnapshot(members: readonly Parsed[]): { version: string; since: number } | null {
  const byVersion = new Map<string, { count: number; since: number }>();
  for (const p of members) {
    if (!p.meta) continue;
    const v = p.meta[FLEET_META.snapshot];
    const since = p.meta[FLEET_META.snapshotSince];
    const seen = byVersion.get(v);
    byVersion.set(v, seen ? { count: seen.count + 1, since: Math.min(seen.since, since) } : { count: 1, since });
  }
  let best: { version: string; count: number; since: number } | null = null;
  for (const [version, s] of byVersion) {
    if (!best || s.count > best.count || (s.count === best.count && (s.since > best.since || (s.since === best.since && version < best.version)))) best = { version, ...s };
  }
  return best && { version: best.version, since: best.since };
}
