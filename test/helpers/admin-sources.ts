/**
 * What the admin server reads, for unit tests that run it without a gateway: nothing published,
 * ready, an idle Consul supervisor, no data plane and no workers. Each test overrides what it
 * looks at.
 */
import type { AdminSources } from '../../src/admin/views.ts';

export function stubAdminSources(overrides: Partial<Record<keyof AdminSources, unknown>> = {}): AdminSources {
  return {
    startedAt: Date.now(),
    published: () => undefined,
    ready: () => true,
    discovery: () => ({ mode: 'watch', healthWatchBudget: 0, routedServices: 0, openConnections: 0, watches: [], bulk: null, refusing: null }),
    discoveryProblems: () => [],
    settings: {},
    dataPlane: () => Promise.resolve(undefined),
    workers: () => null,
    buildFailure: () => null,
    ...overrides,
  } as unknown as AdminSources;
}
