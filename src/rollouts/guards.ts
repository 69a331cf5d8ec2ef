import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { KvEntry, Problem, SubsetCounts } from '../core/types.ts';
import type { ConsulClient } from '../consul/client.ts';
import { KV_WRITERS } from '../core/kv-layout.ts';
import { documentOfKvKey } from '../policy/documents.ts';
import { guardableKey, parseGuardValue, valueHash, type Guard } from '../policy/guard.ts';
import { figuresBetween } from '../state/guard-figures.ts';
import { judgeStep } from '../state/rollout-judge.ts';
import { Rounds } from './rounds.ts';
import { KvCalls } from './kv-calls.ts';
import type { Snapshot } from '../state/snapshot.ts';

/**
 * Guarded configuration changes (`<prefix>guards/<id>`), watched by every gateway on its own
 * traffic: the routes the changed documents touch are compared after the change with the minutes
 * before it, by the rollout criteria. A gateway that sees them get worse claims the guard (a
 * check-and-set on it, so exactly one gateway reverts), writes each document's previous value
 * back with check-and-set (a key changed again since is left alone and named), and records the
 * decision with its figures. A guard whose window passes is marked passed the same way.
 *
 * Each gateway judges what it served rather than the fleet's sum: a revert needs no exchange of
 * figures, and the first gateway with enough evidence acts. Route counts are sampled every
 * SAMPLE_MS from the data planes (a few additions per request, kept since start) into a ring
 * covering BASELINE_MS, which bounds how far back "before the change" reaches.
 */

const SAMPLE_MS = 5_000;
const BASELINE_MS = 10 * 60_000;

interface Sample {
  readonly at: number;
  readonly tallies: Readonly<Record<string, SubsetCounts>>;
}

export interface GuardKeeperOptions {
  readonly consul: ConsulClient;
  readonly gatewayId: string;
  readonly kvPrefix: string;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly kv: () => readonly KvEntry[] | undefined;
  readonly snapshot: () => Snapshot | undefined;
  readonly tallies: () => Promise<Readonly<Record<string, SubsetCounts>> | undefined>;
  readonly intervalMs?: number;
}

export class GuardKeeper {
  private readonly rounds: Rounds;
  private readonly kv: KvCalls;
  private ring: Sample[] = [];
  /** When this gateway first saw each guard, with its counts then. */
  private readonly seen = new Map<string, Sample>();
  private readonly issues = new Map<string, Problem>();

  constructor(private readonly options: GuardKeeperOptions) {
    this.kv = new KvCalls(options.consul, KV_WRITERS['cgw guard'], (operation, err) => this.failed(operation, err));
    this.rounds = new Rounds(options.intervalMs ?? SAMPLE_MS, () => this.round(), (err) => {
      options.metrics.internalErrors.inc({ component: 'guards' });
      options.logger.error({ err }, 'guard round failed; the next one retries');
    });
  }

  start(): void {
    this.rounds.start();
  }

  close(): void {
    this.rounds.stop();
  }

  problems(): Problem[] {
    return [...this.issues.values()];
  }


  private async round(): Promise<void> {
    const tallies = await this.options.tallies();
    if (!tallies) return;
    const now = Date.now();
    const sample = { at: now, tallies };
    this.ring.push(sample);
    this.ring = this.ring.filter((s) => s.at >= now - BASELINE_MS - SAMPLE_MS);
    const kv = this.options.kv();
    if (!kv) return;
    const watching = this.readGuards(kv);
    for (const id of [...this.seen.keys()]) if (!watching.has(id)) this.seen.delete(id);
    for (const [id, { entry, guard }] of watching) {
      let start = this.seen.get(id);
      if (!start) {
        // The change reached this gateway about now (documents and guard come through one watch).
        start = sample;
        this.seen.set(id, start);
        continue;
      }
      await this.judge(entry, guard, start, sample);
    }
  }

  private readGuards(kv: readonly KvEntry[]): Map<string, { entry: KvEntry; guard: Guard }> {
    const base = `${this.options.kvPrefix}guards/`;
    const out = new Map<string, { entry: KvEntry; guard: Guard }>();
    for (const entry of kv) {
      if (!entry.key.startsWith(base)) continue;
      const parsed = parseGuardValue(entry.value);
      const refusal = !parsed.ok ? parsed.error : parsed.value.changes.find((c) => !guardableKey(c.key, this.options.kvPrefix))?.key;
      if (!parsed.ok || refusal !== undefined) {
        const message = `guard refused at ModifyIndex ${entry.modifyIndex}: ${!parsed.ok ? parsed.error : `it names ${refusal}, which is not a policy, route or canary key under ${this.options.kvPrefix}`}`;
        if (this.issues.get(entry.key)?.message !== message) {
          this.options.metrics.guardDecisions.inc({ outcome: 'refused' });
          this.options.logger.warn({ key: entry.key }, message);
        }
        this.issues.set(entry.key, { kind: 'guard', subject: entry.key, message });
        continue;
      }
      this.issues.delete(entry.key);
      if (parsed.value.state === 'watching' && entry.key === `${base}${parsed.value.id}`) out.set(parsed.value.id, { entry, guard: parsed.value });
    }
    for (const key of [...this.issues.keys()]) if (!kv.some((e) => e.key === key)) this.issues.delete(key);
    return out;
  }

  private async judge(entry: KvEntry, guard: Guard, start: Sample, now: Sample): Promise<void> {
    const routes = this.routesTouched(guard);
    // Before: the guard's window (at most the ring) up to the change; after: since the change.
    const from = this.ring.find((s) => s.at >= start.at - guard.windowMs) ?? start;
    const before = figuresBetween(from.tallies, start.tallies, routes);
    const after = figuresBetween(start.tallies, now.tallies, routes);
    const verdict = judgeStep(guard.criteria, after, before, false);
    const elapsed = now.at - start.at;
    if (verdict.verdict === 'fail') return this.revert(entry, guard, `${verdict.criterion}: ${verdict.reason.replace(/canary/g, 'after the change').replace(/stable's/g, "before's")}`, { ...verdict.figures });
    if (elapsed < guard.windowMs) return;
    const reason = verdict.verdict === 'pass' ? `the routes held for ${Math.round(guard.windowMs / 1000)}s` : `the window passed without enough traffic to judge (${verdict.reason})`;
    await this.finish(entry, guard, 'passed', reason, { ...verdict.figures }, [], []);
  }

  /** Route ids the guard's documents touch in the snapshot in force; every route when none can be told. */
  private routesTouched(guard: Guard): Set<string> | null {
    const snapshot = this.options.snapshot();
    if (!snapshot) return null;
    const ids = new Set<string>();
    for (const change of guard.changes) {
      const doc = documentOfKvKey(change.key, this.options.kvPrefix);
      const canary = change.key.startsWith(`${this.options.kvPrefix}canary/`) ? change.key.slice(this.options.kvPrefix.length + 'canary/'.length) : undefined;
      for (const r of snapshot.routes) {
        if (canary !== undefined && r.service === canary) ids.add(r.id);
        if (!doc) continue;
        const id = `${doc.kind === 'policy' ? 'policies' : 'routes'}/${doc.name}`;
        const service = Object.hasOwn(snapshot.services, r.service) ? snapshot.services[r.service] : undefined;
        const fromRoute = Object.values(r.policy.sources).includes(id) || Object.values(service?.policy.sources ?? {}).includes(id);
        const fromDocument = r.source.kind === 'kv' && r.source.key === change.key;
        if (fromRoute || fromDocument) ids.add(r.id);
      }
    }
    return ids.size > 0 ? ids : null;
  }

  private async revert(entry: KvEntry, guard: Guard, reason: string, figures: Record<string, number | null>): Promise<void> {
    const { logger, metrics, gatewayId } = this.options;
    // Claim it first: of the gateways that saw the regression, one writes the old values back.
    const claimed: Guard = { ...guard, state: 'reverting', decision: { at: new Date().toISOString(), reason, figures, by: gatewayId, reverted: [], skipped: [] } };
    if (!(await this.kv.put(entry.key, JSON.stringify(claimed), 'write', entry.modifyIndex))) return;
    const reverted: string[] = [];
    const skipped: string[] = [];
    for (const change of guard.changes) {
      const current = await this.kv.get(change.key, 'read');
      if (current === 'error') {
        skipped.push(`${change.key}: Consul could not be read`);
        continue;
      }
      if (valueHash(current?.value ?? null) !== change.written) {
        skipped.push(`${change.key}: changed again since the guarded change; left alone`);
        continue;
      }
      const ok = change.previous === null ? await this.kv.remove(change.key, 'delete', { cas: current?.modifyIndex ?? 0 }) : await this.kv.put(change.key, change.previous, 'write', current?.modifyIndex ?? 0);
      (ok ? reverted : skipped).push(ok ? change.key : `${change.key}: check-and-set lost; left alone`);
    }
    metrics.guardDecisions.inc({ outcome: 'reverted' });
    logger.warn({ guard: guard.id, reason, figures, reverted, skipped }, `guarded change ${guard.id} reverted: ${reason}`);
    const latest = await this.kv.get(entry.key, 'read');
    if (latest === 'error' || !latest) return;
    await this.kv.put(entry.key, JSON.stringify({ ...claimed, state: 'reverted', decision: { ...claimed.decision, reverted, skipped } }), 'write', latest.modifyIndex);
  }

  private async finish(entry: KvEntry, guard: Guard, state: 'passed', reason: string, figures: Record<string, number | null>, reverted: string[], skipped: string[]): Promise<void> {
    const done: Guard = { ...guard, state, decision: { at: new Date().toISOString(), reason, figures, by: this.options.gatewayId, reverted, skipped } };
    if (await this.kv.put(entry.key, JSON.stringify(done), 'write', entry.modifyIndex)) {
      this.options.metrics.guardDecisions.inc({ outcome: state });
      this.options.logger.info({ guard: guard.id, reason }, `guarded change ${guard.id} passed`);
    }
  }

  private failed(operation: string, err: unknown): void {
    this.options.metrics.rolloutDriverErrors.inc({ operation: `guard-${operation}` });
    this.options.logger.warn({ operation, err: err instanceof Error ? err.message : String(err) }, 'guard: Consul call failed; retried next round');
  }
}
