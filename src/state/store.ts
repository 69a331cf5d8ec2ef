import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import { problemKey, type Problem } from '../core/types.ts';
import { compactDiff, diffSnapshots } from './diff.ts';
import type { Snapshot } from './snapshot.ts';

export interface PublishedSnapshot {
  readonly snapshot: Snapshot;
  readonly appliedAt: number;
}

/**
 * Holds the snapshot in force. Publishing the same version does nothing (the "same config text →
 * skip" rule); a new version is logged as a diff, its newly seen problems are counted once, and
 * listeners (the runtime builder) are told.
 */
export class SnapshotStore {
  private published: PublishedSnapshot | undefined;
  private readonly listeners = new Set<(next: Snapshot, previous: Snapshot | undefined) => void>();

  constructor(
    private readonly logger: Logger,
    private readonly metrics: Metrics,
  ) {}

  get current(): PublishedSnapshot | undefined {
    return this.published;
  }

  onPublish(listener: (next: Snapshot, previous: Snapshot | undefined) => void): void {
    this.listeners.add(listener);
  }

  /** Returns true when the snapshot was new and is now in force. */
  publish(next: Snapshot): boolean {
    const previous = this.published?.snapshot;
    if (previous?.version === next.version) return false;

    const seen = new Set((previous?.problems ?? []).map(problemKey));
    for (const p of next.problems) {
      if (seen.has(problemKey(p))) continue;
      this.metrics.configRejected.inc({ kind: p.kind });
      // The same counter as a refused certificate file, so one alert covers both sources.
      if (p.kind === 'certificate') this.metrics.tlsCertificateRejections.inc({ source: `kv:${p.subject}` });
      this.logger.warn({ problem: p }, `configuration rejected: ${p.subject}: ${p.message}`);
    }
    this.countProblems(next.problems);

    this.published = { snapshot: next, appliedAt: Date.now() };
    this.metrics.snapshotsPublished.inc();
    this.metrics.snapshotTimestamp.set(this.published.appliedAt / 1000);
    this.metrics.routes.set(next.routes.length);
    this.logger.info({ version: next.version, previous: previous?.version ?? null, changes: compactDiff(diffSnapshots(previous, next)) }, 'snapshot applied');
    for (const listener of this.listeners) listener(next, previous);
    return true;
  }

  /**
   * The same version built anew (the first live build equal to the state file's snapshot): the
   * new object is kept, since incremental builds and worker deltas start from the objects they
   * built, but nothing is published.
   */
  adopt(next: Snapshot): void {
    if (this.published?.snapshot.version === next.version) this.published = { ...this.published, snapshot: next };
  }

  private countProblems(problems: readonly Problem[]): void {
    this.metrics.problems.reset();
    const byKind = new Map<string, number>();
    for (const p of problems) byKind.set(p.kind, (byKind.get(p.kind) ?? 0) + 1);
    for (const [kind, n] of byKind) this.metrics.problems.set({ kind }, n);
  }
}
