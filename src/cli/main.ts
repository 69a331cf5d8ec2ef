#!/usr/bin/env node
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { PICKERS } from '../config.ts';
import { parseDuration } from '../core/duration.ts';
import { LOG_LEVELS } from '../core/logger.ts';
import { CliError } from './admin-client.ts';
import { clearCanary, getCanary, setCanary, type KvTarget } from './canary.ts';
import { addConsumer, formatLimits, listConsumers, revokeConsumer, rotateConsumer, type ConsumerAddOptions, type IssuedKey } from './consumer.ts';
import { endpoints, policies, routes, services, status, type InspectFlags } from './inspect.ts';
import {
  consulKv,
  formatPushResult,
  formatValidation,
  PushRaceError,
  PushValidationError,
  pushPolicies,
  validatePaths,
  validationJson,
  validationSummary,
  type PushResult,
} from './policy.ts';
import type { StartFlags } from './start.ts';
import { renderTable } from './table.ts';

const env = process.env;
/** Set by `start`; every other command exits when done (the consul client keeps sockets alive). */
let keepRunning = false;
const defaultAdmin = env.CGW_ADMIN ?? 'http://127.0.0.1:9901';
const defaultConsul = env.CONSUL_HTTP_ADDR ?? 'http://127.0.0.1:8500';

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
  .version('0.1.0')
  // Usage errors (unknown flag, bad number) throw instead of exiting 1, so they exit 2 like every
  // other invalid input. Inherited by every command defined below.
  .exitOverride()
  .showHelpAfterError()
  .addHelpText(
    'after',
    `
Environment:
  CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY,
  CONSUL_TLS_SERVER_NAME  as for the consul CLI (flags win)
  CGW_ADMIN               default for --admin
  CGW_REDIS               default for cgw start --redis

Commands by what they talk to:
  admin API (--admin)   status, services, endpoints, routes, policies
  Consul KV (--consul)  canary, policy push, consumer, consumers
  local files only      policy validate

Examples:
  cgw policy validate policies/                 check every document before a deploy
  cgw policy push policies/ --dry-run           what a push would change in KV
  cgw policy push policies/ --prune             copy to KV, delete KV documents without a file
  cgw consumer add acme --plan partner-gold --scopes billing:read
  cgw consumer rotate acme                      new key, same plan and scopes
  cgw policies                                  which version of each document is in force

Exit codes: 0 ok, 1 failure (gateway or Consul unreachable, no such consumer), 2 invalid input
(bad flag, invalid document), 3 lost a KV check-and-set race (someone else changed the key)`,
  );

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
  .option('--kv-prefix <prefix>', 'Consul KV prefix for gateway settings', 'gateway/')
  .addOption(new Option('--log-level <level>', 'log level').choices(LOG_LEVELS).default('info'))
  .option('--allow-warning', 'also route to instances whose worst check is warning (at Weights.Warning)')
  .option('--no-access-log', 'do not log one line per request')
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
  .option('--max-header-count <n>', 'most header fields a request may have (431 beyond)', '200')
  .option('--max-connections <n>', 'client connections open at once (default: half the open-file limit, at most 10000)')
  .option('--max-requests-per-endpoint <n>', 'concurrent requests per upstream endpoint (503 upstream_busy beyond)', '256')
  .option('--client-header-timeout <duration>', 'time a client has to send its request head (408)', '10s')
  .option('--client-body-timeout <duration>', 'longest pause between two pieces of a request body (408)', '30s')
  .option('--request-buffer-size <bytes>', 'bodies up to this size are read completely before an upstream is picked', '65536')
  .action(async (flags: StartFlags) => {
    keepRunning = true;
    // Loaded here: the gateway pulls in every room (pino, prom-client, ioredis, ...), which
    // would double the start-up time of every other command.
    const { runStart } = await import('./start.ts');
    await runStart(flags);
  });

const inspectOptions = (cmd: Command): Command =>
  cmd.option('--admin <url>', 'gateway admin API (env CGW_ADMIN)', defaultAdmin).option('--json', 'print JSON instead of a table');

inspectOptions(program.command('status').description('readiness, snapshot version, watches and rejected configuration')).action(
  (flags: InspectFlags) => status(flags),
);
inspectOptions(program.command('services').description('routed services with endpoint counts and canary shares')).action(
  (flags: InspectFlags) => services(flags),
);
inspectOptions(program.command('endpoints').argument('<service>').description('every instance of a service with health, weight and load')).action(
  (service: string, flags: InspectFlags) => endpoints(flags, service),
);
inspectOptions(program.command('routes').description('the route table: host/path → service')).action((flags: InspectFlags) => routes(flags));
inspectOptions(
  program.command('policies').description('policy and route documents: target, source (file or KV), version in force, and rejected versions'),
).action((flags: InspectFlags) => policies(flags));

interface CanaryFlags {
  consul: string;
  token?: string;
  kvPrefix: string;
  json?: boolean;
  cas?: number;
}
const kvOptions = (cmd: Command): Command =>
  cmd
    .option('--consul <url>', 'Consul HTTP address (env CONSUL_HTTP_ADDR)', defaultConsul)
    .option('--token <token>', 'ACL token (env CONSUL_HTTP_TOKEN)', env.CONSUL_HTTP_TOKEN)
    .option('--kv-prefix <prefix>', 'the gateway\'s KV prefix', 'gateway/')
    .option('--json', 'print JSON');
const target = (f: CanaryFlags): KvTarget => ({ consul: f.consul, token: f.token, kvPrefix: f.kvPrefix });

const canary = program.command('canary').description('canary weights by instance tag, stored in Consul KV');
kvOptions(canary.command('get').argument('<service>').description('show the weights stored for a service')).action(
  async (service: string, f: CanaryFlags) => {
    const record = await getCanary(target(f), service);
    if (f.json) return print(JSON.stringify(record ?? null, null, 2));
    if (!record) return print(`no canary weights for ${service}: plain balancing`);
    print(`key: ${record.key} (ModifyIndex ${record.modifyIndex})`);
    if (record.invalid) print(`INVALID value (the gateway keeps the last good weights): ${record.invalid}\nraw: ${record.raw ?? ''}`);
    else print(renderTable(['TAG', 'WEIGHT'], Object.entries(record.weights ?? {})));
  },
);
kvOptions(
  canary
    .command('set')
    .argument('<service>')
    .argument('<tag=weight...>', 'weights 0-100 that sum to 100, e.g. v1=90 v2=10')
    .description('validate and write weights with check-and-set')
    .option('--cas <modifyIndex>', 'only write if the key still has this ModifyIndex (0: only if absent)', wholeNumber),
).action(async (service: string, weights: string[], f: CanaryFlags) => {
  const result = await setCanary(target(f), service, weights, f.cas);
  if (f.json) return print(JSON.stringify(result, null, 2));
  print(`wrote ${result.key} (ModifyIndex ${result.modifyIndex}): ${Object.entries(result.weights).map(([t, w]) => `${t}=${w}`).join(' ')}`);
});
kvOptions(canary.command('clear').argument('<service>').description('delete the weights: back to plain balancing')).action(
  async (service: string, f: CanaryFlags) => {
    const result = await clearCanary(target(f), service);
    if (f.json) return print(JSON.stringify(result, null, 2));
    print(result.deleted ? `deleted ${result.key}: plain balancing` : `no canary weights for ${service}: nothing to do`);
  },
);

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
  .option('--json', 'print JSON: {ok, files: [{file, id, kind, ok, error}], conflicts}')
  .action((paths: string[], f: { json?: boolean }) => {
    const report = validatePaths(paths);
    print(f.json ? JSON.stringify(validationJson(report), null, 2) : formatValidation(report).join('\n'));
    if (!report.ok) throw new CliError(validationSummary(report), 2);
    if (!f.json) print(`${report.files.length} document${report.files.length === 1 ? '' : 's'} valid`);
  });

interface PushFlags extends CanaryFlags {
  prune?: boolean;
  dryRun?: boolean;
}
kvOptions(
  policy
    .command('push')
    .argument('<dir>', 'policy directory, laid out like --policies')
    .description('validate every document, then write the changed ones to KV with check-and-set')
    .option('--prune', 'also delete KV documents under <prefix>policies/ and <prefix>routes/ that have no file')
    .option('--dry-run', 'print what would change, write nothing'),
).action(async (dir: string, f: PushFlags) => {
  const json = Boolean(f.json);
  let outcome;
  try {
    outcome = await pushPolicies(consulKv(target(f)), dir, {
      kvPrefix: f.kvPrefix,
      prune: f.prune,
      dryRun: f.dryRun,
      onResult: json ? undefined : (r: PushResult) => print(formatPushResult(r, Boolean(f.dryRun))),
    });
  } catch (err) {
    if (err instanceof PushValidationError) print(json ? JSON.stringify(validationJson(err.report), null, 2) : formatValidation(err.report).join('\n'));
    else if (err instanceof PushRaceError && json) print(JSON.stringify({ dryRun: Boolean(f.dryRun), results: err.done, error: err.message }, null, 2));
    throw err;
  }
  if (json) return print(JSON.stringify({ dryRun: Boolean(f.dryRun), results: outcome.results, notInFiles: outcome.extra }, null, 2));
  if (outcome.results.length === 0) print('nothing to push');
  if (outcome.extra.length > 0) {
    print(`${outcome.extra.length} KV document${outcome.extra.length === 1 ? ' has' : 's have'} no file (kept; --prune deletes): ${outcome.extra.join(', ')}`);
  }
  if (f.dryRun) print('dry run: nothing written');
});

// ---------------------------------------------------------------------------------------------
// API-key consumers

interface ConsumerAddFlags extends CanaryFlags, ConsumerAddOptions {
  scopes?: string[];
}

function printIssued(issued: IssuedKey, json: boolean, verb: string): void {
  if (json) {
    return print(JSON.stringify({ ...issued, note: 'the key is shown only now: KV stores its SHA-256, never the key' }, null, 2));
  }
  print(`${verb} consumer ${issued.id} (${issued.kvKey})`);
  const details = [
    issued.plan ? `plan ${issued.plan}` : 'no plan',
    issued.scopes.length ? `scopes ${issued.scopes.join(',')}` : 'no scopes',
    issued.limits ? `limit ${formatLimits(issued.limits) ?? ''}` : null,
  ].filter((x) => x !== null);
  print(`  ${details.join(', ')}`);
  print('API key (shown only now; it cannot be shown again - KV keeps only its SHA-256):');
  print(issued.key);
}

const consumer = program.command('consumer').description('API-key consumers stored in Consul KV at <prefix>consumers/<id>');
kvOptions(
  consumer
    .command('add')
    .argument('<id>', 'consumer id: 1-64 lower-case letters, digits and -')
    .description('create a consumer and print its new API key once (fails if the consumer exists)')
    .option('--plan <plan>', 'plan name, used by rate limits with plans')
    .option('--scopes <scopes>', 'comma-separated scopes granted (repeatable)', scopeList)
    .option('--limit <n>', 'the consumer\'s own rate limit: requests per --window', positiveNumber)
    .option('--window <duration>', 'rate-limit window, 1s to 24h (e.g. 1m)', durationText)
    .option('--burst <n>', 'requests allowed at once (default: --limit)', positiveNumber)
    .option('--description <text>', 'free text, up to 500 characters'),
).action(async (id: string, f: ConsumerAddFlags) => {
  const issued = await addConsumer(consulKv(target(f)), f.kvPrefix, id, f);
  printIssued(issued, Boolean(f.json), 'created');
});
kvOptions(
  consumer
    .command('rotate')
    .argument('<id>')
    .description('replace a consumer\'s key (plan, scopes and limits stay); the old key stops working once gateways see the change'),
).action(async (id: string, f: CanaryFlags) => {
  const issued = await rotateConsumer(consulKv(target(f)), f.kvPrefix, id);
  printIssued(issued, Boolean(f.json), 'rotated the key of');
  if (!f.json) print('the previous key stops working as soon as the gateways see the change');
});
kvOptions(
  consumer.command('revoke').argument('<id>').description('delete a consumer (check-and-set); its key stops working once gateways see the change'),
).action(async (id: string, f: CanaryFlags) => {
  const result = await revokeConsumer(consulKv(target(f)), f.kvPrefix, id);
  if (f.json) return print(JSON.stringify({ ...result, revoked: true }, null, 2));
  print(`revoked consumer ${id}: deleted ${result.kvKey} (was ModifyIndex ${result.modifyIndex}); its key stops working as soon as the gateways see the change`);
});
kvOptions(program.command('consumers').description('consumers stored in KV: plan, scopes, limits, ModifyIndex (never keys or hashes); flags invalid records')).action(
  async (f: CanaryFlags) => {
    const list = await listConsumers(consulKv(target(f)), f.kvPrefix);
    if (f.json) return print(JSON.stringify(list, null, 2));
    if (list.length === 0) return print(`no consumers under ${f.kvPrefix.endsWith('/') ? f.kvPrefix : `${f.kvPrefix}/`}consumers/`);
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

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

program.parseAsync(process.argv).then(
  () => {
    if (!keepRunning) process.exit(process.exitCode ?? 0);
  },
  (err: unknown) => {
    if (err instanceof CommanderError) {
      // Commander has already printed the message (and help). Help and --version exit 0, a bare
      // command group shows its help and exits 1; everything else is a usage error: 2.
      const informational = ['commander.helpDisplayed', 'commander.version', 'commander.help'].includes(err.code);
      process.exit(informational ? err.exitCode : 2);
    }
    if (err instanceof CliError) {
      process.stderr.write(`cgw: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    process.stderr.write(`cgw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
