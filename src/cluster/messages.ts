import type { DataPlaneReport, ReportScope } from '../core/types.ts';
import type { ServiceSnapshot, Snapshot } from '../state/snapshot.ts';

/**
 * What the primary and its workers say to each other over IPC (structured clone). Snapshots are
 * plain data already; after the first full one a worker receives only what changed: the services
 * whose snapshot changed (and the problems when they did), applied on top of the snapshot it
 * runs, so routes and policies stay the same objects and its runtime recompiles nothing else.
 */
export type ToWorker =
  | { readonly t: 'snapshot'; readonly snapshot: Snapshot }
  | {
      readonly t: 'delta';
      readonly version: string;
      /** The version the delta applies to; a worker on another one asks for a full snapshot. */
      readonly base: string;
      readonly services: Readonly<Record<string, ServiceSnapshot>>;
      readonly problems?: Snapshot['problems'];
    }
  | { readonly t: 'report'; readonly id: number; readonly scope: ReportScope }
  | { readonly t: 'metrics'; readonly id: number }
  | { readonly t: 'drain'; readonly timeoutMs: number };

export type FromWorker =
  | { readonly t: 'up'; readonly port: number }
  | { readonly t: 'applied'; readonly version: string }
  | { readonly t: 'rejected'; readonly version: string; readonly error: string }
  | { readonly t: 'resync' }
  | { readonly t: 'report'; readonly id: number; readonly report: DataPlaneReport }
  | { readonly t: 'metrics'; readonly id: number; readonly json: unknown }
  | { readonly t: 'drained'; readonly unfinished: number };

/** Set in each worker's environment: its slot (0..N-1), so logs and `cgw status` can name it. */
export const WORKER_SLOT_ENV = 'CGW_WORKER_SLOT';
