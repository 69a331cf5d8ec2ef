import { describeError } from '../core/errors.ts';
import { analyzeFleet } from '../state/fleet.ts';
import { KEY_SERVICE_NAME } from '../state/canary-tags.ts';
import type { ManualAction } from '../state/rollout-steps.ts';
import { parseCanaryDelete, parseCanaryPut } from './canary-request.ts';
import { clearCanaryWeights, writeCanaryWeights } from './canary-writes.ts';
import type { ConsulControlStore } from './consul-store.ts';
import { actOnRollout } from './rollout-actions.ts';
import { listRollouts, readWindowFigures, soakLeftMs } from './rollout-reads.ts';

/**
 * The admin API's controls (structurally `AdminControls` of admin/controls.ts): request bodies
 * checked by `canary-request.ts`, writes by the code `cgw canary` and `cgw rollout` share, reads
 * as `cgw rollout status` and `cgw fleet` make them. Reads that go to Consul are shared between
 * callers for a second, so any number of open dashboards costs Consul one read a second.
 */

interface Answer {
  readonly status: number;
  readonly body: unknown;
}

export interface AdminControlsOptions {
  readonly store: ConsulControlStore;
  /** Normalised, as the gateway watches it. */
  readonly kvPrefix: string;
  readonly runtimePrefix: string;
  /** The service the fleet registers under (`--register-service`). */
  readonly fleetService: string;
  readonly fleetGraceMs: number;
  readonly now?: () => number;
}

const SHARED_READ_MS = 1_000;

export function createAdminControls(o: AdminControlsOptions) {
  const now = o.now ?? Date.now;
  const rollouts = sharedRead(now, async () => {
    const stored = await listRollouts(o.store, o.kvPrefix);
    const at = new Date(now());
    return Promise.all(
      stored.map(async (s) => ({
        ...s,
        service: s.rollout?.service ?? s.key.slice(o.kvPrefix.length + 'rollouts/'.length),
        soakLeftSeconds: s.rollout?.state === 'progressing' ? Math.ceil(soakLeftMs(s.rollout, at) / 1000) : null,
        figures: s.rollout ? await readWindowFigures(o.store, o.runtimePrefix, s.rollout) : null,
      })),
    );
  });
  const fleet = sharedRead(now, async () => {
    // The index first: a gateway that applied a change between the two reads then shows 0 behind, never less.
    const consulIndex = await o.store.catalogIndex();
    const entries = await o.store.healthOf(o.fleetService);
    return analyzeFleet({ service: o.fleetService, entries, consulIndex, now: now(), graceMs: o.fleetGraceMs });
  });

  return {
    async putCanary(service: string, body: string, ifMatch: string | undefined): Promise<Answer> {
      const name = checkService(service);
      if (name) return name;
      const request = parseCanaryPut(body, ifMatch);
      if (!request.ok) return refusal(request);
      return consul(async () => {
        const done = await writeCanaryWeights(o.store, o.kvPrefix, service, request.weights, request.modifyIndex);
        return done.ok ? { status: 200, body: done } : refusal(done);
      });
    },
    async deleteCanary(service: string, body: string, ifMatch: string | undefined): Promise<Answer> {
      const name = checkService(service);
      if (name) return name;
      const request = parseCanaryDelete(body, ifMatch);
      if (!request.ok) return refusal(request);
      return consul(async () => {
        const done = await clearCanaryWeights(o.store, o.kvPrefix, service, request.modifyIndex);
        return done.ok ? { status: 200, body: done } : refusal(done);
      });
    },
    async rolloutAction(service: string, action: ManualAction, by: string): Promise<Answer> {
      const name = checkService(service);
      if (name) return name;
      return consul(async () => {
        const done = await actOnRollout(o.store, o.kvPrefix, service, action, { by, writer: 'cgw admin', now: new Date(now()) });
        if (done.ok) return { status: 200, body: done };
        const status = done.kind === 'not_found' ? 404 : done.kind === 'invalid' ? 422 : 409;
        return refusal({ status, code: done.kind === 'refused' ? 'rollout_refused' : done.kind === 'invalid' ? 'invalid_rollout' : done.kind, message: done.message });
      });
    },
    rollouts: (): Promise<Answer> => consul(async () => ({ status: 200, body: await rollouts() })),
    fleet: (): Promise<Answer> => consul(async () => ({ status: 200, body: await fleet() })),
  };
}

function checkService(service: string): Answer | undefined {
  return KEY_SERVICE_NAME.test(service) && service.length <= 256
    ? undefined
    : refusal({ status: 400, code: 'bad_request', message: `${JSON.stringify(service.slice(0, 80))} is not a valid service name (letters, digits, _ . -)` });
}

function refusal(r: { status: number; code: string; message: string }): Answer {
  return { status: r.status, body: { error: { code: r.code, message: r.message } } };
}

/** A Consul failure is the operator's to know about, in words: 502, nothing assumed written. */
async function consul(run: () => Promise<Answer>): Promise<Answer> {
  try {
    return await run();
  } catch (err) {
    return refusal({ status: 502, code: 'consul_unavailable', message: `Consul could not be asked: ${describeError(err)}` });
  }
}

/** One read at a time, its answer shared for `SHARED_READ_MS`; a failure is not kept. */
function sharedRead<T>(now: () => number, read: () => Promise<T>): () => Promise<T> {
  let last: { at: number; value: Promise<T> } | undefined;
  return () => {
    if (last && now() - last.at < SHARED_READ_MS) return last.value;
    const value = read();
    const entry = { at: now(), value };
    last = entry;
    value.catch(() => {
      if (last === entry) last = undefined;
    });
    return value;
  };
}
