#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from 'commander';
import { PICKERS } from '../config.ts';
import { LOG_LEVELS } from '../core/logger.ts';
import { CliError } from './admin-client.ts';
import { clearCanary, getCanary, setCanary, type KvTarget } from './canary.ts';
import { endpoints, routes, services, status, type InspectFlags } from './inspect.ts';
import { runStart, type StartFlags } from './start.ts';
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

const program = new Command('cgw')
  .description('cgw: the Consul-native API gateway')
  .version('0.1.0')
  .showHelpAfterError()
  .addHelpText(
    'after',
    `
Environment:
  CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY,
  CONSUL_TLS_SERVER_NAME  as for the consul CLI (flags win)
  CGW_ADMIN               default for --admin

Exit codes: 0 ok, 1 failure (gateway or Consul unreachable), 2 invalid input, 3 lost a KV check-and-set race`,
  );

program
  .command('start')
  .description('run the gateway: watch Consul, route and balance HTTP')
  .option('--consul <url>', 'Consul HTTP address (env CONSUL_HTTP_ADDR)', undefined)
  .option('--token <token>', 'ACL token sent as X-Consul-Token (env CONSUL_HTTP_TOKEN)')
  .option('--dc <datacenter>', 'datacenter to watch (default: the agent\'s own)')
  .addOption(new Option('--consistency <mode>', 'read consistency for watches').choices(['default', 'stale']))
  .option('--wait <duration>', 'blocking query wait (max 10m)', '5m')
  .option('--consul-max-conns <n>', 'connection budget towards Consul (the agent allows 200 per client IP)', '64')
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
  .action(async (flags: StartFlags) => {
    keepRunning = true;
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

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

program.parseAsync(process.argv).then(
  () => {
    if (!keepRunning) process.exit(process.exitCode ?? 0);
  },
  (err: unknown) => {
    if (err instanceof CliError) {
      process.stderr.write(`cgw: ${err.message}\n`);
      process.exit(err.exitCode);
    }
    process.stderr.write(`cgw: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
