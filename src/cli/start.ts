import { ZodError } from 'zod';
import { otlpEnvDefaults } from '../core/otlp-settings.ts';
import { consulEnvDefaults, formatConfigError, parseGatewayConfig, type GatewayConfigInput } from '../config.ts';
import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { Gateway, checkStartFiles } from '../gateway.ts';
import { ClusterPrimary } from '../cluster/primary.ts';
import { runWorker } from '../cluster/worker.ts';
import { CliError } from './admin-client.ts';
import { describeError } from '../core/errors.ts';

export interface StartFlags {
  consul?: string;
  token?: string;
  dc?: string;
  consistency?: string;
  wait?: string;
  consulMaxConns?: string;
  listen?: string;
  admin?: string;
  adminToken?: string;
  adminTokenFile?: string;
  adminInsecure?: boolean;
  kvPrefix?: string;
  fabioKvKey?: string;
  fabioKv?: boolean;
  kvRuntimePrefix?: string;
  gatewayId?: string;
  register?: boolean;
  registerService?: string;
  registerAddress?: string;
  logLevel?: string;
  logFormat?: string;
  otlpEndpoint?: string;
  otlpSample?: string;
  otlpHeaders?: string;
  otlpServiceName?: string;
  allowWarning?: boolean;
  accessLog?: boolean;
  accessLogSample?: string;
  picker?: string;
  connectTimeout?: string;
  responseTimeout?: string;
  drainTimeout?: string;
  resyncInterval?: string;
  policies?: string;
  redis?: string;
  redisSentinels?: string;
  redisSentinelName?: string;
  redisCluster?: string;
  maxHeaderSize?: string;
  workers?: string;
  maxHeaderCount?: string;
  maxConnections?: string;
  maxRequestsPerEndpoint?: string;
  clientHeaderTimeout?: string;
  clientBodyTimeout?: string;
  requestBufferSize?: string;
  mirrorMaxInFlight?: string;
  cacheMaxBytes?: string;
  listenTls?: string[];
  tlsCert?: string[];
  tlsKey?: string[];
  tlsDir?: string;
  tlsMinVersion?: string;
  tlsPollInterval?: string;
  upstreamCa?: string;
  tlsClientCa?: string;
  tlsClientAuth?: string;
  h2c?: boolean;
  http2MaxConcurrentStreams?: string;
  stateFile?: string;
  stateFileWait?: string;
}

/** Flags win over CONSUL_* and OTEL_* environment variables, which win over defaults. */
export function configFromFlags(flags: StartFlags, env: NodeJS.ProcessEnv) {
  const input: Record<string, unknown> = { ...consulEnvDefaults(env), ...otlpEnvDefaults(env, flags.otlpEndpoint !== undefined) };
  for (const [k, v] of Object.entries(flags)) if (v !== undefined) input[k] = v;
  try {
    return parseGatewayConfig(input as GatewayConfigInput);
  } catch (err) {
    if (err instanceof ZodError) throw new CliError(`invalid configuration:\n${formatConfigError(err)}`, 2);
    throw err;
  }
}

/** Runs until SIGTERM/SIGINT, then drains and exits 0 (1 if requests had to be cut). */
export async function runStart(flags: StartFlags): Promise<void> {
  const config = configFromFlags(flags, process.env);
  const workers = config.workers ?? availableParallelism();
  try {
    checkStartFiles(config);
  } catch (err) {
    throw new CliError(`cannot start: ${describeError(err)}`);
  }
  // A worker re-runs this command (node:cluster forks the same argv): it runs the data plane only.
  if (cluster.isWorker) return runWorker(config, workers);
  const gateway = workers > 1 ? new ClusterPrimary(config, workers) : new Gateway(config);
  // The last line of defence: every stream, socket and handler has its own error handling, and
  // a failure that still escapes belongs to one request or one watch, never to the whole gateway.
  // It is logged with its stack and counted, and the gateway keeps serving.
  const escaped = (kind: string) => (err: unknown) => {
    gateway.metrics.internalErrors.inc({ component: 'process' });
    gateway.logger.error({ err, kind }, 'error escaped its handler; the gateway keeps running');
  };
  process.on('uncaughtException', escaped('uncaughtException'));
  process.on('unhandledRejection', escaped('unhandledRejection'));
  try {
    await gateway.start();
  } catch (err) {
    throw new CliError(`cannot start: ${describeError(err)}`);
  }
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) {
      gateway.logger.warn({ signal }, 'second signal: exiting without waiting for the drain');
      process.exit(1);
    }
    stopping = true;
    gateway.logger.info({ signal }, 'shutting down');
    void gateway.close().then(
      ({ unfinished }) => {
        gateway.logger.flush();
        process.exitCode = unfinished > 0 ? 1 : 0;
        // Close logs and exit explicitly: a stray keep-alive socket must not hold the process.
        setImmediate(() => process.exit());
      },
      (err: unknown) => {
        gateway.logger.error({ err }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
