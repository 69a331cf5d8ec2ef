/**
 * The admin API's writes and the reads that go to Consul (rollouts, fleet). The admin room does
 * not talk to Consul: the control plane supplies these (`controls/admin-controls.ts`), so the same
 * code as `cgw canary` and `cgw rollout` validates and writes, with check-and-set, and every
 * change comes back through the KV watch like any other.
 */
export interface ControlAnswer {
  readonly status: number;
  /** JSON to send: the result, or `{error: {code, message}}`. */
  readonly body: unknown;
}

export const ROLLOUT_ACTIONS = ['pause', 'resume', 'abort', 'promote'] as const;
export type RolloutActionName = (typeof ROLLOUT_ACTIONS)[number];

export interface AdminControls {
  /** `PUT /v1/canary/<service>`: the body as received (at most the admin's body bound). */
  putCanary(service: string, body: string, ifMatch: string | undefined, by: string): Promise<ControlAnswer>;
  /** `DELETE /v1/canary/<service>`. */
  deleteCanary(service: string, body: string, ifMatch: string | undefined, by: string): Promise<ControlAnswer>;
  /** `POST /v1/rollouts/<service>/<action>`. */
  rolloutAction(service: string, action: RolloutActionName, by: string): Promise<ControlAnswer>;
  /** `GET /v1/rollouts`: what `cgw rollout status` shows, for every rollout in KV. */
  rollouts(): Promise<ControlAnswer>;
  /** `GET /v1/fleet`: what `cgw fleet --json` shows. */
  fleet(): Promise<ControlAnswer>;
}
