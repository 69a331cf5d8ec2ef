#!/usr/bin/env node
// Start-up time is part of every command: only commander and two dependency-free modules are
// loaded up front (enough for --help and flag parsing). Each action imports what it needs, so the
// inspection commands never load zod, pino or the `consul` package, and only `start` loads the
// gateway.
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { LOG_FORMATS, LOG_LEVELS, PICKERS, ROLLOUT_DEFAULTS, TLS_CLIENT_AUTH_MODES, TLS_MIN_VERSIONS } from '../core/choices.ts';
import { parseDuration } from '../core/duration.ts';
import type { AdminReader, ConsumerAddOptions, IssuedKey } from './consumer.ts';
import type { ConsulStore } from './consul-kv.ts';
import type { InspectFlags } from './inspect.ts';
import type { PushResult } from './policy.ts';
import type { StartFlags } from './start.ts';

const env = process.env;
/** Set by `start`; every other command exits when done (the consul client keeps sockets alive). */
let keepRunning = false;

function wholeNumber(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError('expected a whole number');
  return Number(value);
}

function positiveNumber(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) throw new InvalidArgumentError('expected a whole number of at least 1');
  return Number(value);
}

function durationText(value: string): string {
  if (parseDuration(value) === undefined) throw new InvalidArgumentError('expected a duration such as 30s, 1m or 1h');
  return value;
}

/** `--scopes a,b --scopes c` → [a, b, c]. */
function scopeList(value: string, previous: string[] | undefined): string[] {
  const scopes = value.split(',').map((x) => x.trim());
  if (scopes.some((x) => x === '')) throw new InvalidArgumentError('expected comma-separated scopes without empty items, e.g. orders:read,orders:write');
  return [...(previous ?? []), ...scopes];
}

const program = new Command('cgw')
  .description('cgw: the Consul-native API gateway')
  // Listed for the help; answered before parsing (below), so the commit is read only when asked.
  .option('-V, --version', 'print the release and the commit it was built from')
  // Usage errors (unknown flag, bad number) throw instead of exiting 1, so they exit 2 like every
  // other invalid input. Inherited by every command defined below.
  .exitOverride()
  .showHelpAfterError()
  .addHelpText(
    'after',
    `
Environment (as the consul CLI reads them; flags win):
  CONSUL_HTTP_ADDR        default for --consul: host:port or http(s)://host:port (else 127.0.0.1:8500)
  CONSUL_HTTP_SSL         true: https for an address without scheme
  CONSUL_HTTP_TOKEN       default for --token (sent as X-Consul-Token, never in a URL)
  CONSUL_HTTP_TOKEN_FILE  a file holding the token (wins over CONSUL_HTTP_TOKEN)
  CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME  TLS to Consul
  CGW_ADMIN               default for --admin: host:port or http://host:port (else 127.0.0.1:9901)
  CGW_REDIS               default for cgw start --redis
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces)  default for --otlp-endpoint
  OTEL_EXPORTER_OTLP_TRACES_HEADERS, OTEL_EXPORTER_OTLP_HEADERS  default for --otlp-headers
  OTEL_SERVICE_NAME       default for --otlp-service-name; OTEL_SDK_DISABLED=true ignores the OTEL_ endpoints
  CGW_STATE_FILE          default for cgw start --state-file (CGW_STATE_FILE_WAIT: --state-file-wait)

Commands by what they talk to:
  admin API (--admin)   status, services, endpoints, routes, policies
  Consul KV (--consul)  canary, rollout, rollouts, cert, policy push, guards, consumer, consumers, history, rollback
  Consul (--consul)     fleet (every registered gateway)
  local files only      policy validate

Examples:
  cgw policy validate policies/                 check every document before a deploy
  cgw policy push policies/ --dry-run           what a push would change in KV
  cgw policy push policies/ --prune             copy to KV, delete KV documents without a file
  cgw consumer add acme --plan partner-gold --scopes billing:read
  cgw consumer rotate acme                      new key, same plan and scopes
  cgw policies                                  which version of each document is in force
  cgw history                                   configuration versions applied, newest first
  cgw rollback 3f2a9c1d0b7e --dry-run           what restoring an older version would write

Exit codes: 0 ok; 1 failure (gateway or Consul unreachable, not a Consul agent, ACL refusal, no such
consumer, consumer exists, gateway not ready for cgw status, a lagging or critical gateway or none
for cgw fleet); 2 invalid input (bad flag or address,
bad weights, a tag or service no instance carries, an undefined plan, invalid document); 3 a KV
check-and-set precondition failed (the key is not at the expected ModifyIndex: changed by someone
else, or exists when --cas 0 asked to create). With --json, errors are JSON on stdout too:
{"error": {"message": ..., "exitCode": N}}.`,
  );

/** A repeatable option's values, in order. */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

program
  .command('start')
  .description('run the gateway: watch Consul, route and balance HTTP')
  .option('--consul <url>', 'Consul HTTP address (env CONSUL_HTTP_ADDR)', undefined)
  .option('--token <token>', 'ACL token sent as X-Consul-Token (env CONSUL_HTTP_TOKEN)')
  .option('--dc <datacenter>', 'datacenter to watch (default: the agent\'s own)')
  .addOption(new Option('--consistency <mode>', 'read consistency for watches').choices(['default', 'stale']))
  .option('--wait <duration>', 'blocking query wait (max 10m)', '1m')
  .option('--consul-max-conns <n>', 'connection budget towards Consul (the agent allows 200 per client IP)', '32')
  .option('--listen <host:port>', 'proxy listener', '0.0.0.0:8080')
  .option('--admin <host:port>', 'admin listener (health, metrics, JSON views)', '127.0.0.1:9901')
  .option('--admin-token <token>', 'bearer token for the admin API: writes always, reads too when --admin is not on loopback (env CGW_ADMIN_TOKEN)', env.CGW_ADMIN_TOKEN)
  .option('--admin-token-file <file>', 'read the admin token from this file')
  .option('--admin-insecure', 'allow a non-loopback --admin without a token')
  .option('--kv-prefix <prefix>', 'Consul KV prefix for gateway settings', 'gateway/')
  .option('--fabio-kv-key <key>', "fabio route lines (route add/del/weight) at this key and the keys under it ('' turns it off)", 'fabio/config')
  .option('--no-fabio-kv', 'do not read fabio route lines from KV')
  .option('--kv-runtime-prefix <prefix>', 'where gateways write rollout figures, locks and history for each other (default: <kv-prefix>-runtime/, outside the watched prefix)')
  .option('--gateway-id <id>', "this gateway's name in the fleet (default: host name and proxy port)")
  .option('--no-register', 'do not register this gateway in Consul (cgw fleet will not list it)')
  .option('--register-service <name>', 'the Consul service gateways register under (cgw fleet reads it)', 'cgw')
  .option('--register-address <host>', 'the address registered for this gateway (default: the --listen host, 127.0.0.1 when it is every interface)')
  .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
  .addOption(new Option('--log-format <format>', 'log lines as JSON, or pretty for people; auto: pretty when stdout is a terminal').choices(LOG_FORMATS).default('auto'))
  .option('--otlp-endpoint <url>', 'export one span per request to this OTLP/HTTP traces receiver, e.g. http://127.0.0.1:4318/v1/traces (off by default)')
  .option('--otlp-sample <ratio>', 'share (0-1) of the traces the gateway starts that are exported; a client\'s traceparent decides for its own (default 1)')
  .option('--otlp-headers <name=value,...>', 'headers sent to the receiver (values %-encoded), e.g. authorization=Bearer%20abc')
  .option('--otlp-service-name <name>', 'service.name of the spans (default: OTEL_SERVICE_NAME, else cgw)')
  .option('--allow-warning', 'also route to instances whose worst check is warning (at Weights.Warning)')
  .option('--no-access-log', 'do not log one line per request')
  .option('--access-log-sample <share>', 'log this share (0-1) of requests answered below 400; errors (400 and up) are always logged', '1')
  .addOption(new Option('--picker <picker>', 'endpoint picker').choices(PICKERS).default('round_robin'))
  .option('--connect-timeout <duration>', 'upstream connect timeout', '2s')
  .option('--response-timeout <duration>', 'upstream response-header timeout', '60s')
  .option('--drain-timeout <duration>', 'on SIGTERM, how long in-flight requests may take', '15s')
  .option('--resync-interval <duration>', 'full health re-read period in bulk mode', '5m')
  .option('--policies <dir>', 'load policy and route documents from this directory (KV <prefix>policies/ and routes/ win)')
  .option('--redis <url>', 'Redis for rate limits shared by all gateways, e.g. redis://127.0.0.1:6379 (env CGW_REDIS)', env.CGW_REDIS)
  .option('--redis-sentinels <host:port,...>', 'use Redis Sentinel instead of --redis')
  .option('--redis-sentinel-name <name>', 'Sentinel master name', 'mymaster')
  .option('--redis-cluster <host:port,...>', 'use a Redis Cluster instead of --redis')
  .option('--max-header-size <bytes>', 'largest request head accepted at all (431 beyond)', '65536')
  .option('--workers <n>', 'processes that proxy (a primary watches Consul and serves the admin API); 1 keeps one process (default: the CPU count)')
  .option('--max-header-count <n>', 'most header fields a request may have (431 beyond)', '200')
  .option('--max-connections <n>', 'client connections open at once (default: half the open-file limit, at most 10000)')
  .option('--max-requests-per-endpoint <n>', 'concurrent requests per upstream endpoint (503 upstream_busy beyond)', '256')
  .option('--client-header-timeout <duration>', 'time a client has to send its request head (408)', '10s')
  .option('--client-body-timeout <duration>', 'longest pause between two pieces of a request body (408)', '30s')
  .option('--request-buffer-size <bytes>', 'bodies up to this size are read completely before an upstream is picked', '65536')
  .option('--mirror-max-in-flight <n>', 'shadow (mirror) requests in flight at once per process; more are not sent (0 turns mirroring off)', '100')
  .option('--cache-max-bytes <bytes>', 'bytes the in-memory response cache of each process holds at most (routes with a cache policy); 0 stores nothing', '67108864')
  .option('--listen-tls <host:port>', 'HTTPS listener (repeatable)', collect, undefined)
  .option('--tls-cert <file>', 'PEM certificate chain, paired with the --tls-key at the same position (repeatable; the first pair is the default certificate)', collect, undefined)
  .option('--tls-key <file>', 'PEM private key of the --tls-cert at the same position (repeatable)', collect, undefined)
  .option('--tls-dir <dir>', 'certificates from a directory: <name>.crt + <name>.key, or <name>.pem holding both')
  .addOption(new Option('--tls-min-version <version>', 'oldest TLS version accepted').choices(TLS_MIN_VERSIONS).default('TLSv1.2'))
  .option('--tls-poll-interval <duration>', 'how often certificate files are checked besides change notifications', '5s')
  .option('--upstream-ca <file>', 'PEM CA bundle trusted for https upstreams (proto=https tags) besides the system roots; checked at start')
  .option('--tls-client-ca <file>', 'PEM bundle of the CAs that issue client certificates (read at start)')
  .addOption(new Option('--tls-client-auth <mode>', 'ask HTTPS clients for a certificate: none, request (verified; route policies decide) or require (no handshake without one)').choices(TLS_CLIENT_AUTH_MODES).default('none'))
  .option('--h2c', 'also serve prior-knowledge HTTP/2 (h2c) on the plain --listen port, beside HTTP/1.1')
  .option('--http2-max-concurrent-streams <n>', 'streams an HTTP/2 client may have open at once per connection', '100')
  .option('--state-file <path>', 'keep the last good snapshot in this file (0600) and serve it, marked stale, when Consul is not reached at start (env CGW_STATE_FILE)', env.CGW_STATE_FILE)
  .option('--state-file-wait <duration>', 'how long start waits for the first sync with Consul before serving the state file (env CGW_STATE_FILE_WAIT)', env.CGW_STATE_FILE_WAIT ?? '5s')
  .action(async (flags: StartFlags) => {
    keepRunning = true;
    // The one resolver every command uses: host:port or URL, CONSUL_HTTP_SSL for a bare host:port.
    const { parseConsulAddress } = await import('../consul/connection.ts');
    if (flags.consul !== undefined) flags.consul = parseConsulAddress(flags.consul, env, '--consul').address;
    // --token wins over the environment; the token file is then not read at all.
    if (flags.token !== undefined) delete env.CONSUL_HTTP_TOKEN_FILE;
    // Loaded here: the gateway pulls in every room (pino, prom-client, ioredis, ...), which
    // would multiply the start-up time of every other command.
    const { runStart } = await import('./start.ts');
    await runStart(flags);
  });

interface JsonFlag {
  json?: boolean;
}
interface AdminFlag extends JsonFlag {
  admin?: string;
}

const adminOption = (cmd: Command): Command =>
  cmd.option('--admin <address>', 'gateway admin API: host:port or http://host:port (default $CGW_ADMIN, else 127.0.0.1:9901)');
const inspectOptions = (cmd: Command): Command => adminOption(cmd).option('--json', 'print JSON instead of a table (errors too)');
/** The inspection views (they read only the admin API) and the flags they take. */
const inspect = async (f: AdminFlag): Promise<{ views: typeof import('./inspect.ts'); flags: InspectFlags }> => {
  const [views, { resolveAdminAddress }] = await Promise.all([import('./inspect.ts'), import('./admin-client.ts')]);
  return { views, flags: { admin: resolveAdminAddress(f.admin, env), json: Boolean(f.json) } };
};

inspectOptions(program.command('status').description('readiness, snapshot version, watches and rejected configuration (exit 1 when not ready)')).action(
  async (f: AdminFlag) => {
    const { views, flags } = await inspect(f);
    await views.status(flags);
  },
);
inspectOptions(program.command('services').description('routed services with endpoint counts and canary shares')).action(async (f: AdminFlag) => {
  const { views, flags } = await inspect(f);
  await views.services(flags);
});
inspectOptions(program.command('endpoints').argument('<service>').description('every instance of a service with health, weight and load')).action(
  async (service: string, f: AdminFlag) => {
    const { views, flags } = await inspect(f);
    await views.endpoints(flags, service);
  },
);
inspectOptions(program.command('certs').description('certificates of the HTTPS listeners: names served, expiry, source, refused ones')).action(async (f: AdminFlag) => {
  const { views, flags } = await inspect(f);
  await views.certs(flags);
});
inspectOptions(program.command('routes').description('the route table: host/path → service')).action(async (f: AdminFlag) => {
  const { views, flags } = await inspect(f);
  await views.routes(flags);
});
inspectOptions(
  program.command('policies').description('policy and route documents: target, source (file or KV), version in force, and rejected versions'),
).action(async (f: AdminFlag) => {
  const { views, flags } = await inspect(f);
  await views.policies(flags);
});

interface ConsulFlags extends JsonFlag {
  consul?: string;
  token?: string;
  kvPrefix: string;
  kvRuntimePrefix?: string;
}
const kvOptions = (cmd: Command): Command =>
  cmd
    .option('--consul <address>', 'Consul HTTP API: host:port or http(s)://host:port (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8500)')
    .option('--token <token>', 'ACL token, sent as X-Consul-Token (default $CONSUL_HTTP_TOKEN_FILE, $CONSUL_HTTP_TOKEN)')
    .option('--kv-prefix <prefix>', 'the gateway\'s KV prefix', 'gateway/')
    .option('--kv-runtime-prefix <prefix>', 'where the gateways write figures and history (default: <kv-prefix>-runtime/)')
    .option('--json', 'print JSON (errors too)');
/** Consul as flags and CONSUL_* say; the first request checks that it is a Consul agent. */
const consulOf = async (f: ConsulFlags): Promise<ConsulStore> => {
  const [{ consulKv }, { resolveConsulConnection }] = await Promise.all([import('./consul-kv.ts'), import('../consul/connection.ts')]);
  return consulKv(resolveConsulConnection({ address: f.consul, token: f.token }, env));
};
interface RolloutStartFlags {
  canary: string;
  stable: string;
  steps: string;
  soak: string;
  maxErrorRateIncrease: string;
  maxP95Increase: string;
  p95Slack: string;
  minRequests: string;
  consumers?: string;
}
/** What a KV command runs on: the store (settings checked first, as before any other input) and its own module. */
const withConsul = <M>(f: ConsulFlags, load: Promise<M>): Promise<[ConsulStore, M]> => Promise.all([consulOf(f), load]);

/** What the gateway does with a weight above 0 on a tag no instance carries (src/state/canary.ts). */
const GATEWAY_REJECTS = 'Until an instance carries the tag, the gateway rejects these weights and keeps the last good ones (plain balancing if there are none).';

const canary = program.command('canary').description('canary weights by instance tag, stored in Consul KV');
kvOptions(canary.command('get').argument('<service>').description('show the weights stored for a service')).action(
  async (service: string, f: ConsulFlags) => {
    const [store, { getCanary }] = await withConsul(f, import('./canary.ts'));
    const { record, serviceKnown, notes } = await getCanary(store, f.kvPrefix, service);
    if (f.json) return print(JSON.stringify(record ?? null, null, 2));
    if (!record) print(`no canary weights for ${service}${serviceKnown ? ': plain balancing' : ''}`);
    else {
      print(`key: ${record.key} (ModifyIndex ${record.modifyIndex})`);
      if (record.invalid) print(`INVALID value (the gateway keeps the last good weights): ${record.invalid}\nraw: ${record.raw ?? ''}`);
      else print((await import('./table.ts')).renderTable(['TAG', 'WEIGHT'], Object.entries(record.weights ?? {})));
    }
    for (const n of notes) print(`note: ${n}`);
    if (record && record.missingTags.some((t) => (record.weights?.[t] ?? 0) > 0)) print(`note: ${GATEWAY_REJECTS}`);
  },
);
kvOptions(
  canary
    .command('set')
    .argument('<service>')
    .argument('<tag=weight...>', 'weights 0-100 that sum to 100, e.g. v1=90 v2=10 (tags are case-sensitive)')
    .description('validate weights against the gateway\'s rules and the service\'s instance tags, then write them with check-and-set')
    .option('--cas <modifyIndex>', 'only write if the key is still at this ModifyIndex (0: only if the key does not exist)', wholeNumber)
    .option('--force', 'write even if no instance of the service carries a weighted tag, or Consul does not know the service'),
).action(async (service: string, weights: string[], f: ConsulFlags & { cas?: number; force?: boolean }) => {
  const [store, { setCanary }] = await withConsul(f, import('./canary.ts'));
  const result = await setCanary(store, f.kvPrefix, service, weights, { cas: f.cas, force: f.force });
  if (f.json) return print(JSON.stringify(result, null, 2));
  print(`wrote ${result.key} (ModifyIndex ${result.modifyIndex}): ${Object.entries(result.weights).map(([t, w]) => `${t}=${w}`).join(' ')}`);
  for (const w of result.forced) print(`warning: ${w} (written anyway: --force). ${GATEWAY_REJECTS}`);
  for (const n of result.notes) print(`note: ${n}`);
});
kvOptions(canary.command('clear').argument('<service>').description('delete the weights (check-and-set): back to plain balancing')).action(
  async (service: string, f: ConsulFlags) => {
    const [store, { clearCanary }] = await withConsul(f, import('./canary.ts'));
    const result = await clearCanary(store, f.kvPrefix, service);
    if (f.json) return print(JSON.stringify(result, null, 2));
    print(result.deleted ? `deleted ${result.key} (was ModifyIndex ${result.modifyIndex ?? '?'}): plain balancing` : `no canary weights for ${service}: nothing to do`);
  },
);

const cert = program.command('cert').description('certificates for the HTTPS listeners, stored in Consul KV at <prefix>certs/<name>');
kvOptions(
  cert
    .command('put')
    .argument('<name>', 'certificate name: 1-128 letters, digits, _ . - (a KV certificate named "default" serves clients without a matching server name when no file certificate is given)')
    .requiredOption('--cert <file>', 'PEM certificate chain, leaf first')
    .requiredOption('--key <file>', 'PEM private key (unencrypted) of the leaf')
    .option('--cas <modifyIndex>', 'only write if the key is still at this ModifyIndex (0: only if it does not exist)', wholeNumber)
    .description('check that the chain parses, the key matches and the certificate is valid now, then write it with check-and-set'),
).action(async (name: string, f: ConsulFlags & { cert: string; key: string; cas?: number }) => {
  const [store, { putCertificate }] = await withConsul(f, import('./cert.ts'));
  const result = await putCertificate(store, f.kvPrefix, name, { cert: f.cert, key: f.key }, { cas: f.cas });
  if (f.json) return print(JSON.stringify(result, null, 2));
  const c = result.certificate;
  print(`wrote ${result.key} (ModifyIndex ${result.modifyIndex}${result.replaced === null ? ', new' : `, replaced ${result.replaced}`}): ${c.names.join(', ') || c.subject}, valid until ${c.notAfter}`);
  print('gateways serve it on their next handshakes for these names once they see the change (cgw certs)');
});
kvOptions(cert.command('rm').argument('<name>').description('delete a certificate (check-and-set); gateways stop serving it once they see the change')).action(
  async (name: string, f: ConsulFlags) => {
    const [store, { removeCertificate }] = await withConsul(f, import('./cert.ts'));
    const result = await removeCertificate(store, f.kvPrefix, name);
    if (f.json) return print(JSON.stringify({ ...result, deleted: true }, null, 2));
    print(`deleted ${result.key} (was ModifyIndex ${result.modifyIndex})`);
  },
);

const cache = program.command('cache').description('the gateways\' response caches');
kvOptions(
  cache
    .command('purge')
    .option('--all', 'every cached response of every route')
    .option('--route <route id>', 'every cached response of one route (as cgw routes shows it)')
    .option('--path <path>', 'cached responses of this request path, with any query, on every route and host')
    .option('--key <path>', 'the same as --path')
    .description('drop cached responses on every gateway and worker, and in Redis: raises a purge generation in <prefix>cache-purge/ (check-and-set) that every gateway applies from its KV watch'),
).action(async (f: ConsulFlags & { all?: boolean; route?: string; path?: string; key?: string }) => {
  const [store, { purgeCache, purgeTargetOf }] = await withConsul(f, import('./cache.ts'));
  const result = await purgeCache(store, f.kvPrefix, purgeTargetOf(f));
  if (f.json) return print(JSON.stringify(result, null, 2));
  print(`wrote ${result.key} (generation ${result.generation}); gateways drop the entries once they see the change`);
});

const rollout = program.command('rollout').description('automated canary rollouts, stored in Consul KV at <prefix>rollouts/<service> (the gateways drive them)');
kvOptions(
  rollout
    .command('start')
    .argument('<service>')
    .requiredOption('--canary <tag>', 'instance tag of the new version')
    .requiredOption('--stable <tag>', 'instance tag of the version in service')
    .option('--steps <list>', 'canary shares in percent, increasing, ending at 100', ROLLOUT_DEFAULTS.steps)
    .option('--soak <duration>', 'how long each step is watched before it advances', ROLLOUT_DEFAULTS.soak)
    .option('--max-error-rate-increase <points>', 'canary 5xx rate may exceed stable\'s by at most this many percentage points', ROLLOUT_DEFAULTS.maxErrorRateIncrease)
    .option('--max-p95-increase <n%|duration>', 'canary p95 may exceed stable\'s by this much (10% or 50ms)', ROLLOUT_DEFAULTS.maxP95Increase)
    .option('--p95-slack <duration>', 'a p95 within this of stable\'s never fails a step', ROLLOUT_DEFAULTS.p95Slack)
    .option('--min-requests <n>', 'canary requests a window needs before it is judged', ROLLOUT_DEFAULTS.minRequests)
    .option('--consumers <ids>', 'API-key consumers or JWT subjects that get the canary first (comma-separated)')
    .description('check the tags against the service\'s instances, write the first step\'s weights and the rollout (check-and-set)'),
).action(async (service: string, f: ConsulFlags & RolloutStartFlags) => {
  const [store, { startRollout }] = await withConsul(f, import('./rollout.ts'));
  const started = await startRollout(store, f.kvPrefix, service, f);
  if (f.json) return print(JSON.stringify(started, null, 2));
  const r = started.rollout;
  print(`started the rollout of ${service}: ${r.canary} at ${r.steps[0] ?? 0}% (steps ${r.steps.join(', ')}, soak ${f.soak}); written to ${started.key} and ${started.weightsKey}`);
});
kvOptions(rollout.command('status').argument('<service>').description('state, step, time left in the soak, both subsets\' figures in the current window (all gateways), and every decision taken')).action(async (service: string, f: ConsulFlags) => {
  const [store, { readRollout, soakLeftMs, readWindowFigures, runtimePrefixOf }] = await withConsul(f, import('./rollout.ts'));
  const stored = await readRollout(store, f.kvPrefix, service);
  const figures = stored?.rollout ? await readWindowFigures(store, runtimePrefixOf(f.kvPrefix, f.kvRuntimePrefix), stored.rollout) : null;
  if (f.json) return print(JSON.stringify(stored ? { ...stored, figures } : null, null, 2));
  if (!stored) return print(`no rollout of ${service}`);
  if (!stored.rollout) return print(`INVALID rollout at ${stored.key} (ModifyIndex ${stored.modifyIndex}): ${stored.invalid ?? ''}`);
  const r = stored.rollout;
  const left = r.state === 'progressing' ? `, ${Math.ceil(soakLeftMs(r, new Date()) / 1000)} s left in the soak` : '';
  print(`${service}: ${r.state}, step ${r.step + 1} of ${r.steps.length} (${r.canary} ${r.steps[r.step] ?? 0}%, ${r.stable} ${100 - (r.steps[r.step] ?? 0)}%)${left}`);
  const { renderTable } = await import('./table.ts');
  if (figures) {
    print(`figures since ${r.stepStartedAt} from ${figures.gateways} gateway${figures.gateways === 1 ? '' : 's'}${figures.verdict ? `; now: ${figures.verdict}` : ''}`);
    print(renderTable(['SUBSET', 'REQUESTS', '5XX', 'ERROR RATE', 'P95'], figures.subsets.map((s) => [s.subset, s.requests, s.errors, `${s.errorRate}%`, s.p95Ms === null ? null : `${s.p95Ms} ms`])));
  }
  print(renderTable(['AT', 'EVENT', 'STEP', 'WEIGHT', 'BY', 'REASON'], r.history.map((h) => [h.at, h.event, h.step + 1, h.weight, h.by ?? null, h.reason ?? null])));
});
for (const action of ['promote', 'pause', 'resume', 'abort'] as const) {
  const what = { promote: 'jump to 100% canary and end the rollout', pause: 'stop advancing (weights stay)', resume: 'go on from the current step (its soak starts again)', abort: 'back to 100% stable and end the rollout' }[action];
  kvOptions(rollout.command(action).argument('<service>').description(what)).action(async (service: string, f: ConsulFlags) => {
    const [store, { actOnRollout }] = await withConsul(f, import('./rollout.ts'));
    const done = await actOnRollout(store, f.kvPrefix, service, action);
    if (f.json) return print(JSON.stringify(done, null, 2));
    const weights = done.weights ? `; weights ${Object.entries(done.weights).map(([t, w]) => `${t}=${w}`).join(' ')}` : '';
    print(`${service}: ${done.rollout.state}${weights}`);
  });
}
kvOptions(program.command('rollouts').description('every rollout stored in KV with its state and step')).action(async (f: ConsulFlags) => {
  const [store, [{ listRollouts }, { renderTable }]] = await withConsul(f, Promise.all([import('./rollout.ts'), import('./table.ts')]));
  const list = await listRollouts(store, f.kvPrefix);
  if (f.json) return print(JSON.stringify(list, null, 2));
  if (list.length === 0) return print('no rollouts');
  print(
    renderTable(
      ['SERVICE', 'STATE', 'STEP', 'CANARY', 'STABLE', 'MODIFYINDEX', 'INVALID'],
      list.map((s) => [s.rollout?.service ?? s.key, s.rollout?.state ?? null, s.rollout ? `${s.rollout.step + 1}/${s.rollout.steps.length}` : null, s.rollout ? `${s.rollout.canary} ${s.rollout.steps[s.rollout.step] ?? 0}%` : null, s.rollout?.stable ?? null, s.modifyIndex, s.invalid]),
    ),
  );
});

// ---------------------------------------------------------------------------------------------
// policy documents

const policy = program
  .command('policy')
  .description('policy and route documents: validate files, push them to Consul KV')
  .addHelpText(
    'after',
    `
A directory is laid out like --policies: <dir>/<name>.yaml|yml|json are policy documents, stored at
<prefix>policies/<name>; <dir>/routes/<name>.yaml|yml|json are route documents, at <prefix>routes/<name>.`,
  );

policy
  .command('validate')
  .argument('<paths...>', 'policy files or directories (a file in a directory named routes/ is a route document)')
  .description('check documents with the gateway\'s own rules, including two policies for one target')
  .option('--json', 'print JSON: {ok, files: [{file, id, kind, ok, error}], conflicts}, plus error when invalid')
  .action(async (paths: string[], f: JsonFlag) => {
    const [{ formatValidation, validatePaths, validationJson, validationSummary }, { CliError }] = await Promise.all([import('./policy.ts'), import('./admin-client.ts')]);
    const report = validatePaths(paths);
    if (!report.ok) {
      if (!f.json) print(formatValidation(report).join('\n'));
      throw new CliError(validationSummary(report), 2, validationJson(report));
    }
    if (f.json) return print(JSON.stringify(validationJson(report), null, 2));
    print(formatValidation(report).join('\n'));
    print(`${report.files.length} document${report.files.length === 1 ? '' : 's'} valid`);
  });

import type { RolloutCriteria } from '../policy/rollout.ts';
interface PushFlags extends ConsulFlags {
  prune?: boolean;
  dryRun?: boolean;
  guard?: string;
  maxErrorRateIncrease: string;
  maxP95Increase: string;
  p95Slack: string;
  minRequests: string;
}
kvOptions(
  policy
    .command('push')
    .argument('<dir>', 'policy directory, laid out like --policies')
    .description('validate every document, then write the changed ones to KV with check-and-set')
    .option('--prune', 'also delete KV documents under <prefix>policies/ and <prefix>routes/ that have no file')
    .option('--dry-run', 'print what would change, write nothing')
    .option('--guard <duration>', 'watch the routes the change touches this long; if their error rate or p95 gets worse than before the change (the rollout criteria below), the gateways write the previous documents back')
    .option('--max-error-rate-increase <points>', 'with --guard: error rate may rise by at most this many percentage points', ROLLOUT_DEFAULTS.maxErrorRateIncrease)
    .option('--max-p95-increase <n%|duration>', 'with --guard: p95 may rise by this much (10% or 50ms)', ROLLOUT_DEFAULTS.maxP95Increase)
    .option('--p95-slack <duration>', 'with --guard: a p95 within this of before never fails', ROLLOUT_DEFAULTS.p95Slack)
    .option('--min-requests <n>', 'with --guard: requests after the change needed before it can be judged', ROLLOUT_DEFAULTS.minRequests),
).action(async (dir: string, f: PushFlags) => {
  const json = Boolean(f.json);
  let guard: { windowMs: number; criteria: RolloutCriteria } | undefined;
  if (f.guard !== undefined) {
    const { guardCriteria } = await import('../policy/rollout.ts');
    const parsed = guardCriteria(f.guard, f);
    if (!parsed.ok) {
      const { CliError } = await import('./admin-client.ts');
      throw new CliError(`invalid guard: ${parsed.error}`, 2);
    }
    guard = parsed.value;
  }
  const [store, [{ formatPushResult, formatValidation, PushRaceError, PushValidationError, pushPolicies, validationJson }, { CliError }]] = await withConsul(
    f,
    Promise.all([import('./policy.ts'), import('./admin-client.ts')]),
  );
  let outcome;
  try {
    outcome = await pushPolicies(store, dir, {
      kvPrefix: f.kvPrefix,
      prune: f.prune,
      dryRun: f.dryRun,
      ...(guard ? { guard } : {}),
      onResult: json ? undefined : (r: PushResult) => print(formatPushResult(r, Boolean(f.dryRun))),
    });
  } catch (err) {
    if (err instanceof PushValidationError) {
      if (!json) print(formatValidation(err.report).join('\n'));
      throw new CliError(err.message, err.exitCode, validationJson(err.report));
    }
    if (err instanceof PushRaceError) throw new CliError(err.message, err.exitCode, { dryRun: Boolean(f.dryRun), results: err.done });
    throw err;
  }
  if (json) return print(JSON.stringify({ dryRun: Boolean(f.dryRun), results: outcome.results, notInFiles: outcome.extra }, null, 2));
  if (outcome.results.length === 0) print('nothing to push');
  if (outcome.extra.length > 0) {
    print(`${outcome.extra.length} KV document${outcome.extra.length === 1 ? ' has' : 's have'} no file (kept; --prune deletes): ${outcome.extra.join(', ')}`);
  }
  if (outcome.guard) print(`guarded by ${outcome.guard.key} for ${f.guard ?? ''}: the gateways write the previous documents back if the routes get worse (cgw guards)`);
  if (f.dryRun) print('dry run: nothing written');
});

kvOptions(program.command('guards').description('guarded configuration changes (<prefix>guards/): watching, passed or reverted, with the reason and figures')).action(async (f: ConsulFlags) => {
  const [store, [{ listGuards }, { renderTable }]] = await withConsul(f, Promise.all([import('./policy.ts'), import('./table.ts')]));
  const list = await listGuards(store, f.kvPrefix);
  if (f.json) return print(JSON.stringify(list, null, 2));
  if (list.length === 0) return print('no guards');
  print(renderTable(['ID', 'STATE', 'CREATED', 'WINDOW', 'KEYS', 'BY', 'REASON'], list.map((g) => [g.guard?.id ?? g.key, g.guard?.state ?? 'INVALID', g.guard?.createdAt ?? null, g.guard ? `${g.guard.windowMs / 1000}s` : null, g.guard?.changes.map((c) => c.key).join(', ') ?? null, g.guard?.decision?.by ?? null, g.guard?.decision?.reason ?? g.invalid])));
});

// ---------------------------------------------------------------------------------------------
// configuration history

interface HistoryFlags extends ConsulFlags {
  kvRuntimePrefix?: string;
}
kvOptions(
  program
    .command('history')
    .description('configuration versions the gateways applied (policy and route documents, canary weights), newest first; * marks the version in KV now'),
).action(async (f: HistoryFlags) => {
  const [store, { readHistory, historyJson, historyRows, changeSummary }] = await withConsul(f, import('./history.ts'));
  const h = await readHistory(store, { kvPrefix: f.kvPrefix, runtimePrefix: f.kvRuntimePrefix });
  if (f.json) return print(JSON.stringify(historyJson(h), null, 2));
  const rows = historyRows(h);
  if (rows.length === 0) print(`no history under ${h.historyPrefix} (gateways write it as they apply changes)`);
  else {
    const { renderTable } = await import('./table.ts');
    print(renderTable(['', 'SEQ', 'VERSION', 'AT', 'SOURCE', 'BY', 'CHANGES'], rows.map((r) => [r.inForce ? '*' : ' ', r.seq, r.version, r.at, r.source, r.by, changeSummary(r, h.kvPrefix)])));
  }
  if (!h.entries.some((e) => e.version === h.currentVersion)) print(`\nin KV now: version ${h.currentVersion}, not recorded yet (no gateway has applied it, or none runs)`);
  if (rows.some((r) => r.changes.some((c) => !c.restorable))) print('\n! the value before this change is not kept (too large, or unknown to the writer): a rollback across it is refused');
  for (const r of h.refused) print(`refused entry ${r.key}: ${r.error}`);
});

kvOptions(
  program
    .command('rollback')
    .argument('<version>', 'a version as cgw history lists it (or its first digits, at least 4)')
    .description('write the policy and route documents and canary weights of that version back to KV (check-and-set), validated first; keys the version did not have are deleted')
    .option('--dry-run', 'print what would be written, write nothing'),
).action(async (version: string, f: HistoryFlags & { dryRun?: boolean }) => {
  const json = Boolean(f.json);
  const [store, [{ rollback, formatStep, stepsJson, RollbackRaceError }, { CliError }]] = await withConsul(f, Promise.all([import('./history.ts'), import('./admin-client.ts')]));
  let outcome;
  try {
    outcome = await rollback(store, version, {
      kvPrefix: f.kvPrefix,
      runtimePrefix: f.kvRuntimePrefix,
      dryRun: f.dryRun,
      onStep: json ? undefined : (s) => print(formatStep(s, Boolean(f.dryRun))),
    });
  } catch (err) {
    if (err instanceof RollbackRaceError) throw new CliError(err.message, err.exitCode, { written: stepsJson(err.done) });
    throw err;
  }
  if (json) return print(JSON.stringify({ version: outcome.version, seq: outcome.seq, dryRun: outcome.dryRun, steps: stepsJson(outcome.steps), refused: outcome.refused }, null, 2));
  for (const r of outcome.refused) print(`note: refused history entry ${r.key}: ${r.error}`);
  if (outcome.steps.length === 0) return print(`version ${outcome.version} is already in KV: nothing to do`);
  print(
    f.dryRun
      ? `dry run: nothing written (version ${outcome.version}, entry ${outcome.seq} of ${outcome.at})`
      : `rolled back to version ${outcome.version} (entry ${outcome.seq} of ${outcome.at}): ${outcome.steps.length} key${outcome.steps.length === 1 ? '' : 's'} written; the gateways apply it as soon as they see the change`,
  );
});

// ---------------------------------------------------------------------------------------------
// API-key consumers

interface PlanFlags extends ConsulFlags {
  admin?: string;
  force?: boolean;
}
interface ConsumerAddFlags extends PlanFlags, ConsumerAddOptions {
  scopes?: string[];
}

/** The gateway whose documents in force (files included) define plans too. */
const adminReader = async (f: PlanFlags): Promise<AdminReader> => {
  const { fetchAdmin, resolveAdminAddress } = await import('./admin-client.ts');
  const address = resolveAdminAddress(f.admin, env);
  return { address, read: (path) => fetchAdmin<unknown>(address, path) };
};

const planOptions = (cmd: Command): Command =>
  adminOption(cmd).option('--force', 'write even when no policy (in KV, or in force at the gateway) defines the plan');

async function printIssued(issued: IssuedKey & { warnings: readonly string[] }, json: boolean, verb: string): Promise<void> {
  if (json) {
    return print(JSON.stringify({ ...issued, note: 'the key is shown only now: KV stores its SHA-256, never the key' }, null, 2));
  }
  print(`${verb} consumer ${issued.id} (${issued.kvKey})`);
  const { formatLimits } = await import('./consumer.ts');
  const details = [
    issued.plan ? `plan ${issued.plan}` : 'no plan',
    issued.scopes.length ? `scopes ${issued.scopes.join(',')}` : 'no scopes',
    issued.limits ? `limit ${formatLimits(issued.limits) ?? ''}` : null,
  ].filter((x) => x !== null);
  print(`  ${details.join(', ')}`);
  for (const w of issued.warnings) print(`warning: ${w}`);
  print('API key (shown only now; it cannot be shown again - KV keeps only its SHA-256):');
  print(issued.key);
}

const consumer = program.command('consumer').description('API-key consumers stored in Consul KV at <prefix>consumers/<id>');
kvOptions(
  planOptions(
    consumer
      .command('add')
      .argument('<id>', 'consumer id: 1-64 lower-case letters, digits and -')
      .description('create a consumer and print its new API key once (exit 1 if the consumer exists)')
      .option('--plan <plan>', 'plan name: must be defined under plans of a rate limit in some policy (see --force)')
      .option('--scopes <scopes>', 'comma-separated scopes granted (repeatable)', scopeList)
      .option('--limit <n>', 'the consumer\'s own rate limit: requests per --window', positiveNumber)
      .option('--window <duration>', 'rate-limit window, 1s to 24h (e.g. 1m)', durationText)
      .option('--burst <n>', 'requests allowed at once (default: --limit)', positiveNumber)
      .option('--description <text>', 'free text, up to 500 characters'),
  ),
).action(async (id: string, f: ConsumerAddFlags) => {
  const [store, { addConsumer }] = await withConsul(f, import('./consumer.ts'));
  const issued = await addConsumer(store, f.kvPrefix, id, f, { admin: await adminReader(f), force: f.force });
  await printIssued(issued, Boolean(f.json), 'created');
});
kvOptions(
  planOptions(
    consumer
      .command('rotate')
      .argument('<id>')
      .option('--plan <plan>', 'also move the consumer to this plan (checked like consumer add --plan)')
      .description('replace a consumer\'s key (scopes, limits and, without --plan, the plan stay); the old key stops working once gateways see the change'),
  ),
).action(async (id: string, f: PlanFlags & { plan?: string }) => {
  const [store, { rotateConsumer }] = await withConsul(f, import('./consumer.ts'));
  const issued = await rotateConsumer(store, f.kvPrefix, id, { plan: f.plan }, { admin: await adminReader(f), force: f.force });
  await printIssued(issued, Boolean(f.json), 'rotated the key of');
  if (!f.json) print('the previous key stops working as soon as the gateways see the change');
});
kvOptions(
  consumer.command('revoke').argument('<id>').description('delete a consumer (check-and-set); its key stops working once gateways see the change'),
).action(async (id: string, f: ConsulFlags) => {
  const [store, { revokeConsumer }] = await withConsul(f, import('./consumer.ts'));
  const result = await revokeConsumer(store, f.kvPrefix, id);
  if (f.json) return print(JSON.stringify({ ...result, revoked: true }, null, 2));
  print(`revoked consumer ${id}: deleted ${result.kvKey} (was ModifyIndex ${result.modifyIndex}); its key stops working as soon as the gateways see the change`);
});
kvOptions(program.command('consumers').description('consumers stored in KV: plan, scopes, limits, ModifyIndex (never keys or hashes); flags invalid records')).action(
  async (f: ConsulFlags) => {
    const [store, [{ listConsumers, formatLimits }, { renderTable }]] = await withConsul(f, Promise.all([import('./consumer.ts'), import('./table.ts')]));
    const list = await listConsumers(store, f.kvPrefix);
    if (f.json) return print(JSON.stringify(list, null, 2));
    if (list.length === 0) return print(`no consumers under ${f.kvPrefix.endsWith('/') || f.kvPrefix === '' ? f.kvPrefix : `${f.kvPrefix}/`}consumers/`);
    print(
      renderTable(
        ['ID', 'PLAN', 'SCOPES', 'LIMITS', 'MODIFYINDEX', 'DESCRIPTION', 'INVALID'],
        list.map((c) => [c.id, c.plan, c.scopes, formatLimits(c.limits), c.modifyIndex, c.description, c.invalid ? `INVALID: ${c.invalid}` : null]),
      ),
    );
    const invalid = list.filter((c) => c.invalid).length;
    if (invalid > 0) print(`\n${invalid} invalid record${invalid === 1 ? '' : 's'}: the gateway ignores ${invalid === 1 ? 'it' : 'them'} (a consumer it already knew keeps its last good record)`);
  },
);

program
  .command('fleet')
  .description("every gateway registered in Consul: address, version, snapshot, indexes behind, lag, health; flags lagging and critical ones (exit 1)")
  .option('--consul <address>', 'Consul HTTP API: host:port or http(s)://host:port (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8500)')
  .option('--token <token>', 'ACL token, sent as X-Consul-Token (default $CONSUL_HTTP_TOKEN_FILE, $CONSUL_HTTP_TOKEN)')
  .option('--service <name>', 'the service gateways register under (cgw start --register-service)', 'cgw')
  .option('--grace <duration>', 'how long a gateway may run another snapshot than the fleet before it is flagged lagging', '5s')
  .option('--json', 'print JSON (errors too)')
  .action(async (f: JsonFlag & { consul?: string; token?: string; service: string; grace: string }) => {
    const [{ consulKv }, { resolveConsulConnection }, fleet] = await Promise.all([import('./consul-kv.ts'), import('../consul/connection.ts'), import('./fleet.ts')]);
    fleet.checkFleetFlags(f);
    const view = await fleet.readFleet(consulKv(resolveConsulConnection({ address: f.consul, token: f.token }, env)), f);
    print(f.json ? JSON.stringify(view, null, 2) : fleet.renderFleet(view));
    if (!fleet.fleetHealthy(view)) process.exitCode = 1;
  });

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** `--json` on the command line (before a `--`): errors are then JSON on stdout too. */
function jsonRequested(): boolean {
  const args = process.argv.slice(2);
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).includes('--json');
}

/** One line on stderr and, with --json, {"error": {"message", "exitCode"}} on stdout; then exit. */
function fail(message: string, exitCode: number, details?: Readonly<Record<string, unknown>>): never {
  process.stderr.write(`cgw: ${message}\n`);
  if (jsonRequested()) print(JSON.stringify({ ...details, error: { message, exitCode } }, null, 2));
  process.exit(exitCode);
}

program
  .command('version')
  .description('the release and the commit it was built from')
  .option('--json', 'print JSON: {version, commit}')
  .action(async (f: JsonFlag) => {
    const { buildInfo, versionLine } = await import('../core/build-info.ts');
    print(f.json ? JSON.stringify(buildInfo(), null, 2) : versionLine());
  });

if (process.argv[2] === '--version' || process.argv[2] === '-V') {
  const { versionLine } = await import('../core/build-info.ts');
  print(versionLine());
  process.exit(0);
}

program.parseAsync(process.argv).then(
  () => {
    if (!keepRunning) process.exit(process.exitCode ?? 0);
  },
  async (err: unknown) => {
    if (err instanceof CommanderError) {
      // Commander has already printed the message (and help). Help and --version exit 0, a bare
      // command group shows its help and exits 1; everything else is a usage error: 2.
      const informational = ['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(err.code);
      if (informational) process.exit(err.exitCode);
      if (jsonRequested()) print(JSON.stringify({ error: { message: err.message.replace(/^error: /, ''), exitCode: 2 } }, null, 2));
      process.exit(2);
    }
    // The modules whose errors are told apart here were loaded by the action that threw (importing
    // them again is free); connection.ts (zod) only when the error is none of the CLI's own.
    const [{ CliError }, { NotReadyError }] = await Promise.all([import('./admin-client.ts'), import('./inspect.ts')]);
    if (err instanceof NotReadyError) {
      // The status (JSON or text) is printed already; only the exit code and a line remain.
      process.stderr.write(`cgw: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    if (err instanceof CliError) fail(err.message, err.exitCode, err.details);
    // A bad --consul, CONSUL_* value, token or certificate file: invalid input.
    const { ConsulSettingError } = await import('../consul/connection.ts');
    if (err instanceof ConsulSettingError) fail(err.message, 2);
    process.stderr.write(`cgw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    if (jsonRequested()) print(JSON.stringify({ error: { message: err instanceof Error ? err.message : String(err), exitCode: 1 } }, null, 2));
    process.exit(1);
  },
);
