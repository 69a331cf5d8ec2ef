import { z } from 'zod';
import { consulSettingsFromEnv, readConsulTls, type ConsulTlsMaterial } from './consul/connection.ts';
import { LOG_FORMATS, LOG_LEVELS, PICKERS, TLS_CLIENT_AUTH_MODES, TLS_MIN_VERSIONS } from './core/choices.ts';
import { durationField } from './core/duration-field.ts';
import { readCaBundle } from './core/ca-bundle.ts';
import { readFileSync } from 'node:fs';
import { isLoopbackHost } from './core/net.ts';
import { defaultGatewayId, defaultRuntimePrefix, GATEWAY_ID_PATTERN } from './core/kv-layout.ts';
import { otlpEndpointField, otlpHeadersField, otlpSampleField, otlpServiceNameField, type OtlpSettings } from './core/otlp-settings.ts';

/**
 * Static configuration, fixed at boot. Flags win over environment variables, which win over
 * defaults; the CLI passes raw strings here and zod turns them into typed values or a clear error.
 */

/**
 * A listen address: `host:port`, `[v6]:port`, or `:port` for every interface (as fabio and Go tools
 * write it; host '' means Node's default, dual-stack when the machine has IPv6).
 */
const hostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]*):\d{1,5}$/, 'expected host:port or :port, e.g. 127.0.0.1:8080')
  .transform((text) => {
    const cut = text.lastIndexOf(':');
    const host = text.slice(0, cut).replace(/^\[|\]$/g, '');
    return { host, port: Number(text.slice(cut + 1)) };
  })
  .refine((a) => a.port <= 65535, 'port must be 0-65535');

/** `--admin` also takes the URL the CLI uses (`http://127.0.0.1:9901`), so one value serves both. */
const listenAddress = z
  .string()
  .transform((text) => {
    const m = /^http:\/\/([^/]+?)\/?$/i.exec(text.trim());
    return m?.[1] ?? text.trim();
  })
  .pipe(hostPort);

const duration = durationField;

const consulUrl = z
  .string()
  .transform((text) => (/^[a-z]+:\/\//i.test(text) ? text : `http://${text}`))
  .pipe(z.url({ protocol: /^https?$/, error: 'expected an http(s) URL such as http://127.0.0.1:8500' }))
  .transform((text) => text.replace(/\/+$/, ''));

const hostPortList = z
  .string()
  .transform((text) => text.split(',').map((t) => t.trim()).filter((t) => t !== ''))
  .pipe(z.array(hostPort).min(1, 'expected host:port[,host:port...]'));

const redisUrl = z
  .string()
  .regex(/^rediss?:\/\/[^\s]+$/, 'expected redis://[:password@]host:port[/db] or rediss://...');

/** 16-4096 visible ASCII characters: long enough to resist guessing, sendable in a header as is. */
const adminTokenText = z
  .string()
  .min(16, 'the admin token needs at least 16 characters')
  .max(4096, 'the admin token is at most 4096 characters')
  .regex(/^[\x21-\x7e]+$/, 'the admin token is visible ASCII without spaces');

export const gatewayConfigSchema = z.object({
  consul: consulUrl.prefault('http://127.0.0.1:8500'),
  token: z.string().min(1).optional(),
  dc: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'datacenter names are letters, digits, _ . -').optional(),
  consistency: z.enum(['default', 'stale']).default('default'),
  wait: duration(1000, 600_000).prefault('1m'),
  consulMaxConns: z.coerce.number().int().min(8).max(190).default(32),
  listen: listenAddress.prefault('0.0.0.0:8080'),
  admin: listenAddress.prefault('127.0.0.1:9901'),
  /** Bearer token for the admin API: writes always, reads too when --admin is not on loopback. */
  adminToken: adminTokenText.optional(),
  /** A file holding the admin token (read at start, surrounding whitespace dropped). */
  adminTokenFile: z.string().min(1).optional(),
  /** Allow a non-loopback --admin without a token (anyone who reaches it reads the configuration). */
  adminInsecure: z.boolean().default(false),
  kvPrefix: z
    .string()
    .regex(/^[A-Za-z0-9_./-]*$/, 'KV prefix may hold letters, digits and _ . / -')
    .transform((p) => (p === '' || p.endsWith('/') ? p : `${p}/`))
    .prefault('gateway/'),
  /**
   * fabio's KV route key (fabio's registry.consul.kvpath): the key and the keys under it are read
   * as fabio route lines. A leading or trailing "/" is dropped as fabio's Consul client does; ''
   * turns it off, as does `fabioKv: false` (--no-fabio-kv).
   */
  fabioKvKey: z
    .string()
    .regex(/^[A-Za-z0-9_./-]*$/, 'a KV key may hold letters, digits and _ . / -')
    .transform((k) => k.replace(/^\/+|\/+$/g, ''))
    .refine((k) => !k.split('/').some((s) => s === '.' || s === '..' || (s === '' && k !== '')), 'a KV key has no empty, "." or ".." segments')
    .prefault('fabio/config'),
  fabioKv: z.boolean().default(true),
  /** Where gateways write for each other (figures, locks, history); default: `<kv-prefix without />-runtime/`, outside the watched prefix. */
  kvRuntimePrefix: z
    .string()
    .regex(/^[A-Za-z0-9_./-]+$/, 'KV prefix may hold letters, digits and _ . / -')
    .transform((p) => (p.endsWith('/') ? p : `${p}/`))
    .optional(),
  /** This gateway's name in the fleet (registration, rollout figures, locks); default: host name and proxy port. */
  gatewayId: z.string().regex(GATEWAY_ID_PATTERN, 'a gateway id is 1-200 letters, digits, _ . -').optional(),
  /** Register this gateway in Consul (its own service, TTL check, meta for `cgw fleet`); `--no-register` turns it off. */
  register: z.boolean().default(true),
  /** The Consul service name gateways register under; a DNS label, as Consul recommends for service names. */
  registerService: z.string().regex(/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/, 'a service name is 1-63 letters, digits and inner -').default('cgw'),
  /** The address other tools reach this gateway at; default: the listen host, or 127.0.0.1 when it listens on every interface. */
  registerAddress: z
    .string()
    .max(253)
    .regex(/^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$/, 'expected a host name, an IPv4 or an IPv6 address (no port)')
    .optional(),
  logLevel: z.enum(LOG_LEVELS).default('info'),
  /** json, pretty (pino-pretty, for people), or auto: pretty when stdout is a terminal. */
  logFormat: z.enum(LOG_FORMATS).default('auto'),
  /** OTLP/HTTP traces receiver; absent: no spans, and the OpenTelemetry SDK is never loaded. */
  otlpEndpoint: otlpEndpointField.optional(),
  otlpSample: otlpSampleField.optional(),
  otlpHeaders: otlpHeadersField.optional(),
  otlpServiceName: otlpServiceNameField.default('cgw'),
  allowWarning: z.boolean().default(false),
  accessLog: z.boolean().default(true),
  /** Share of successful requests (status below 400) with an access line; errors are always logged. */
  accessLogSample: z.coerce.number({ error: 'expected a share between 0 and 1, e.g. 0.1' }).min(0, 'at least 0').max(1, 'at most 1').default(1),
  picker: z.enum(PICKERS).default('round_robin'),
  connectTimeout: duration(10, 60_000).prefault('2s'),
  responseTimeout: duration(10, 3_600_000).prefault('60s'),
  drainTimeout: duration(0, 600_000).prefault('15s'),
  resyncInterval: duration(1000, 3_600_000).prefault('5m'),
  /** Policy documents loaded at start (KV documents of the same name win). */
  policies: z.string().min(1).optional(),
  /** Shared rate-limit state; without it every gateway counts on its own. */
  redis: redisUrl.optional(),
  redisSentinels: hostPortList.optional(),
  redisSentinelName: z.string().min(1).default('mymaster'),
  redisCluster: hostPortList.optional(),
  /** Largest request head Node accepts at all (per-route limits can only be lower). */
  maxHeaderSize: z.coerce.number().int().min(1024).max(1024 * 1024).default(65_536),
  /** Processes that proxy: a primary runs the control plane and N workers the data plane; 1 keeps one process. Default: the available parallelism. */
  workers: z.coerce.number().int().min(1).max(256).optional(),
  /** More header fields than this are refused (431), never silently cut. */
  maxHeaderCount: z.coerce.number().int().min(16).max(10_000).default(200),
  /** Client connections open at once; beyond it new connections are closed at once and counted. */
  maxConnections: z.coerce.number().int().min(16).max(1_000_000).optional(),
  /** Concurrent requests per upstream endpoint (also its pool size); beyond it 503 upstream_busy. */
  maxRequestsPerEndpoint: z.coerce.number().int().min(1).max(65_536).default(256),
  /** A request head must arrive within this (408). */
  clientHeaderTimeout: duration(100, 600_000).prefault('10s'),
  /** Longest pause between two pieces of a request body (408). */
  clientBodyTimeout: duration(100, 3_600_000).prefault('30s'),
  /** Shadow (mirror) requests in flight at once per process; sampled requests beyond it are not copied. 0 turns mirroring off. */
  // An empty value would coerce to 0 and silently turn mirroring off: refused instead.
  mirrorMaxInFlight: z.preprocess((v) => (typeof v === 'string' && v.trim() === '' ? Number.NaN : v), z.coerce.number().int().min(0).max(10_000)).default(100),
  /** Bodies up to this size are read completely before an upstream is picked, so slow senders hold no upstream connection. */
  requestBufferSize: z.coerce.number().int().min(0).max(64 * 1024 * 1024).default(65_536),
  /** Bytes the in-memory response cache of each process may hold (bodies and fields); 0 stores nothing. */
  cacheMaxBytes: z.coerce.number().int().min(0).max(64 * 1024 * 1024 * 1024).default(64 * 1024 * 1024),
  caFile: z.string().min(1).optional(),
  certFile: z.string().min(1).optional(),
  keyFile: z.string().min(1).optional(),
  tlsServerName: z.string().min(1).optional(),
  /** HTTPS listeners (repeatable flag), next to the plain `listen`. */
  listenTls: z.array(listenAddress).default([]),
  /** Certificate and key files, pairwise in order; the first pair is the default certificate. */
  tlsCert: z.array(z.string().min(1)).default([]),
  tlsKey: z.array(z.string().min(1)).default([]),
  /** Every `<name>.crt` + `<name>.key`, or `<name>.pem` holding both. */
  tlsDir: z.string().min(1).optional(),
  tlsMinVersion: z.enum(TLS_MIN_VERSIONS).default('TLSv1.2'),
  /**
   * CA certificates trusted for https upstreams (proto=https tags, https route documents) besides
   * Node's roots: read and checked here, so a bad file stops the start with its reason.
   */
  upstreamCa: z
    .string()
    .min(1)
    .transform((file, ctx) => {
      const bundle = readCaBundle(file);
      if (!bundle.ok) {
        ctx.addIssue({ code: 'custom', message: bundle.error });
        return z.NEVER;
      }
      return { file, pem: bundle.pem };
    })
    .optional(),
  /** Prior-knowledge HTTP/2 (h2c) on the plain listener, beside HTTP/1.1. */
  h2c: z.boolean().default(false),
  /** SETTINGS_MAX_CONCURRENT_STREAMS announced to HTTP/2 clients (h2 on --listen-tls, h2c). */
  http2MaxConcurrentStreams: z.coerce.number().int().min(1).max(10_000).default(100),
  /** How often certificate files are checked when the platform's change notifications miss a change. */
  tlsPollInterval: duration(100, 3_600_000).prefault('5s'),
  /** PEM bundle of the CAs client certificates must chain to (read and checked at start). */
  tlsClientCa: z.string().min(1).optional(),
  /** none: no client certificate asked; request: asked and verified, policies decide; require: no verified certificate, no handshake. */
  tlsClientAuth: z.enum(TLS_CLIENT_AUTH_MODES).default('none'),
  /** The last good snapshot is kept here and served at start when Consul is not reached (stale). */
  stateFile: z.string().min(1).optional(),
  /** How long start waits for the first sync with Consul before it serves the state file. */
  stateFileWait: duration(0, 600_000).prefault('5s'),
})
  // --listen-tls alone is valid: certificates may all come from Consul KV (<prefix>certs/<name>).
  .refine((c) => !c.fabioKv || c.fabioKvKey === '' || !overlapsGatewayKeys(c.fabioKvKey, c.kvPrefix), {
    message: "fabio's key and the keys under it must not hold the gateway's own keys (--kv-prefix, its policies/, routes/, canary/, consumers/): pick another key or --no-fabio-kv",
    path: ['fabioKvKey'],
  })
  .refine((c) => c.tlsCert.length === c.tlsKey.length, { message: 'give --tls-cert and --tls-key in pairs (as many of each)', path: ['tlsKey'] })
  .refine((c) => c.tlsClientAuth === 'none' || c.tlsClientCa !== undefined, {
    message: '--tls-client-auth request|require needs --tls-client-ca (the CAs client certificates are verified against)',
    path: ['tlsClientAuth'],
  })
  .refine((c) => c.tlsClientAuth === 'none' || c.listenTls.length > 0, { message: '--tls-client-auth needs an HTTPS listener (--listen-tls)', path: ['tlsClientAuth'] })
  .refine((c) => c.tlsClientCa === undefined || c.tlsClientAuth !== 'none', {
    message: '--tls-client-ca has no effect without --tls-client-auth request|require',
    path: ['tlsClientCa'],
  })
  .refine((c) => c.kvRuntimePrefix === undefined || (!c.kvRuntimePrefix.startsWith(c.kvPrefix) && !c.kvPrefix.startsWith(c.kvRuntimePrefix)), {
    message: '--kv-runtime-prefix must lie outside --kv-prefix (and not hold it): the gateway watches everything under --kv-prefix',
    path: ['kvRuntimePrefix'],
  })
  .refine((c) => c.otlpEndpoint !== undefined || (c.otlpSample === undefined && c.otlpHeaders === undefined), {
    message: '--otlp-sample and --otlp-headers need --otlp-endpoint (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)',
    path: ['otlpEndpoint'],
  })
  .refine((c) => c.adminToken === undefined || c.adminTokenFile === undefined, { message: 'give --admin-token or --admin-token-file, not both', path: ['adminTokenFile'] })
  .transform((c, ctx) => {
    if (c.adminTokenFile === undefined) return c;
    let text: string;
    try {
      text = readFileSync(c.adminTokenFile, 'utf8').trim();
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['adminTokenFile'], message: `cannot read ${c.adminTokenFile}: ${(err as Error).message}` });
      return z.NEVER;
    }
    const token = adminTokenText.safeParse(text);
    if (!token.success) {
      ctx.addIssue({ code: 'custom', path: ['adminTokenFile'], message: `${c.adminTokenFile}: ${token.error.issues[0]?.message ?? 'not a token'}` });
      return z.NEVER;
    }
    return { ...c, adminToken: token.data };
  })
  .refine((c) => c.adminToken !== undefined || c.adminInsecure || isLoopbackHost(c.admin.host), {
    message: '--admin listens beyond loopback without a token: give --admin-token (or --admin-token-file, CGW_ADMIN_TOKEN), or --admin-insecure to accept that anyone who reaches it reads the configuration',
    path: ['admin'],
  })
  .transform((c) => ({
    ...c,
    kvRuntimePrefix: c.kvRuntimePrefix ?? defaultRuntimePrefix(c.kvPrefix),
    gatewayId: c.gatewayId ?? defaultGatewayId(c.listen.port),
    registerAddress: c.registerAddress ?? defaultRegisterAddress(c.listen.host),
    otlp: otlpSettingsOf(c),
  }));

function otlpSettingsOf(c: { otlpEndpoint?: string; otlpSample?: number; otlpHeaders?: Record<string, string>; otlpServiceName: string }): OtlpSettings | null {
  if (c.otlpEndpoint === undefined) return null;
  return { endpoint: c.otlpEndpoint, sample: c.otlpSample ?? 1, headers: c.otlpHeaders ?? {}, serviceName: c.otlpServiceName };
}

/** The listen host when it names one interface; loopback when it is every interface (`0.0.0.0`, `::`, ''). */
export function defaultRegisterAddress(listenHost: string): string {
  return listenHost === '' || listenHost === '0.0.0.0' || listenHost === '::' ? '127.0.0.1' : listenHost;
}

export type GatewayConfigInput = z.input<typeof gatewayConfigSchema>;
export type GatewayConfig = z.output<typeof gatewayConfigSchema>;

/** Whether fabio's key or its subtree would read the gateway's documents, canary weights or consumers as route lines. */
function overlapsGatewayKeys(fabioKey: string, kvPrefix: string): boolean {
  // The gateway's prefix inside fabio's subtree (`fabio/config/` as the prefix, or below it).
  if (kvPrefix !== '' && kvPrefix.startsWith(`${fabioKey}/`)) return true;
  // fabio's key inside the gateway's prefix, in one of the areas the gateway reads.
  if (!fabioKey.startsWith(kvPrefix)) return false;
  const area = fabioKey.slice(kvPrefix.length).split('/')[0] ?? '';
  return ['policies', 'routes', 'canary', 'consumers'].includes(area);
}

/** The fabio route key the gateway reads, or null when that is turned off. */
export function fabioKvKeyOf(config: Pick<GatewayConfig, 'fabioKv' | 'fabioKvKey'>): string | null {
  return config.fabioKv && config.fabioKvKey !== '' ? config.fabioKvKey : null;
}

/**
 * Environment variables Consul's own tools read, so cgw behaves like `consul` on the same box.
 * Resolved by consul/connection.ts, the one resolver the CLI uses too; the token file is read here
 * (a bad address, CONSUL_HTTP_SSL value or unreadable token file throws a ConsulSettingError).
 */
export function consulEnvDefaults(env: NodeJS.ProcessEnv): Partial<GatewayConfigInput> {
  const settings = consulSettingsFromEnv(env);
  const out: Partial<GatewayConfigInput> = {};
  if (settings.address !== undefined) out.consul = settings.address;
  if (settings.token !== undefined) out.token = settings.token;
  if (settings.tls.caFile !== undefined) out.caFile = settings.tls.caFile;
  if (settings.tls.certFile !== undefined) out.certFile = settings.tls.certFile;
  if (settings.tls.keyFile !== undefined) out.keyFile = settings.tls.keyFile;
  if (settings.tls.serverName !== undefined) out.tlsServerName = settings.tls.serverName;
  return out;
}

export function parseGatewayConfig(input: GatewayConfigInput): GatewayConfig {
  return gatewayConfigSchema.parse(input);
}

/** One line per invalid field, naming the flag the user typed. */
export function formatConfigError(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const field = issue.path.map(String).join('.');
      const flag = field ? `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}` : 'config';
      return `${flag}: ${issue.message}`;
    })
    .join('\n');
}

/**
 * TLS material for an https Consul address, read once at boot (CONSUL_CACERT and friends): each
 * file must be readable PEM of its kind, or a ConsulSettingError names the variable and the path.
 */
export function consulTls(config: GatewayConfig): ConsulTlsMaterial | undefined {
  return readConsulTls({ caFile: config.caFile, certFile: config.certFile, keyFile: config.keyFile, serverName: config.tlsServerName });
}
