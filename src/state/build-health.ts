import { describeError } from '../core/errors.ts';
import type { Problem } from '../core/types.ts';

export interface BuildFailureView {
  readonly phase: 'snapshot' | 'runtime';
  readonly error: string;
  readonly since: string;
  readonly failures: number;
}

/**
 * Whether the newest configuration could be built. A build that fails despite every per-item
 * check is a bug, but it must be visible: the last good configuration keeps serving, and
 * `/-/readyz`, `cgw status` and `cgw_snapshot_build_failures_total` say that changes are not
 * being applied.
 */
export class BuildHealth {
  private failure: { phase: 'snapshot' | 'runtime'; error: string; since: number; failures: number } | undefined;

  failed(phase: 'snapshot' | 'runtime', err: unknown): void {
    const error = describeError(err);
    if (this.failure) {
      this.failure.failures += 1;
      this.failure.error = error;
      this.failure.phase = phase;
    } else {
      this.failure = { phase, error, since: Date.now(), failures: 1 };
    }
  }

  succeeded(): void {
    this.failure = undefined;
  }

  view(): BuildFailureView | null {
    const f = this.failure;
    return f ? { phase: f.phase, error: f.error, since: new Date(f.since).toISOString(), failures: f.failures } : null;
  }

  problems(): Problem[] {
    const f = this.failure;
    if (!f) return [];
    return [
      {
        kind: 'build',
        subject: `${f.phase} build`,
        message: `building the configuration has failed ${f.failures} time${f.failures === 1 ? '' : 's'} since ${new Date(f.since).toISOString()} (${f.error}); Consul changes are not applied, the last good configuration stays in force`,
        keptLastGood: true,
      },
    ];
  }
}
