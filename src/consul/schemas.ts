import { z } from 'zod';
import type { CatalogView, HealthStatus, KvEntry, ServiceInstance } from '../core/types.ts';
import { setOwn } from '../core/own.ts';

/**
 * zod schemas of the Consul JSON the watches read. Consul is outside input too: a proxy in front of
 * it, an ACL change or a version difference can hand us something else, and a watch must then fail
 * loudly (and keep its last view) instead of publishing garbage.
 */

const catalogTags = z.array(z.string()).nullable();

/**
 * Service name → tags. Not z.record: it drops a key named `__proto__`, and a service of that
 * name must reach the snapshot build to be reported as unroutable.
 */
export const catalogServicesSchema = z.custom<Record<string, unknown>>((v) => v !== null && typeof v === 'object' && !Array.isArray(v), 'expected an object of service names').transform((rec, ctx): CatalogView => {
  const out: Record<string, readonly string[]> = {};
  for (const name of Object.keys(rec).sort()) {
    const tags = catalogTags.safeParse(rec[name]);
    if (!tags.success) {
      ctx.issues.push({ code: 'custom', path: [name], message: `tags of service ${JSON.stringify(name)}: ${tags.error.issues[0]?.message ?? 'invalid'}`, input: rec[name] });
      return z.NEVER;
    }
    setOwn(out, name, [...(tags.data ?? [])].sort());
  }
  return out;
});

/** Unknown statuses count as critical: never route to something we cannot vouch for. */
const checkStatus = z.string().transform((s): HealthStatus => (s === 'passing' || s === 'warning' ? s : 'critical'));

/**
 * Per instance, only the shape is checked: Consul stores any port (-1, 70000) and any address
 * string, and one such instance must not fail the read of its whole service. The snapshot build
 * skips and reports instances that cannot be dialled (state/endpoints.ts) and ignores weights
 * that are not positive.
 */
const healthEntrySchema = z.object({
  Node: z.object({ Node: z.string(), Address: z.string().optional().default('') }),
  Service: z.object({
    ID: z.string(),
    Service: z.string(),
    Address: z.string().nullable().optional().default(''),
    Port: z.number(),
    Tags: z.array(z.string()).nullable().optional(),
    Weights: z.object({ Passing: z.number(), Warning: z.number() }).nullable().optional(),
  }),
  Checks: z
    .array(z.object({ CheckID: z.string(), Status: checkStatus, ServiceID: z.string().optional().default('') }))
    .nullable()
    .optional(),
});

export const healthServiceSchema = z.array(healthEntrySchema).transform((entries): ServiceInstance[] =>
  entries
    .map((e) => ({
      id: e.Service.ID,
      service: e.Service.Service,
      node: e.Node.Node,
      address: e.Service.Address || e.Node.Address,
      port: e.Service.Port,
      tags: [...(e.Service.Tags ?? [])],
      weights: { passing: e.Service.Weights?.Passing ?? 1, warning: e.Service.Weights?.Warning ?? 1 },
      checks: (e.Checks ?? [])
        .map((c) => ({ id: c.CheckID, status: c.Status, serviceId: c.ServiceID }))
        .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)),
    }))
    .sort((a, b) => (a.node + a.id < b.node + b.id ? -1 : 1)),
);

/** `/v1/health/state/any`: every check in the datacenter, used to localise changes in bulk mode. */
export const healthStateCheckSchema = z.object({
  Node: z.string(),
  CheckID: z.string(),
  Status: z.string(),
  ServiceName: z.string().optional().default(''),
  ModifyIndex: z.number().int(),
});
export const healthStateSchema = z.array(healthStateCheckSchema);
export type HealthStateCheck = z.output<typeof healthStateCheckSchema>;

/** KV recurse read; `null` stands for the 404 Consul returns when the prefix holds no key. */
export const kvListSchema = z
  .array(z.object({ Key: z.string(), Value: z.string().nullable(), ModifyIndex: z.number().int(), Flags: z.number().int().nonnegative().optional() }))
  .nullable()
  .transform((entries): KvEntry[] =>
    (entries ?? [])
      .map((e) => ({
        key: e.Key,
        value: e.Value === null ? null : Buffer.from(e.Value, 'base64').toString('utf8'),
        modifyIndex: e.ModifyIndex,
        ...(e.Flags ? { flags: e.Flags } : {}),
      }))
      .sort((a, b) => (a.key < b.key ? -1 : 1)),
  );

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * KV recurse read for values that must be text (fabio's route lines): bytes that are not UTF-8
 * are marked `undecodable` instead of being read with replacement characters, so the reader can
 * keep the last good value rather than apply a mangled one.
 */
export const kvTextListSchema = z
  .array(z.object({ Key: z.string(), Value: z.string().nullable(), ModifyIndex: z.number().int() }))
  .nullable()
  .transform((entries): KvEntry[] =>
    (entries ?? [])
      .map((e): KvEntry => {
        if (e.Value === null) return { key: e.Key, value: null, modifyIndex: e.ModifyIndex };
        try {
          return { key: e.Key, value: strictUtf8.decode(Buffer.from(e.Value, 'base64')), modifyIndex: e.ModifyIndex };
        } catch {
          return { key: e.Key, value: null, modifyIndex: e.ModifyIndex, undecodable: true };
        }
      })
      .sort((a, b) => (a.key < b.key ? -1 : 1)),
  );

/** A lock key read without `?raw`: who holds it (the session), if anyone. `null`: no such key. */
export const kvLockSchema = z
  .array(z.object({ Key: z.string(), Session: z.string().optional(), ModifyIndex: z.number().int() }))
  .nullable()
  .transform((entries) => ({ session: entries?.[0]?.Session, modifyIndex: entries?.[0]?.ModifyIndex ?? 0 }));
