import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { KvEntry, Problem, RolloutFiguresReport } from '../core/types.ts';
import { KV_WRITERS, runtimeKeys } from '../core/kv-layout.ts';
import type { ConsulClient } from '../consul/client.ts';
import type { ConsulSession } from '../consul/session.ts';
import { parseRolloutValue } from '../policy/rollout.ts';
import { readRollouts } from '../state/rollouts-in-force.ts';
import { judgeStep } from '../state/rollout-judge.ts';
import { anyCircuitOpen, fleetFigures, parseFiguresRecord, type FiguresRecord } from '../state/rollout-figures.ts';
import { stepRollout } from '../state/rollout-steps.ts';
import { Rounds } from './rounds.ts';
import { KvCalls } from './kv-calls.ts';

/**
 * The gateway's part in rollouts, run by the control plane on a timer, never on the request path:
 * it publishes what its data planes counted for every service under rollout, and for each
 * progressing rollout either drives it (it holds the rollout's session lock: it adds up the
 * figures every gateway published for the current window, judges the step, and writes the next
 * state and weights with check-and-set) or leaves it to the gateway that does.
 */

export interface RolloutDriverOptions {
  readonly consul: ConsulClient;
  readonly session: ConsulSession;
  readonly gatewayId: string;
  readonly kvPrefix: string;
  readonly runtimePrefix: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** The KV view the control plane watches (rollout documents are read from it). */
  readonly kv: () => readonly KvEntry[] | undefined;
  /** What this gateway's data planes counted, by service. */
  readonly figures: () => Promise<Readonly<Record<string, RolloutFiguresReport>> | undefined>;
  readonly intervalMs?: number;
  readonly now?: () => Date;
}

/** How often figures are published and steps judged. */
export const DRIVER_INTERVAL_MS = 2_000;
/** A record that has not changed is written again this often (the leader sees the gateway is alive). */
const REPUBLISH_MS = 30_000;

export class RolloutDriver {
  private readonly rounds: Rounds;
  private readonly kv: KvCalls;
  /** Services this gateway drives now. */
  private readonly driving = new Set<string>();
  /** Last record written per service: its content without `at`, and when. */
  private readonly published = new Map<string, { content: string; at: number }>();
  private readonly issues = new Map<string, Problem>();

  constructor(private readonly options: RolloutDriverOptions) {
    // Marked as the rollout's, so the configuration history names it as the source.
    this.kv = new KvCalls(options.consul, KV_WRITERS['cgw rollout'], (operation, err) => this.failed(operation, err));
    this.rounds = new Rounds(options.intervalMs ?? DRIVER_INTERVAL_MS, () => this.round(), (err) => {
      options.metrics.internalErrors.inc({ component: 'rollout-driver' });
      options.logger.error({ err }, 'rollout driver round failed; the next one retries');
    });
  }

  start(): void {
    this.rounds.start();
  }

  /** Problems to show in `cgw status` (refused figure records, no session). */
  problems(): Problem[] {
    return [...this.issues.values()];
  }

  /** Services this gateway drives, for `/v1/status`. */
  drivingNow(): string[] {
    return [...this.driving].sort();
  }

  async close(): Promise<void> {
    this.rounds.stop();
    for (const service of this.driving) this.options.metrics.rolloutDriving.set({ service }, 0);
    this.driving.clear();
  }


  private async round(): Promise<void> {
    const kv = this.options.kv();
    if (!kv) return;
    // Invalid documents are the snapshot's problems, shown there already.
    const rollouts = readRollouts(kv, this.options.kvPrefix, []);
    const underway = [...rollouts.values()].filter((r) => r.rollout.state === 'progressing' || r.rollout.state === 'paused');
    for (const service of [...this.driving]) {
      const r = rollouts.get(service);
      if (!r || r.rollout.state !== 'progressing') await this.stopDriving(service);
    }
    if (underway.length === 0) return;
    const figures = await this.options.figures();
    for (const { rollout } of underway) {
      const counted = figures && Object.hasOwn(figures, rollout.service) ? figures[rollout.service] : undefined;
      if (counted) await this.publish(rollout.service, counted);
    }
    for (const { rollout } of underway) if (rollout.state === 'progressing' && !this.rounds.isStopped) await this.lead(rollout.service);
  }

  /** This gateway's record at `<runtime>figures/<service>/<gateway>`: written when it changed, or now and then. */
  private async publish(service: string, counted: RolloutFiguresReport): Promise<void> {
    const now = this.now();
    const record: FiguresRecord = { gateway: this.options.gatewayId, window: counted.window, at: now.toISOString(), subsets: counted.subsets as FiguresRecord['subsets'], canaryCircuitOpen: counted.canaryCircuitOpen };
    const content = JSON.stringify({ ...record, at: '' });
    const last = this.published.get(service);
    if (last && last.content === content && now.getTime() - last.at < REPUBLISH_MS) return;
    const key = `${runtimeKeys.figures(this.options.runtimePrefix, service)}${this.options.gatewayId}`;
    if (await this.kv.put(key, JSON.stringify(record), 'figures-write')) {
      this.published.set(service, { content, at: now.getTime() });
      this.options.metrics.rolloutFiguresWrites.inc({ outcome: 'ok' });
    } else {
      this.options.metrics.rolloutFiguresWrites.inc({ outcome: 'failed' });
    }
  }

  /** Drives the rollout when this gateway holds (or takes) its lock. */
  private async lead(service: string): Promise<void> {
    const { session, runtimePrefix, gatewayId } = this.options;
    const lockKey = runtimeKeys.rolloutLock(runtimePrefix, service);
    const holder = await this.kv.lockHolder(lockKey, 'lock-read');
    if (holder === 'error') return;
    if (!session.holds(holder.session)) {
      if (holder.session !== undefined || !(await session.acquire(lockKey, JSON.stringify({ gateway: gatewayId })))) {
        if (this.driving.delete(service)) {
          this.options.metrics.rolloutDriving.set({ service }, 0);
          this.options.logger.info({ service }, 'another gateway drives this rollout now');
        }
        return;
      }
    }
    if (!this.driving.has(service)) {
      this.driving.add(service);
      this.options.metrics.rolloutDriving.set({ service }, 1);
      this.options.logger.info({ service, gateway: gatewayId }, 'this gateway drives the rollout (session lock taken)');
    }
    await this.judge(service);
  }

  private async judge(service: string): Promise<void> {
    const { kvPrefix, runtimePrefix, gatewayId, logger, metrics } = this.options;
    // Read again rather than trust the watch: the document may have moved since it was delivered.
    const docKey = `${kvPrefix}rollouts/${service}`;
    const stored = await this.kv.list(docKey, false, 'rollout-read');
    const entry = stored?.find((e) => e.key === docKey);
    if (!entry) return;
    const parsed = parseRolloutValue(entry.value);
    if (!parsed.ok || parsed.value.state !== 'progressing' || parsed.value.service !== service) return;
    const rollout = parsed.value;
    const records = await this.readFigures(service);
    if (records === undefined) return;
    const window = rollout.stepStartedAt;
    const canary = fleetFigures(records, window, rollout.canary);
    const stable = fleetFigures(records, window, rollout.stable);
    const verdict = judgeStep(rollout.criteria, canary, stable, anyCircuitOpen(records, window));
    const now = this.now();
    const change = stepRollout(rollout, verdict, now, gatewayId);
    if (!change) return;
    const next = change.rollout;
    const decision = next.history.at(-1);
    if (!(await this.kv.put(docKey, JSON.stringify(next), 'rollout-write', entry.modifyIndex))) {
      logger.info({ service }, 'rollout changed meanwhile (check-and-set lost); judged again next round');
      return;
    }
    metrics.rolloutDecisions.inc({ service, event: decision?.event ?? 'unknown' });
    const line = { service, event: decision?.event, step: next.step + 1, of: next.steps.length, weight: decision?.weight, reason: decision?.reason, figures: decision?.figures, gateways: canary.gateways };
    if (decision?.event === 'rolled-back') logger.warn(line, `rollout of ${service} rolled back: ${decision.reason ?? ''}`);
    else logger.info(line, `rollout of ${service}: ${decision?.event ?? 'changed'}`);
    if (change.weights) await this.writeWeights(service, change.weights.weights);
    if (next.state !== 'progressing') {
      await this.stopDriving(service);
      await this.kv.remove(runtimeKeys.figures(runtimePrefix, service), 'figures-delete', { recurse: true });
    }
  }

  private async writeWeights(service: string, weights: Readonly<Record<string, number>>): Promise<void> {
    const key = `${this.options.kvPrefix}canary/${service}`;
    const current = await this.kv.list(key, false, 'weights-read');
    if (current === undefined) return;
    const index = current.find((e) => e.key === key)?.modifyIndex ?? 0;
    if (!(await this.kv.put(key, JSON.stringify({ weights }), 'weights-write', index))) {
      this.options.logger.error({ service, key, weights }, 'the rollout moved but its weights could not be written (check-and-set lost or Consul failed); set them with cgw canary set');
    }
  }

  private async stopDriving(service: string): Promise<void> {
    if (!this.driving.delete(service)) return;
    this.options.metrics.rolloutDriving.set({ service }, 0);
    await this.options.session.release(runtimeKeys.rolloutLock(this.options.runtimePrefix, service));
  }

  /** Every gateway's record for the service; invalid ones are refused one by one and shown. */
  private async readFigures(service: string): Promise<FiguresRecord[] | undefined> {
    const base = runtimeKeys.figures(this.options.runtimePrefix, service);
    const entries = await this.kv.list(base, true, 'figures-read');
    if (entries === undefined) return undefined;
    const out: FiguresRecord[] = [];
    for (const e of entries) {
      const parsed = parseFiguresRecord(e.value);
      if (parsed.ok) {
        this.issues.delete(e.key);
        out.push(parsed.value);
        continue;
      }
      if (this.issues.get(e.key)?.message.includes(`ModifyIndex ${e.modifyIndex}:`)) continue;
      this.options.metrics.rolloutFiguresRejected.inc();
      this.options.logger.warn({ key: e.key, error: parsed.error }, 'rollout figures refused; the other gateways are counted');
      this.issues.set(e.key, { kind: 'rollout', subject: e.key, message: `figures refused at ModifyIndex ${e.modifyIndex}: ${parsed.error}` });
    }
    return out;
  }

  private failed(operation: string, err: unknown): void {
    this.options.metrics.rolloutDriverErrors.inc({ operation });
    this.options.logger.warn({ operation, err: err instanceof Error ? err.message : String(err) }, 'rollout driver: Consul call failed; retried next round');
  }

  private now(): Date {
    return this.options.now?.() ?? new Date();
  }
}
