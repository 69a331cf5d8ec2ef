import { CliError, fetchAdmin } from './admin-client.ts';
import { renderTable } from './table.ts';

/** Inspection commands: each reads one admin view and prints it as a table or as JSON. */
export interface InspectFlags {
  /** The admin API as resolveAdminAddress returns it (`http://host:port`). */
  admin: string;
  json?: boolean;
}

type Row = Record<string, unknown>;

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** The admin views print as lists, except /v1/status; anything else is not a cgw admin API. */
/** The admin paths that answer an object, and how to recognise it; every other answers a list. */
const OBJECT_SHAPES: Record<string, { what: string; ok: (body: object) => boolean }> = {
  '/v1/status': { what: 'a gateway status', ok: (b) => 'ready' in b && Array.isArray((b as { consul?: { watchesFailing?: unknown } }).consul?.watchesFailing) },
  '/v1/certs': { what: 'a certificate list', ok: (b) => Array.isArray((b as { certificates?: unknown }).certificates) && Array.isArray((b as { rejected?: unknown }).rejected) },
};

function checkShape(flags: InspectFlags, path: string, body: unknown): void {
  const shape = Object.hasOwn(OBJECT_SHAPES, path) ? OBJECT_SHAPES[path] : undefined;
  const ok = shape ? typeof body === 'object' && body !== null && shape.ok(body) : Array.isArray(body);
  if (!ok) throw new CliError(`${flags.admin} is not a cgw admin API: GET ${path} did not answer ${shape?.what ?? 'a JSON list'}`);
}

async function show(flags: InspectFlags, path: string, human: (body: never) => string): Promise<unknown> {
  const body = await fetchAdmin<unknown>(flags.admin, path);
  checkShape(flags, path, body);
  if (Array.isArray(body) && body.length === 0 && !(await isReady(flags))) {
    // An empty list from a gateway without a snapshot says nothing about what is configured.
    process.stderr.write(`cgw: the gateway at ${flags.admin} is not ready (no snapshot in force yet): the list is empty because nothing is loaded yet\n`);
    print(flags.json ? '[]' : 'none: the gateway is not ready yet (see cgw status)');
    return body;
  }
  print(flags.json ? JSON.stringify(body, null, 2) : human(body as never));
  return body;
}

async function isReady(flags: InspectFlags): Promise<boolean> {
  const s = await fetchAdmin<unknown>(flags.admin, '/v1/status');
  checkShape(flags, '/v1/status', s);
  return (s as { ready?: unknown }).ready === true;
}

function ago(iso: number | string | null | undefined): string {
  if (iso === null || iso === undefined) return 'never';
  const ms = Date.now() - (typeof iso === 'number' ? iso : Date.parse(iso));
  return ms < 1000 ? 'just now' : `${Math.round(ms / 1000)}s ago`;
}

type StatusBody = Row & {
  snapshot: Row | null;
  consul: Row & { watchesFailing: Row[]; leaderKnown?: boolean | null; maxLastContactMs?: number | null };
  problems: Row[];
  rateLimiter?: { backend?: string } | null;
  policies?: { documents: number; rejected: number; consumers: number } | null;
  circuitsNotClosed?: string[];
  workers?: { id: number; pid: number | null; version: string | null; current: boolean; restarts: number }[] | null;
  limits?: { maxConnections: number | null; openConnections: number; connectionsRefused: { count: number; lastAt: string | null }; upstreamBusy: Record<string, { count: number }> } | null;
  tls?: TlsBody | null;
  websocket?: { open: number; byRoute: Record<string, number> } | null;
  registration?: { state: string; service: string; serviceId: string; address: string; failures: number; consecutiveFailures: number; lastError: string | null } | null;
  stateFile?: StateFileBody | null;
};

interface StateFileBody {
  path: string;
  inForce: boolean;
  staleSince: string | null;
  file: { writtenAt: string; snapshotVersion: string } | null;
  refused: { reason: string; error: string } | null;
  writable: boolean;
  lastWrite: { at: string; snapshotVersion: string; outcome: string; error: string | null } | null;
}

/** `state file: SERVING ...` while the file's snapshot is in force, else where it stands. */
function stateFileLines(f: StateFileBody): string[] {
  if (f.inForce) {
    return [`state file:   SERVING the state file written at ${f.file?.writtenAt ?? '?'} (snapshot ${f.file?.snapshotVersion ?? '?'}), Consul not reached; STALE since ${f.staleSince ?? '?'} (${f.path})`];
  }
  const lines: string[] = [];
  if (f.refused) lines.push(`state file:   REFUSED ${f.path} (${f.refused.reason}): ${f.refused.error}; not served${f.writable ? '' : '; never overwritten (not this gateway\'s)'}`);
  const w = f.lastWrite;
  const written = w === null ? 'not written yet' : w.outcome === 'written' ? `written ${ago(w.at)} (snapshot ${w.snapshotVersion})` : `WRITE FAILED ${ago(w.at)}: ${w.error ?? ''}`;
  if (!f.refused || w !== null) lines.push(`state file:   ${f.path}: ${written}`);
  return lines;
}

/** `registered: cgw as cgw-web1-8080 (127.0.0.1:8080)`, or why not. */
function registrationLine(r: NonNullable<StatusBody['registration']>): string {
  const as = `${r.service} as ${r.serviceId || '?'} (${r.address})`;
  if (r.state === 'disabled') return 'registered:   no (--no-register: cgw fleet does not list this gateway)';
  if (r.state === 'pending') return `registered:   not yet (after the first snapshot): ${as}`;
  if (r.state === 'failing') return `registered:   FAILING x${r.consecutiveFailures} (${r.failures} failures in all; retrying, serving is not affected): ${r.lastError ?? ''}`;
  return `registered:   ${r.state === 'registered' ? 'yes' : r.state}: ${as}`;
}

interface TlsBody {
  certificates: { name: string; names: string[]; notAfter: string; source: string }[];
  rejected: { name: string; source: string; error: string; keptLastGood: boolean }[];
  default: string | null;
  clientAuth?: { mode: string; caFile: string; authorities: { subject: string; notAfter: string }[]; refused?: { error: string } };
}

/** `tls: 2 certificates (default: site), 1 REFUSED`, then one line per refused source. */
function tlsLines(t: TlsBody): string[] {
  const lines = [`tls:          ${t.certificates.length} certificate${t.certificates.length === 1 ? '' : 's'} (default: ${t.default ?? 'NONE: handshakes without a matching name fail'})${t.rejected.length > 0 ? `, ${t.rejected.length} REFUSED` : ''}`];
  for (const r of t.rejected) lines.push(`  refused: ${r.source}: ${r.error}${r.keptLastGood ? ' (last good kept)' : ''}`);
  const ca = t.clientAuth;
  if (ca) {
    lines.push(`client certs: ${ca.mode} (${ca.authorities.length} CA${ca.authorities.length === 1 ? '' : 's'} from ${ca.caFile})`);
    for (const a of ca.authorities) lines.push(`  ca: ${a.subject} (until ${a.notAfter})`);
    if (ca.refused) lines.push(`  REFUSED: ${ca.refused.error} (the CAs above stay in force)`);
  }
  return lines;
}

/** `workers: 2 (2 on the snapshot in force, 1 restart)`, then one line per worker that is behind. */
function workerLines(workers: NonNullable<StatusBody['workers']>): string[] {
  const current = workers.filter((w) => w.current).length;
  const restarts = workers.reduce((n, w) => n + w.restarts, 0);
  const lines = [`workers:      ${workers.length} (${current} on the snapshot in force${restarts > 0 ? `, ${restarts} restart${restarts === 1 ? '' : 's'}` : ''})`];
  for (const w of workers) if (!w.current) lines.push(`  worker ${w.id} (pid ${w.pid ?? '?'}): ${w.version === null ? 'STARTING' : `BEHIND on ${w.version}`}`);
  return lines;
}

function limitsLine(l: NonNullable<StatusBody['limits']>): string {
  const busy = Object.entries(l.upstreamBusy).filter(([, h]) => h.count > 0);
  const parts = [`${l.openConnections}/${l.maxConnections ?? 'unlimited'} connections`];
  if (l.connectionsRefused.count > 0) parts.push(`${l.connectionsRefused.count} REFUSED at the cap (last ${l.connectionsRefused.lastAt ?? '?'})`);
  if (busy.length > 0) parts.push(`upstream_busy: ${busy.map(([s, h]) => `${s} x${h.count}`).join(', ')}`);
  return `limits:       ${parts.join('; ')}`;
}

/** `websocket:    3 open (/chat 2, /feed 1)` */
function websocketLine(w: NonNullable<StatusBody['websocket']>): string {
  const routes = Object.entries(w.byRoute).sort(([a], [b]) => a.localeCompare(b));
  return `websocket:    ${w.open} open${routes.length > 0 ? ` (${routes.map(([route, n]) => `${route} ${n}`).join(', ')})` : ''}`;
}

const RATE_LIMITER_BACKENDS: Record<string, string> = {
  redis: 'redis (shared by every gateway)',
  local: 'LOCAL FALLBACK (Redis unreachable: failureMode open limits count per gateway, closed ones answer 503)',
  none: 'local (no --redis: each gateway counts on its own)',
};

function rateLimiterText(r: { backend?: string } | null): string {
  const backend = r?.backend ?? 'unknown';
  return RATE_LIMITER_BACKENDS[backend] ?? backend;
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;

function policiesText(p: { documents: number; rejected: number; consumers: number } | null): string {
  if (!p) return 'none yet (no snapshot)';
  const rejected = p.rejected === 0 ? '0 rejected' : `${p.rejected} REJECTED (see cgw policies)`;
  return `${plural(p.documents, 'document')} in force, ${rejected}, ${plural(p.consumers, 'consumer')}`;
}

function leaderText(c: StatusBody['consul']): string {
  const ms = typeof c.maxLastContactMs === 'number' ? `${c.maxLastContactMs} ms` : 'unknown';
  if (c.leaderKnown === true) return `known, last contact ${ms}`;
  if (c.leaderKnown === false) return `NOT KNOWN (answers may be stale), last contact ${ms}`;
  return allWatchesFailing(c) ? 'unknown (Consul unreachable: every watch is failing)' : 'unknown (no answer from Consul carried it yet)';
}

function allWatchesFailing(c: StatusBody['consul']): boolean {
  const watches = Number(c.watches);
  return watches > 0 && c.watchesFailing.length >= watches;
}

/** Prints the status; a gateway that is not ready makes the command exit 1 (README, `cgw status`). */
export async function status(flags: InspectFlags): Promise<void> {
  const body = (await show(flags, '/v1/status', (s: StatusBody) => {
    const lines = [
      `ready:        ${s.ready ? (s.stateFile?.inForce ? 'yes, STALE (serving the state file; Consul not reached)' : 'yes') : 'NO (first sync with Consul not complete; the proxy answers 503 not_ready)'}`,
      `uptime:       ${String(s.uptimeSeconds)}s`,
      `snapshot:     ${s.snapshot ? `${String(s.snapshot.version)} applied ${ago(s.snapshot.appliedAt as string)} (${String(s.snapshot.services)} services, ${String(s.snapshot.routes)} routes)` : 'none yet'}`,
      `health mode:  ${String(s.consul.healthMode)} (${String(s.consul.routedServices)} routed services, budget ${String(s.consul.healthWatchBudget)} watches)`,
      `consul conns: ${String(s.consul.openConnections)}`,
    ];
    if (s.stateFile) lines.push(...stateFileLines(s.stateFile));
    if (allWatchesFailing(s.consul)) {
      lines.push(`consul:       UNREACHABLE (every watch is failing${s.snapshot ? '; routing continues from the last snapshot' : ''})`);
    }
    lines.push(
      `leader:       ${leaderText(s.consul)}`,
      `watches:      ${String(s.consul.watches)} (${s.consul.watchesFailing.length} failing)`,
    );
    for (const w of s.consul.watchesFailing) lines.push(`  failing: ${String(w.name)} x${String(w.consecutiveErrors)}: ${String(w.error)}`);
    if (s.consul.refusing) lines.push(`refusing:     CONSUL REFUSES CONNECTIONS since ${ago((s.consul.refusing as Row).since as string)} (${String((s.consul.refusing as Row).count)} refusals; per-client connection limit, http_max_conns_per_client?)`);
    // Optional: an older gateway's /v1/status has none of these.
    if (s.rateLimiter !== undefined) lines.push(`rate limiter: ${rateLimiterText(s.rateLimiter)}`);
    if (s.policies !== undefined) lines.push(`policies:     ${policiesText(s.policies)}`);
    if (s.circuitsNotClosed !== undefined) {
      lines.push(`circuits:     ${s.circuitsNotClosed.length === 0 ? 'all closed' : `NOT CLOSED: ${s.circuitsNotClosed.join(', ')}`}`);
    }
    if (s.limits) lines.push(limitsLine(s.limits));
    if (s.tls) lines.push(...tlsLines(s.tls));
    if (s.websocket) lines.push(websocketLine(s.websocket));
    if (s.workers) lines.push(...workerLines(s.workers));
    if (s.registration) lines.push(registrationLine(s.registration));
    lines.push(`problems:     ${s.problems.length === 0 ? 'none' : String(s.problems.length)}`);
    if (s.problems.length > 0) {
      lines.push(
        renderTable(
          ['KIND', 'SUBJECT', 'KEPT LAST GOOD', 'PROBLEM'],
          s.problems.map((p) => [p.kind, p.subject, p.keptLastGood ? 'yes' : 'no', p.message]),
        )
          .split('\n')
          .map((l) => `  ${l}`)
          .join('\n'),
      );
    }
    return lines.join('\n');
  })) as { ready?: unknown } | null;
  if (body?.ready !== true) throw new NotReadyError(flags.admin);
}

/** `cgw status` exits 1 for a gateway that is not ready; the status itself is already printed. */
export class NotReadyError extends CliError {
  constructor(admin: string) {
    super(`the gateway at ${admin} is not ready: its first sync with Consul is not complete`, 1);
  }
}

export function certs(flags: InspectFlags): Promise<unknown> {
  return show(flags, '/v1/certs', (t: TlsBody) => {
    const table = renderTable(
      ['NAME', 'SERVES', 'NOT AFTER', 'SOURCE'],
      t.certificates.map((c) => [c.name === t.default ? `${c.name} (default)` : c.name, c.names.join(','), c.notAfter, c.source]),
    );
    const refused = t.rejected.map((r) => `REFUSED ${r.source}: ${r.error}${r.keptLastGood ? ' (last good kept)' : ''}`);
    return [t.certificates.length > 0 ? table : 'no certificate in force (no --listen-tls, or none loaded)', ...refused].join('\n');
  });
}

export function services(flags: InspectFlags): Promise<unknown> {
  return show(flags, '/v1/services', (rows: Row[]) =>
    renderTable(
      ['SERVICE', 'KIND', 'DISCOVERY', 'HEALTHY', 'TOTAL', 'EJECTED', 'CIRCUIT', 'PICKER', 'ROUTES', 'CANARY'],
      rows.map((r) => [
        r.name,
        r.kind,
        r.discovery,
        r.endpointsHealthy,
        r.endpointsTotal,
        r.ejected ?? 0,
        circuitText(r.circuit as CircuitStatus | null | undefined),
        r.picker,
        r.routes,
        r.canary ? Object.entries(r.canary as Record<string, number>).map(([t, w]) => `${t}=${w}`) : null,
      ]),
    ),
  );
}

export function endpoints(flags: InspectFlags, service: string): Promise<unknown> {
  return show(flags, `/v1/services/${encodeURIComponent(service)}/endpoints`, (rows: Row[]) =>
    renderTable(
      ['ID', 'ADDRESS', 'NODE', 'STATUS', 'WEIGHT', 'TRAFFIC', 'EJECTED', 'FAILS', 'INFLIGHT', 'SUBSETS', 'TAGS'],
      rows.map((r) => [
        r.id,
        `${String(r.address)}:${String(r.port)}`,
        r.node,
        r.status,
        r.weight,
        r.receivesTraffic ? 'yes' : 'no',
        r.ejected ? `yes until ${clockTime(r.ejectedUntil as string | null)}` : 'no',
        r.consecutiveFailures ?? 0,
        r.inflight,
        r.subsets,
        r.tags,
      ]),
    ),
  );
}

interface CircuitStatus {
  enabled: boolean;
  state: string;
  retryAfterMs?: number;
}

/** closed / open / half_open, `-` when the service has no breaker (none built yet, or disabled by policy). */
export function circuitText(c: CircuitStatus | null | undefined): string {
  if (!c || !c.enabled) return '-';
  if (c.state === 'open' && c.retryAfterMs) return `open (probe in ${Math.ceil(c.retryAfterMs / 1000)}s)`;
  return c.state;
}

/** Local wall-clock HH:MM:SS: an ejection lasts seconds to minutes, the date adds nothing. */
export function clockTime(iso: string | null | undefined): string {
  if (!iso) return '?';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '?';
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

export function routes(flags: InspectFlags): Promise<unknown> {
  return show(flags, '/v1/routes', (rows: Row[]) =>
    renderTable(
      ['ROUTE', 'SERVICE', 'STRIP', 'HEALTHY', 'SOURCE', 'REFRESH', 'POLICIES', 'ORIGIN'],
      rows.map((r) => [r.route, r.service, r.strip, r.endpointsHealthy, r.source, r.refresh, r.policies, r.origin]),
    ),
  );
}

interface PolicyRow {
  id: string;
  kind: string;
  applied: boolean;
  target: string | null;
  version: string | null;
  source: string | null;
  modifyIndex: number | null;
  overriddenFile: string | null;
  rejected: { source: string; error: string } | null;
  conflict: string | null;
}

const REJECTED_WIDTH = 70;

function truncate(text: string, width: number): string {
  const one = text.replace(/\s+/g, ' ');
  return one.length <= width ? one : `${one.slice(0, width - 1)}…`;
}

/** `/v1/policies`: every document, where the version in force comes from, and what was refused (with the full error below the table). */
export function policies(flags: InspectFlags): Promise<unknown> {
  return show(flags, '/v1/policies', (rows: PolicyRow[]) => {
    if (rows.length === 0) return 'no policy or route documents (none in --policies, none in KV)';
    const table = renderTable(
      ['ID', 'KIND', 'TARGET', 'SOURCE', 'VERSION', 'APPLIED', 'REJECTED'],
      rows.map((r) => [
        r.id,
        r.kind,
        r.target,
        r.source === null ? null : `${r.source}${r.modifyIndex !== null ? `@${r.modifyIndex}` : ''}`,
        r.version,
        r.applied ? 'yes' : 'NO',
        r.rejected ? `REJECTED ${truncate(`${r.rejected.source}: ${r.rejected.error}`, REJECTED_WIDTH)}` : r.conflict ? `CONFLICT ${truncate(r.conflict, REJECTED_WIDTH)}` : null,
      ]),
    );
    const refused = rows.filter((r) => r.rejected || r.conflict);
    if (refused.length === 0) return table;
    const lines = [table, '', `${refused.length} document${refused.length === 1 ? '' : 's'} refused:`];
    for (const r of refused) {
      if (r.rejected) {
        lines.push(`  ${r.id}: ${r.rejected.source} rejected: ${r.rejected.error}`);
        lines.push(`    ${r.applied ? `still in force: the last good version ${r.version ?? ''} from ${r.source ?? '?'}` : 'nothing in force for this id'}`);
      } else if (r.conflict) {
        lines.push(`  ${r.id}: ${r.conflict}`);
      }
    }
    return lines.join('\n');
  });
}
