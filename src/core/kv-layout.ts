import { hostname } from 'node:os';

/**
 * Where gateways keep what they write for each other (rollout figures, leader locks, the
 * configuration history, guards): beside the watched prefix, never under it. The gateway's KV
 * watch is recursive over `--kv-prefix`, and Consul answers a recursive read with every key under
 * it; a figures record written every few seconds under the prefix would make every gateway of the
 * fleet re-read every policy document that often.
 *
 * `gateway/` → `gateway-runtime/`; `teams/a/cgw/` → `teams/a/cgw-runtime/`; `` → `cgw-runtime/`.
 */
export function defaultRuntimePrefix(kvPrefix: string): string {
  const base = kvPrefix.replace(/\/+$/, '');
  return base === '' ? 'cgw-runtime/' : `${base}-runtime/`;
}

/** Keys under the runtime prefix, one function per kind so writers and readers agree. */
export const runtimeKeys = {
  /** One record per gateway per service under rollout: `<rt>figures/<service>/<gateway>`. */
  figures: (rt: string, service: string) => `${rt}figures/${service}/`,
  /** The session lock of the gateway that drives a service's rollout. */
  rolloutLock: (rt: string, service: string) => `${rt}locks/rollouts/${service}`,
  history: (rt: string) => `${rt}history/`,
  guards: (rt: string) => `${rt}guards/`,
} as const;

/**
 * Consul KV `flags` (an opaque number to Consul, 0 unless a writer sets it) that cgw's commands
 * put on the configuration they write, so the configuration history can say which tool made a
 * change. A value written by any other tool (consul kv put, the UI, Terraform) has flags 0 and is
 * listed as `kv`; a deletion carries no flags at all.
 */
export const KV_WRITERS = {
  'cgw policy push': 0x63677701,
  'cgw canary': 0x63677702,
  'cgw rollout': 0x63677703,
  'cgw rollback': 0x63677704,
  /** A gateway writing a guarded change's previous values back. */
  'cgw guard': 0x63677705,
  /** The admin API's controls (the dashboard): canary weights, rollout actions. */
  'cgw admin': 0x63677706,
} as const;

export type KvWriter = keyof typeof KV_WRITERS;

export function writerOfFlags(flags: number | undefined): KvWriter | undefined {
  if (!flags) return undefined;
  for (const [name, value] of Object.entries(KV_WRITERS)) if (value === flags) return name as KvWriter;
  return undefined;
}

/**
 * A gateway's name in the fleet: host name and proxy port, so a restarted gateway takes its old
 * place (its registration, its figures) instead of adding a ghost. Only the characters Consul
 * service IDs and KV key segments take safely.
 */
export function defaultGatewayId(listenPort: number, host = hostname()): string {
  const safeHost = host.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 190) || 'gateway';
  return `${safeHost}-${listenPort}`;
}

/** `--gateway-id` values: one KV key segment and a valid Consul service ID. */
export const GATEWAY_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$/;
