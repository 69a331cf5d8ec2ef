import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Problem } from '../core/types.ts';
import type { Snapshot } from './snapshot.ts';
import { decodeStateFile, encodeStateFile, MAX_STATE_FILE_BYTES, type StateFileEnvelope, type StateFileOwner } from './state-file.ts';
import { readStateFileBytes, writeFileAtomically } from './state-file-io.ts';
import { RateBoundedWriter, type WriterClock } from './rate-bounded-writer.ts';

class OversizedError extends Error {}

/** What `/v1/status`, `/-/readyz` and `cgw status` show of the state file. */
export interface StateFileView {
  readonly path: string;
  /** The snapshot in force came from the file: Consul was not reached at start (stale). */
  readonly inForce: boolean;
  /** Since when the file's snapshot serves (ISO), while it does. */
  readonly staleSince: string | null;
  /** The valid file read at start, whether or not it was ever needed. */
  readonly file: { readonly writtenAt: string; readonly snapshotVersion: string; readonly gatewayVersion: string; readonly consul: string } | null;
  /** Why the file read at start was refused (never applied, not even in part). */
  readonly refused: { readonly reason: string; readonly error: string; readonly at: string } | null;
  /** False when the file at the path is not this gateway's: it is never overwritten. */
  readonly writable: boolean;
  readonly lastWrite: { readonly at: string; readonly snapshotVersion: string; readonly outcome: 'written' | 'failed'; readonly error: string | null } | null;
}

export interface StateFileKeeperOptions {
  readonly path: string;
  /** What a file must belong to, to be read (the --kv-prefix, and --dc when given). */
  readonly owner: StateFileOwner;
  /** The datacenter written into the file: --dc, or the agent's once known. */
  readonly datacenter: () => string | null;
  readonly consulAddress: string;
  readonly gatewayVersion: string;
  readonly minIntervalMs: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly clock?: WriterClock;
  readonly write?: (path: string, text: string) => Promise<void>;
  /** The largest file written (tests lower it); the reader's bound by default. */
  readonly maxFileBytes?: number;
}

/**
 * The control plane's side of `--state-file`: reads the file once at start (refusing a corrupt
 * or foreign one whole, with a clear line), writes each newly published snapshot to it (rate
 * bounded, atomically), and keeps the stale mark while the file's snapshot serves.
 */
export class StateFileKeeper {
  private readonly writer: RateBoundedWriter<Snapshot>;
  private loaded: { envelope: StateFileEnvelope; snapshot: Snapshot } | undefined;
  private refusal: StateFileView['refused'] = null;
  private writable = true;
  private servingSince: number | undefined;
  /** The snapshot version the file holds (read at start, or last written): not written again. */
  private fileVersion: string | undefined;
  private fileWrittenAt: number | undefined;
  private lastWrite: StateFileView['lastWrite'] = null;

  constructor(private readonly options: StateFileKeeperOptions) {
    const write = options.write ?? writeFileAtomically;
    this.writer = new RateBoundedWriter<Snapshot>({
      minIntervalMs: options.minIntervalMs,
      clock: options.clock,
      write: async (snapshot) => {
        const writtenAt = new Date(this.now());
        const text = encodeStateFile(snapshot, { gatewayVersion: options.gatewayVersion, consulAddress: options.consulAddress, kvPrefix: options.owner.kvPrefix, datacenter: options.datacenter(), writtenAt });
        const bytes = Buffer.byteLength(text);
        // A file the reader would refuse is not written; the one on disk (older, readable) stays.
        const max = options.maxFileBytes ?? MAX_STATE_FILE_BYTES;
        if (bytes > max) throw new OversizedError(`the snapshot takes ${bytes} bytes, more than the ${max} a state file may have; the file keeps an older snapshot`);
        await write(options.path, text);
        this.fileWrittenAt = writtenAt.getTime();
      },
      onWritten: (snapshot) => {
        this.fileVersion = snapshot.version;
        // A damaged file refused at start is now replaced by a good one.
        this.refusal = null;
        this.lastWrite = { at: new Date(this.now()).toISOString(), snapshotVersion: snapshot.version, outcome: 'written', error: null };
        options.metrics.stateFileWrites.inc({ outcome: 'written' });
      },
      onFailed: (snapshot, err) => {
        const error = (err as Error).message ?? String(err);
        // One error line per streak of failures (a retry every 5 s would repeat it), each one counted.
        const level = this.lastWrite?.outcome === 'failed' ? 'debug' : 'error';
        this.lastWrite = { at: new Date(this.now()).toISOString(), snapshotVersion: snapshot.version, outcome: 'failed', error };
        options.metrics.stateFileWrites.inc({ outcome: 'failed' });
        const retry = !(err instanceof OversizedError);
        options.logger[level]({ stateFile: options.path, err: error, version: snapshot.version }, `state file could not be written; ${retry ? 'retried with the newest snapshot' : 'the next version is tried'}`);
        return retry;
      },
    });
    options.metrics.stateFileInForce.set(0);
    options.metrics.hooks.stateFileAgeSeconds = () => this.ageSeconds();
  }

  private now(): number {
    return this.options.clock?.now() ?? Date.now();
  }

  /**
   * Reads and checks the file (once, at start). The snapshot when the file is valid; undefined
   * when absent or refused, and then the gateway waits for Consul as without a state file.
   */
  load(): Snapshot | undefined {
    const { path, logger, metrics } = this.options;
    const read = readStateFileBytes(path);
    if (read.kind === 'absent') {
      metrics.stateFileReads.inc({ outcome: 'absent' });
      logger.info({ stateFile: path }, 'no state file yet; it is written after the first snapshot');
      return undefined;
    }
    if (read.kind === 'unreadable') {
      metrics.stateFileReads.inc({ outcome: 'unreadable' });
      // Not known to be ours: left alone.
      this.writable = false;
      this.refuse('unreadable', read.error);
      return undefined;
    }
    if (read.kind === 'oversized') {
      metrics.stateFileReads.inc({ outcome: 'corrupt' });
      // Ours or not cannot be told without reading it: left alone.
      this.writable = false;
      this.refuse('corrupt', `the file is ${read.size} bytes, more than the ${read.maxBytes} a state file may have`);
      return undefined;
    }
    const decoded = decodeStateFile(read.bytes, this.options.owner);
    if (!decoded.ok) {
      metrics.stateFileReads.inc({ outcome: decoded.reason });
      this.writable = decoded.replaceable;
      this.refuse(decoded.reason, decoded.error);
      return undefined;
    }
    metrics.stateFileReads.inc({ outcome: 'valid' });
    this.loaded = decoded;
    this.fileVersion = decoded.snapshot.version;
    this.fileWrittenAt = Date.parse(decoded.envelope.writtenAt);
    logger.info({ stateFile: path, writtenAt: decoded.envelope.writtenAt, version: decoded.snapshot.version }, 'state file read; it serves only if Consul is not reached at start');
    return decoded.snapshot;
  }

  /** The data plane could not compile the file's snapshot: it is refused like a corrupt file. */
  refuseUncompilable(error: string): void {
    this.options.metrics.stateFileReads.inc({ outcome: 'uncompilable' });
    this.loaded = undefined;
    this.liveInForce();
    this.refuse('uncompilable', `the data plane cannot compile its snapshot: ${error}`);
  }

  private refuse(reason: string, error: string): void {
    this.refusal = { reason, error, at: new Date(this.now()).toISOString() };
    const keep = this.writable ? 'it is replaced by the next snapshot written' : 'it is never overwritten: remove it or choose another --state-file';
    this.options.logger.error(
      { stateFile: this.options.path, reason, error },
      `state file refused (${reason}): ${error}; not serving from it, waiting for Consul; ${keep}`,
    );
  }

  /** The file's snapshot is in force: Consul was not reached in time. */
  serving(): void {
    if (!this.loaded || this.servingSince !== undefined) return;
    this.servingSince = this.now();
    this.options.metrics.stateFileInForce.set(1);
    this.options.logger.warn(
      { stateFile: this.options.path, writtenAt: this.loaded.envelope.writtenAt, version: this.loaded.snapshot.version },
      `Consul not reached: serving the state file written at ${this.loaded.envelope.writtenAt} (stale until the first sync with Consul)`,
    );
  }

  get inForce(): boolean {
    return this.servingSince !== undefined;
  }

  /** A live snapshot from Consul is in force: the stale mark goes. */
  liveInForce(): void {
    if (this.servingSince === undefined) return;
    this.servingSince = undefined;
    this.options.metrics.stateFileInForce.set(0);
    this.options.logger.info({ stateFile: this.options.path }, 'first sync with Consul: the live snapshot replaces the state file');
  }

  /** A snapshot newly published: written later (rate bounded), unless the file holds it already. */
  published(snapshot: Snapshot): void {
    if (this.inForce || snapshot.version === this.fileVersion) return;
    if (!this.writable) {
      this.options.metrics.stateFileWrites.inc({ outcome: 'not_ours' });
      return;
    }
    this.writer.offer(snapshot);
  }

  private ageSeconds(): number {
    if (this.servingSince === undefined || this.fileWrittenAt === undefined) return 0;
    return Math.max(0, this.now() - this.fileWrittenAt) / 1000;
  }

  problems(): Problem[] {
    if (this.refusal) return [{ kind: 'state-file', subject: this.options.path, message: `refused (${this.refusal.reason}): ${this.refusal.error}` }];
    if (this.lastWrite?.outcome === 'failed') return [{ kind: 'state-file', subject: this.options.path, message: `cannot be written: ${this.lastWrite.error ?? ''}` }];
    return [];
  }

  view(): StateFileView {
    const file = this.loaded?.envelope;
    return {
      path: this.options.path,
      inForce: this.inForce,
      staleSince: this.servingSince === undefined ? null : new Date(this.servingSince).toISOString(),
      file: file ? { writtenAt: file.writtenAt, snapshotVersion: file.snapshotVersion, gatewayVersion: file.gatewayVersion, consul: file.consul.address } : null,
      refused: this.refusal,
      writable: this.writable,
      lastWrite: this.lastWrite,
    };
  }

  /** On drain: the newest snapshot is written before the process ends. */
  close(): Promise<void> {
    this.options.metrics.hooks.stateFileAgeSeconds = undefined;
    return this.writer.close();
  }
}
