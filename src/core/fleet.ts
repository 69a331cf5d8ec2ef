/**
 * What a gateway tells the fleet about itself through its Consul registration (service meta), and
 * what the registration loop reports to `cgw status`. Shared by the gateway, which writes the
 * meta (consul/self-registration.ts), and `cgw fleet`, which reads it back (state/fleet.ts).
 *
 * Consul service meta keys may hold only ASCII letters, digits, `-` and `_`, and values at most
 * 512 characters (Consul docs, "Services" → Meta); these keys and values stay well inside that.
 */

/** The gateway's release, published so an operator sees a mixed-version fleet (kept equal to package.json: a unit test checks). */
export const CGW_VERSION = '0.1.0';

export const FLEET_META = {
  /** The release of cgw the gateway runs. */
  version: 'cgw_version',
  /** `--gateway-id`. */
  gatewayId: 'cgw_gateway_id',
  /** The snapshot version in force: equal on gateways that see the same Consul state and documents. */
  snapshot: 'cgw_snapshot',
  /** Epoch milliseconds since when this gateway runs that snapshot version. */
  snapshotSince: 'cgw_snapshot_since',
  /** The highest Consul index (catalog or KV watch) whose answer the snapshot in force was built from. */
  appliedIndex: 'cgw_applied_index',
  /** Where its admin API listens (host:port). */
  admin: 'cgw_admin',
} as const;

/** The TTL of the check a gateway keeps passing; a stopped gateway reads critical after it. */
export const FLEET_CHECK_TTL_MS = 10_000;

/** What `cgw status` and `/v1/status` show of the registration loop. */
export interface RegistrationStatus {
  /** `disabled` (`--no-register`), `pending` (no snapshot yet), `registered`, `failing`, `deregistered` (drain). */
  readonly state: 'disabled' | 'pending' | 'registered' | 'failing' | 'deregistered';
  readonly service: string;
  readonly serviceId: string;
  readonly address: string;
  /** Failed agent calls since start. */
  readonly failures: number;
  readonly consecutiveFailures: number;
  readonly lastError: string | null;
  /** Epoch ms of the last agent call that succeeded (registration or check pass). */
  readonly lastSuccessAt: number | null;
  /** The meta last written to Consul. */
  readonly meta: Readonly<Record<string, string>> | null;
}
