import { parseDuration } from '../core/duration.ts';
import { analyzeFleet, type FleetView } from '../state/fleet.ts';
import { CliError } from './admin-client.ts';
import type { FleetReader } from './consul-kv.ts';
import { renderTable } from './table.ts';

/**
 * `cgw fleet`: every gateway registered under the service name (`cgw start --register-service`),
 * read from Consul, which sees them all (the admin API of one gateway sees only itself).
 */

export interface FleetFlags {
  readonly service: string;
  readonly grace: string;
}

/** The same rule as `cgw start --register-service`. */
const SERVICE_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const GRACE_MAX_MS = 600_000;

export function checkFleetFlags(flags: FleetFlags): { service: string; graceMs: number } {
  if (!SERVICE_NAME.test(flags.service)) throw new CliError(`--service: "${flags.service.slice(0, 80)}" is not a service name (1-63 letters, digits and inner -)`, 2);
  const graceMs = parseDuration(flags.grace);
  if (graceMs === undefined || graceMs > GRACE_MAX_MS) throw new CliError(`--grace: "${flags.grace.slice(0, 40)}" is not a duration up to 10m (e.g. 5s)`, 2);
  return { service: flags.service, graceMs };
}

export async function readFleet(reader: FleetReader, flags: FleetFlags, now: () => number = Date.now): Promise<FleetView> {
  const { service, graceMs } = checkFleetFlags(flags);
  // The index first: a gateway that applied a change between the two reads then shows 0 behind, never less.
  const consulIndex = await reader.catalogIndex();
  const entries = await reader.healthOf(service);
  return analyzeFleet({ service, entries, consulIndex, now: now(), graceMs });
}

/** Exit 1 when a gateway lags or is critical, or none is registered: `cgw fleet && deploy` stops then. */
export function fleetHealthy(view: FleetView): boolean {
  return view.counts.lagging === 0 && view.counts.critical === 0 && view.gateways.length > view.counts.invalid;
}

export function renderFleet(view: FleetView): string {
  const valid = view.gateways.length - view.counts.invalid;
  if (view.gateways.length === 0) return `no gateway registered under service ${view.service} (gateways started with --no-register, or another --register-service?)`;
  const table = renderTable(
    ['GATEWAY', 'ADDRESS', 'VERSION', 'SNAPSHOT', 'APPLIED', 'BEHIND', 'LAG', 'HEALTH', 'STATE'],
    view.gateways.map((g) => [
      g.gatewayId ?? g.id,
      g.address,
      g.version ?? '-',
      g.snapshot ?? '-',
      g.appliedIndex ?? '-',
      g.indexesBehind ?? '-',
      g.lagSeconds === null ? '-' : `${g.lagSeconds.toFixed(1)}s`,
      g.health,
      g.state.toUpperCase(),
    ]),
  );
  const lines = [
    `fleet: ${valid} gateway${valid === 1 ? '' : 's'} under service ${view.service}; snapshot ${view.fleetSnapshot ?? 'none'}; Consul catalog index ${view.consulIndex ?? 'unknown'}`,
    table,
  ];
  for (const g of view.gateways) for (const r of g.reasons) lines.push(`  ${g.gatewayId ?? g.id}: ${r}`);
  const flagged = view.counts.lagging + view.counts.critical;
  if (flagged > 0) lines.push(`${flagged} gateway${flagged === 1 ? '' : 's'} lagging or critical (a different snapshot for more than ${view.graceSeconds}s, or no heartbeat within the TTL)`);
  return lines.join('\n');
}
