import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { Snapshot } from './snapshot.ts';
import { snapshotStructure } from './state-file-schema.ts';

/**
 * The `--state-file` envelope, pure: the last good snapshot with what it belongs to (Consul
 * address and datacenter, KV prefix) and a SHA-256 of the snapshot's JSON text, so a file changed
 * by anything but the writer (a disk error, a truncation, a hand edit) is detected and refused
 * whole. Reading and writing the file itself are in state-file-io.ts.
 */
export const STATE_FILE_FORMAT = 'cgw-state';
export const STATE_FILE_FORMAT_VERSION = 1;
/** Larger files are refused unread: a snapshot of thousands of services is a few MiB. */
export const MAX_STATE_FILE_BYTES = 64 * 1024 * 1024;

export interface StateFileOwner {
  /** The KV prefix the gateway watches: a file of another prefix describes another gateway. */
  readonly kvPrefix: string;
  /** --dc, when given: a file of another datacenter describes another fleet. */
  readonly datacenter: string | null;
}

export interface StateFileMeta extends StateFileOwner {
  readonly gatewayVersion: string;
  readonly consulAddress: string;
  readonly writtenAt: Date;
}

export interface StateFileEnvelope {
  readonly format: typeof STATE_FILE_FORMAT;
  readonly formatVersion: number;
  readonly gatewayVersion: string;
  readonly writtenAt: string;
  readonly snapshotVersion: string;
  readonly consul: { readonly address: string; readonly datacenter?: string };
  readonly kvPrefix: string;
  readonly sha256: string;
}

/**
 * - corrupt: not JSON, truncated, oversized, checksum or structure wrong. Our writer never leaves
 *   such a file (it renames a complete one into place), so something else damaged it.
 * - foreign: not a cgw state file, another format version, or another gateway's (other KV prefix
 *   or datacenter): valid perhaps, but not a description of this gateway.
 */
export type StateFileRefusal = 'corrupt' | 'foreign';

export type StateFileDecode =
  | { readonly ok: true; readonly envelope: StateFileEnvelope; readonly snapshot: Snapshot }
  | {
      readonly ok: false;
      readonly reason: StateFileRefusal;
      readonly error: string;
      /**
       * The writer may replace it: it is a cgw state file of this gateway's KV prefix and
       * datacenter (damaged, or of another format version). Anything else is left alone.
       */
      readonly replaceable: boolean;
    };

const envelopeSchema = z.strictObject({
  format: z.literal(STATE_FILE_FORMAT),
  formatVersion: z.literal(STATE_FILE_FORMAT_VERSION),
  gatewayVersion: z.string().max(200),
  writtenAt: z.iso.datetime(),
  snapshotVersion: z.string().regex(/^[0-9a-f]{16}$/),
  consul: z.strictObject({ address: z.string().max(2048), datacenter: z.string().max(200).optional() }),
  kvPrefix: z.string().max(1024),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  snapshot: z.unknown(),
});

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * The file's text. The snapshot's JSON is produced once: the checksum is of that text, and the
 * text is spliced into the envelope as the last field. A reader re-serialises the parsed snapshot
 * and gets the same text (JSON.parse keeps key order, numbers and strings round-trip exactly), so
 * whitespace added by an editor does not matter, but any changed value does.
 */
export function encodeStateFile(snapshot: Snapshot, meta: StateFileMeta): string {
  const snapshotText = JSON.stringify(snapshot);
  const head: StateFileEnvelope = {
    format: STATE_FILE_FORMAT,
    formatVersion: STATE_FILE_FORMAT_VERSION,
    gatewayVersion: meta.gatewayVersion,
    writtenAt: meta.writtenAt.toISOString(),
    snapshotVersion: snapshot.version,
    consul: { address: meta.consulAddress, ...(meta.datacenter !== null ? { datacenter: meta.datacenter } : {}) },
    kvPrefix: meta.kvPrefix,
    sha256: sha256(snapshotText),
  };
  return `${JSON.stringify(head).slice(0, -1)},"snapshot":${snapshotText}}\n`;
}

class PrototypeKeyError extends Error {}

/**
 * Refuses `__proto__` anywhere: JSON.parse makes it an own property, but any later copy by
 * assignment (`out[key] = value`) would turn it into a prototype. A snapshot never has one:
 * services of that name are never routed (core/own.ts).
 */
function noPrototypeKeys(key: string, value: unknown): unknown {
  if (key === '__proto__') throw new PrototypeKeyError('the file holds a "__proto__" key, which no snapshot has');
  return value;
}

function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid';
  return `${issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ` : ''}${issue.message}`;
}

/** Reads the file's text (or bytes, checked for size first): the snapshot, or why it is refused. Never throws. */
export function decodeStateFile(input: string | Buffer, owner: StateFileOwner): StateFileDecode {
  const corrupt = (error: string, replaceable = false): StateFileDecode => ({ ok: false, reason: 'corrupt', error, replaceable });
  const foreign = (error: string, replaceable = false): StateFileDecode => ({ ok: false, reason: 'foreign', error, replaceable });
  const size = typeof input === 'string' ? Buffer.byteLength(input) : input.length;
  if (size > MAX_STATE_FILE_BYTES) return corrupt(`the file is ${size} bytes, more than the ${MAX_STATE_FILE_BYTES} a state file may have`);
  if (size === 0) return corrupt('the file is empty');
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof input === 'string' ? input : input.toString('utf8'), noPrototypeKeys);
  } catch (err) {
    if (err instanceof PrototypeKeyError) return corrupt(err.message);
    if (err instanceof RangeError) return corrupt('values nested too deeply to be a snapshot');
    // A truncated file ends inside a value: JSON.parse reports the end of its input.
    return corrupt(`not JSON (truncated?): ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed) || (parsed as { format?: unknown }).format !== STATE_FILE_FORMAT) {
    return foreign(`not a cgw state file (no "format": "${STATE_FILE_FORMAT}")`);
  }
  const head = parsed as { formatVersion?: unknown; kvPrefix?: unknown; consul?: { datacenter?: unknown } };
  const sameOwner = head.kvPrefix === owner.kvPrefix && (owner.datacenter === null || head.consul?.datacenter === undefined || head.consul.datacenter === owner.datacenter);
  if (head.formatVersion !== STATE_FILE_FORMAT_VERSION) {
    return foreign(`format version ${JSON.stringify(head.formatVersion)?.slice(0, 40) ?? 'missing'}; this gateway reads version ${STATE_FILE_FORMAT_VERSION}`, sameOwner);
  }
  const envelope = envelopeSchema.safeParse(parsed);
  if (!envelope.success) return corrupt(`the envelope is not valid: ${firstIssue(envelope.error)}`, sameOwner);
  const e = envelope.data;
  if (e.kvPrefix !== owner.kvPrefix) return foreign(`written for KV prefix ${JSON.stringify(e.kvPrefix)}, this gateway watches ${JSON.stringify(owner.kvPrefix)}`);
  if (owner.datacenter !== null && e.consul.datacenter !== undefined && e.consul.datacenter !== owner.datacenter) {
    return foreign(`written for datacenter ${JSON.stringify(e.consul.datacenter)}, this gateway watches ${JSON.stringify(owner.datacenter)} (--dc)`);
  }
  let snapshotText: string;
  try {
    snapshotText = JSON.stringify(e.snapshot) ?? '';
  } catch (err) {
    // Nesting deeper than the stack: no snapshot is.
    return corrupt(`the snapshot cannot be read (values nested too deeply?): ${(err as Error).message}`, true);
  }
  if (sha256(snapshotText) !== e.sha256) return corrupt('checksum mismatch: the snapshot is not the one the gateway wrote', true);
  let structure: ReturnType<typeof snapshotStructure.safeParse>;
  try {
    structure = snapshotStructure.safeParse(e.snapshot);
  } catch (err) {
    return corrupt(`the snapshot cannot be checked: ${(err as Error).message}`, true);
  }
  if (!structure.success) return corrupt(`the snapshot is not valid: ${firstIssue(structure.error)}`, true);
  if (structure.data.version !== e.snapshotVersion) return corrupt(`the envelope names snapshot ${e.snapshotVersion} but holds ${structure.data.version}`, true);
  const { snapshot: _snapshot, ...rest } = e;
  // The checked value itself, not zod's copy: loose objects keep fields the check does not name.
  return { ok: true, envelope: rest, snapshot: e.snapshot as Snapshot };
}
