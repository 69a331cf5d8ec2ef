import type { GatewayConfig } from '../config.ts';
import { createLogger, type Logger } from '../core/logger.ts';
import { defaultMaxConnections, openFileLimit } from '../core/limits.ts';
import { createMetrics } from '../core/metrics.ts';
import { withServices, type Snapshot } from '../state/snapshot.ts';
import { DataPlane } from '../data-plane.ts';
import { WORKER_SLOT_ENV, type FromWorker, type ToWorker } from './messages.ts';

/**
 * A worker: the data plane alone. It listens on the shared proxy port (node:cluster hands it
 * connections), runs whatever snapshot the primary sends, and answers the primary's questions.
 * It never talks to Consul, so the number of Consul connections does not grow with workers.
 */
export async function runWorker(config: GatewayConfig, workers: number): Promise<void> {
  const slot = process.env[WORKER_SLOT_ENV] ?? '?';
  const logger = createLogger(config.logLevel, config.logFormat).child({ worker: slot });
  const metrics = createMetrics();
  // --max-connections is for the whole gateway: each worker takes its share.
  const total = config.maxConnections ?? defaultMaxConnections(openFileLimit());
  const share: GatewayConfig = { ...config, maxConnections: Math.max(16, Math.ceil(total / workers)) };
  const data = new DataPlane(share, logger, metrics, workers);
  let current: Snapshot | undefined;
  let draining = false;

  const send = (message: FromWorker): void => {
    if (process.connected) process.send?.(message);
  };

  const apply = (snapshot: Snapshot): void => {
    const outcome = data.apply(snapshot);
    if (outcome.ok) {
      current = snapshot;
      send({ t: 'applied', version: snapshot.version });
    } else {
      send({ t: 'rejected', version: snapshot.version, error: outcome.error });
    }
  };

  const drain = async (timeoutMs: number): Promise<void> => {
    if (draining) return;
    draining = true;
    const { unfinished } = await data.drain(timeoutMs);
    await data.close();
    send({ t: 'drained', unfinished });
    logger.flush();
    setImmediate(() => process.exit(unfinished > 0 ? 1 : 0));
  };

  process.on('message', (message: ToWorker) => {
    switch (message.t) {
      case 'snapshot':
        return apply(message.snapshot);
      case 'delta': {
        if (!current || current.version !== message.base) return send({ t: 'resync' });
        apply(withServices(current, message.version, message.services, message.problems ?? current.problems));
        return;
      }
      case 'report':
        return send({ t: 'report', id: message.id, report: data.report(message.scope) });
      case 'metrics':
        void metrics.registry.getMetricsAsJSON().then((json) => send({ t: 'metrics', id: message.id, json }));
        return;
      case 'drain':
        void drain(message.timeoutMs);
        return;
    }
  });
  // Signalled directly (a process manager, an operator), or the primary is gone: drain and exit;
  // the primary replaces a worker that leaves while it is not itself shutting down.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void drain(config.drainTimeout));
  process.on('disconnect', () => void drain(Math.min(config.drainTimeout, 5_000)));
  guardProcess(logger, metrics);

  await data.start();
  send({ t: 'up', port: data.port });
}

/** As in a single process: an escaped error is logged and counted, the worker keeps serving. */
function guardProcess(logger: Logger, metrics: ReturnType<typeof createMetrics>): void {
  const escaped = (kind: string) => (err: unknown) => {
    metrics.internalErrors.inc({ component: 'process' });
    logger.error({ err, kind }, 'error escaped its handler; the worker keeps running');
  };
  process.on('uncaughtException', escaped('uncaughtException'));
  process.on('unhandledRejection', escaped('unhandledRejection'));
}
