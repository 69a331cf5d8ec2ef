import { fetchAdmin } from './admin-client.ts';
import { renderTable } from './table.ts';

/** Inspection commands: each reads one admin view and prints it as a table or as JSON. */
export interface InspectFlags {
  admin: string;
  json?: boolean;
}

type Row = Record<string, unknown>;

async function show(flags: InspectFlags, path: string, human: (body: never) => string): Promise<void> {
  const body = await fetchAdmin<unknown>(flags.admin, path);
  process.stdout.write(`${flags.json ? JSON.stringify(body, null, 2) : human(body as never)}\n`);
}

function ago(iso: number | string | null | undefined): string {
  if (iso === null || iso === undefined) return 'never';
  const ms = Date.now() - (typeof iso === 'number' ? iso : Date.parse(iso));
  return ms < 1000 ? 'just now' : `${Math.round(ms / 1000)}s ago`;
}

export function status(flags: InspectFlags): Promise<void> {
  return show(flags, '/v1/status', (s: Row & { snapshot: Row | null; consul: Row & { watchesFailing: Row[] }; problems: Row[] }) => {
    const lines = [
      `ready:        ${s.ready ? 'yes' : 'no (first sync with Consul not complete)'}`,
      `uptime:       ${String(s.uptimeSeconds)}s`,
      `snapshot:     ${s.snapshot ? `${String(s.snapshot.version)} applied ${ago(s.snapshot.appliedAt as string)} (${String(s.snapshot.services)} services, ${String(s.snapshot.routes)} routes)` : 'none yet'}`,
      `health mode:  ${String(s.consul.healthMode)} (${String(s.consul.routedServices)} routed services, budget ${String(s.consul.healthWatchBudget)} watches)`,
      `consul conns: ${String(s.consul.openConnections)}`,
      `leader:       ${s.consul.leaderKnown ? 'known' : 'NOT KNOWN (answers may be stale)'}, last contact ${String(s.consul.maxLastContactMs)} ms`,
      `watches:      ${String(s.consul.watches)} (${s.consul.watchesFailing.length} failing)`,
    ];
    for (const w of s.consul.watchesFailing) lines.push(`  failing: ${String(w.name)} x${String(w.consecutiveErrors)}: ${String(w.error)}`);
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
  });
}

export function services(flags: InspectFlags): Promise<void> {
  return show(flags, '/v1/services', (rows: Row[]) =>
    renderTable(
      ['SERVICE', 'HEALTHY', 'TOTAL', 'PICKER', 'ROUTES', 'CANARY'],
      rows.map((r) => [
        r.name,
        r.endpointsHealthy,
        r.endpointsTotal,
        r.picker,
        r.routes,
        r.canary ? Object.entries(r.canary as Record<string, number>).map(([t, w]) => `${t}=${w}`) : null,
      ]),
    ),
  );
}

export function endpoints(flags: InspectFlags, service: string): Promise<void> {
  return show(flags, `/v1/services/${encodeURIComponent(service)}/endpoints`, (rows: Row[]) =>
    renderTable(
      ['ID', 'ADDRESS', 'NODE', 'STATUS', 'WEIGHT', 'TRAFFIC', 'INFLIGHT', 'SUBSETS', 'TAGS'],
      rows.map((r) => [r.id, `${String(r.address)}:${String(r.port)}`, r.node, r.status, r.weight, r.receivesTraffic ? 'yes' : 'no', r.inflight, r.subsets, r.tags]),
    ),
  );
}

export function routes(flags: InspectFlags): Promise<void> {
  return show(flags, '/v1/routes', (rows: Row[]) =>
    renderTable(
      ['ROUTE', 'SERVICE', 'STRIP', 'HEALTHY', 'SOURCE', 'REFRESH', 'POLICIES', 'ORIGIN'],
      rows.map((r) => [r.route, r.service, r.strip, r.endpointsHealthy, r.source, r.refresh, r.policies, r.origin]),
    ),
  );
}
