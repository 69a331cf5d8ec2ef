import { z } from 'zod';
import type { ConsulClient } from './client.ts';

/**
 * The datacenter of the agent the gateway talks to, for `$DC` in route tags. fabio reads it the
 * same way, once at start (registry/consul/backend.go: `Agent().Self()`, `Config.Datacenter`).
 * Read by the control plane at start and retried in the background; the request path never
 * waits for it, and a build without it reports the `$DC` tags as problems.
 */
const agentSelfSchema = z.object({
  Config: z.object({
    // Consul's own rule for datacenter names is looser; this is what may appear in a route.
    Datacenter: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'not a datacenter name (letters, digits, _ . -)'),
  }),
});

export type DatacenterRead = { readonly ok: true; readonly datacenter: string } | { readonly ok: false; readonly error: string };

export async function readAgentDatacenter(client: ConsulClient, timeoutMs: number): Promise<DatacenterRead> {
  try {
    const res = await client.get('/v1/agent/self', {}, { timeoutMs, signal: AbortSignal.timeout(timeoutMs) });
    if (res.status !== 200) return { ok: false, error: `GET /v1/agent/self answered ${res.status}${res.status === 403 ? ' (the token needs agent:read)' : ''}` };
    const parsed = agentSelfSchema.safeParse(res.body);
    if (!parsed.success) return { ok: false, error: `GET /v1/agent/self: Config.Datacenter ${parsed.error.issues[0]?.message ?? 'is missing'}` };
    // As written: fabio lower-cases the host after expanding it, never the path (tags.ts does too).
    return { ok: true, datacenter: parsed.data.Config.Datacenter };
  } catch (err) {
    return { ok: false, error: `GET /v1/agent/self failed: ${(err as Error).message}` };
  }
}
