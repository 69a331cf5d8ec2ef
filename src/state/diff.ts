import { own } from '../core/own.ts';
import { changedServices, type Snapshot } from './snapshot.ts';

/** What changed between two snapshots, for the change log line (operators read these). */
export interface SnapshotDiff {
  readonly servicesAdded: string[];
  readonly servicesRemoved: string[];
  readonly endpointsAdded: string[];
  readonly endpointsRemoved: string[];
  readonly endpointsChanged: string[];
  readonly routesAdded: string[];
  readonly routesRemoved: string[];
  readonly canaryChanged: string[];
  readonly problemsAdded: string[];
  readonly problemsResolved: string[];
  /** Documents whose version in force changed, as `id: old -> new` (`none` when absent). */
  readonly policiesChanged: string[];
  /** Consumer ids with ModifyIndex; never key hashes. */
  readonly consumersAdded: string[];
  readonly consumersRemoved: string[];
  readonly consumersChanged: string[];
}

/**
 * Work follows the change: services that are the same object in both snapshots (incremental
 * builds reuse them) are not looked into, nor are routes, problems or documents when they are.
 */
export function diffSnapshots(prev: Snapshot | undefined, next: Snapshot): SnapshotDiff {
  const prevServices = prev?.services ?? {};
  const known = changedServices(prev, next);
  const touched = known ? [...known] : Object.keys(next.services).filter((n) => own(prevServices, n) !== own(next.services, n));
  if (!known) for (const n of Object.keys(prevServices)) if (!Object.hasOwn(next.services, n)) touched.push(n);
  const endpointLines = (s: Snapshot['services']): Map<string, string> => {
    const out = new Map<string, string>();
    for (const name of touched) {
      const svc = own(s, name);
      if (svc) for (const e of svc.endpoints) out.set(`${svc.name}/${e.id}@${e.key}`, `${e.status} w=${e.weight}`);
    }
    return out;
  };
  const before = endpointLines(prevServices);
  const after = endpointLines(next.services);
  const sameRoutes = prev?.routes === next.routes;
  const routeIds = (snap: Snapshot | undefined): Set<string> =>
    sameRoutes ? new Set() : new Set((snap?.routes ?? []).map((r) => `${r.id} -> ${r.service}${r.strip ? ` strip=${r.strip}` : ''}`));
  const sameProblems = prev?.problems === next.problems;
  const problemLines = (snap: Snapshot | undefined): Set<string> =>
    sameProblems ? new Set() : new Set((snap?.problems ?? []).map((p) => `${p.kind} ${p.subject}: ${p.message}`));
  const canaryText = (snap: Snapshot['services'][string] | undefined): string => JSON.stringify(snap?.canary?.subsets ?? null);
  const samePolicies = prev?.policies === next.policies;
  const versions = (snap: Snapshot | undefined): Map<string, string> => (samePolicies ? new Map() : new Map((snap?.policies.documents ?? []).map((d) => [d.id, d.version])));
  const beforeDocs = versions(prev);
  const afterDocs = versions(next);
  const prevConsumers = samePolicies ? {} : (prev?.policies.consumers ?? {});
  const nextConsumers = samePolicies ? {} : next.policies.consumers;

  return {
    servicesAdded: touched.filter((n) => !Object.hasOwn(prevServices, n)).sort(),
    servicesRemoved: touched.filter((n) => !Object.hasOwn(next.services, n)).sort(),
    endpointsAdded: minus([...after.keys()], [...before.keys()]),
    endpointsRemoved: minus([...before.keys()], [...after.keys()]),
    endpointsChanged: [...after]
      .filter(([k, v]) => before.has(k) && before.get(k) !== v)
      .map(([k, v]) => `${k}: ${before.get(k)} -> ${v}`),
    routesAdded: minus([...routeIds(next)], [...routeIds(prev)]),
    routesRemoved: minus([...routeIds(prev)], [...routeIds(next)]),
    // own(): a service or consumer may be named `constructor`; prev[name] would be Object itself.
    canaryChanged: touched.filter((n) => Object.hasOwn(next.services, n) && canaryText(own(prevServices, n)) !== canaryText(own(next.services, n))),
    problemsAdded: minus([...problemLines(next)], [...problemLines(prev)]),
    problemsResolved: minus([...problemLines(prev)], [...problemLines(next)]),
    policiesChanged: [...new Set([...beforeDocs.keys(), ...afterDocs.keys()])]
      .filter((id) => beforeDocs.get(id) !== afterDocs.get(id))
      .sort()
      .map((id) => `${id}: ${beforeDocs.get(id) ?? 'none'} -> ${afterDocs.get(id) ?? 'none'}`),
    consumersAdded: minus(Object.keys(nextConsumers), Object.keys(prevConsumers)),
    consumersRemoved: minus(Object.keys(prevConsumers), Object.keys(nextConsumers)),
    consumersChanged: Object.keys(nextConsumers)
      .filter((id) => {
        const before = own(prevConsumers, id);
        return before !== undefined && before.modifyIndex !== own(nextConsumers, id)?.modifyIndex;
      })
      .sort()
      .map((id) => `${id}@${own(nextConsumers, id)?.modifyIndex ?? 0}`),
  };
}

/** Only the non-empty fields, so a log line says exactly what moved. */
export function compactDiff(diff: SnapshotDiff): Partial<SnapshotDiff> {
  return Object.fromEntries(Object.entries(diff).filter(([, v]) => (v as string[]).length > 0));
}

function minus(a: string[], b: string[]): string[] {
  const set = new Set(b);
  return a.filter((x) => !set.has(x)).sort();
}
