import { z } from 'zod';

/**
 * The structure a snapshot read back from a state file must have before the data plane is
 * offered it. Workers take snapshots over IPC from their own primary without checks, so there is
 * no shared check to reuse; this one covers what every room reads: services and endpoints, routes
 * and their options, problems, the policy set, guards, KV certificates and rollouts. Sections
 * whose inner shape is the policy schema's *output* (durations already in ms, defaults filled)
 * are checked as objects only: the policy schemas parse *input* and would refuse their own output.
 * Loose objects keep fields this check does not name; the value checked is the value used, never
 * zod's copy. The compile in the data plane is the last check: a snapshot it cannot compile is
 * refused whole.
 */
const text = z.string();
const nullableText = z.string().nullable();
const object = z.looseObject({});
const count = z.number().int().min(0);

const problem = z.looseObject({ kind: text, subject: text, message: text, keptLastGood: z.boolean().optional() });

const endpoint = z.looseObject({
  id: text,
  node: text,
  address: z.string().min(1),
  port: z.number().int().min(1).max(65_535),
  key: z.string().min(1),
  tags: z.array(text),
  status: z.enum(['passing', 'warning', 'critical']),
  weight: z.number().finite().min(0),
  scheme: z.literal('https').optional(),
  tlsSkipVerify: z.literal(true).optional(),
  serverName: text.optional(),
});

const canary = z.looseObject({
  key: text,
  modifyIndex: count,
  weights: z.record(text, z.number().finite()),
  subsets: z.array(z.looseObject({ tag: text, configuredWeight: z.number().finite(), effectiveWeight: z.number().finite(), endpoints: z.array(text) })),
  fallback: z.boolean(),
});

const sources = z.record(text, text);

const servicePolicy = z.looseObject({
  outlierDetection: object,
  circuitBreaker: object.nullable(),
  discovery: z.looseObject({ mode: z.enum(['watch', 'poll', 'pinned']) }),
  connectTimeout: z.number().finite().min(0).nullable(),
  stickiness: object.nullable(),
  sources,
});

const service = z.looseObject({
  name: z.string().min(1),
  kind: z.enum(['consul', 'static']),
  tags: z.array(text),
  endpoints: z.array(endpoint),
  healthy: count,
  canary: canary.nullable(),
  policy: servicePolicy,
});

const routeSource = z.discriminatedUnion('kind', [
  z.looseObject({ kind: z.literal('tag'), tag: text }),
  z.looseObject({ kind: z.literal('file'), document: text, path: text }),
  z.looseObject({ kind: z.literal('kv'), document: text, key: text, modifyIndex: count }),
  z.looseObject({ kind: z.literal('fabio-kv'), key: text, line: count, document: text }),
]);

const routePolicy = z.looseObject({
  auth: object.nullable(),
  authorize: object.nullable(),
  rateLimits: z.array(object),
  timeouts: object,
  retries: object,
  limits: object,
  hsts: object.nullable(),
  redirectHttps: z.boolean(),
  websocket: object,
  mirror: object.nullable(),
  sources,
});

const route = z.looseObject({
  id: z.string().min(1),
  host: nullableText,
  path: z.string().startsWith('/'),
  service: z.string().min(1),
  source: routeSource,
  strip: nullableText,
  prepend: nullableText,
  upstreamHost: nullableText,
  redirect: z.looseObject({ code: z.union([z.literal(301), z.literal(302), z.literal(303), z.literal(307), z.literal(308)]), url: text }).nullable(),
  access: z.looseObject({ kind: z.enum(['allow', 'deny']), cidrs: z.array(text) }).nullable(),
  proto: z.enum(['http', 'https', 'grpc', 'grpcs']),
  tlsSkipVerify: z.boolean(),
  redirectHttps: z.boolean(),
  freshness: z.enum(['watched', 'polled', 'pinned', 'static']),
  policy: routePolicy,
  heldBy: nullableText,
  holdReason: nullableText,
});

const origin = z.discriminatedUnion('kind', [z.looseObject({ kind: z.literal('file'), path: text }), z.looseObject({ kind: z.literal('kv'), key: text, modifyIndex: count })]);
const documentKind = z.enum(['policy', 'route']);

const policies = z.looseObject({
  documents: z.array(z.looseObject({ id: text, kind: documentKind, name: text, origin, version: text, parsed: z.looseObject({ kind: documentKind, doc: object }) })),
  status: z.array(z.looseObject({ id: text, kind: documentKind, name: text, inForce: z.looseObject({ origin, version: text }).nullable(), rejected: z.looseObject({ origin, error: text }).nullable(), overriddenFile: nullableText })),
  consumers: z.record(text, z.looseObject({ id: text, record: object, modifyIndex: count })),
  problems: z.array(problem),
  held: z.array(z.looseObject({ document: text, target: z.unknown() })),
  kvResets: count,
  vanished: z.array(text),
});

const certificate = z.looseObject({ name: z.string().min(1), key: text, modifyIndex: count, certPem: z.string().min(1), keyPem: z.string().min(1), info: object });

const rollout = z.looseObject({
  service: text,
  key: text,
  state: z.enum(['progressing', 'paused']),
  canary: text,
  stable: text,
  window: text,
  step: count,
  weight: z.number().finite(),
  consumers: z.array(text),
});

export const snapshotStructure = z
  .looseObject({
    version: z.string().regex(/^[0-9a-f]{16}$/, 'a snapshot version is 16 hex digits'),
    services: z.record(text, service),
    routes: z.array(route),
    problems: z.array(problem),
    policies,
    routeGuards: z.record(text, z.looseObject({ service: text, document: text })),
    certificates: z.array(certificate),
    rollouts: z.record(text, rollout),
  })
  .refine((s) => Object.entries(s.services).every(([name, svc]) => svc.name === name), { message: 'a service is filed under a name other than its own', path: ['services'] })
  .refine((s) => new Set(s.routes.map((r) => r.id)).size === s.routes.length, { message: 'two routes have the same id', path: ['routes'] });
