import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { constants, openSync, closeSync, fstatSync, readSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { MAX_STATE_FILE_BYTES } from './state-file.ts';

/** The state file holds KV certificates with their keys and policy credentials: owner only. */
export const STATE_FILE_MODE = 0o600;

export type StateFileRead =
  | { readonly kind: 'absent' }
  | { readonly kind: 'unreadable'; readonly error: string }
  | { readonly kind: 'oversized'; readonly size: number; readonly maxBytes: number }
  | { readonly kind: 'read'; readonly bytes: Buffer };

/**
 * Reads the file once, at start (synchronously: nothing serves yet). A file larger than the bound
 * is not read at all; one that grows while it is read is read up to the size it had, and its
 * JSON then ends early and is refused.
 */
export function readStateFileBytes(path: string, maxBytes = MAX_STATE_FILE_BYTES): StateFileRead {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO at the path would otherwise block the start until something writes to it.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { kind: 'absent' };
    return { kind: 'unreadable', error: (err as Error).message };
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) return { kind: 'unreadable', error: `${path} is not a regular file` };
    if (stat.size > maxBytes) return { kind: 'oversized', size: stat.size, maxBytes };
    const want = stat.size;
    const bytes = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const n = readSync(fd, bytes, got, want - got, got);
      if (n === 0) break;
      got += n;
    }
    return { kind: 'read', bytes: bytes.subarray(0, got) };
  } catch (err) {
    return { kind: 'unreadable', error: (err as Error).message };
  } finally {
    closeSync(fd);
  }
}

/**
 * Replaces `path` with `text` atomically: a temporary file in the same directory (so the rename
 * stays within one file system), written and fsynced, renamed over the old file, then the
 * directory fsynced so the rename itself survives a crash (rename(2) is atomic, its durability is
 * the directory's). A reader sees the old file or the new one, never a half-written one.
 */
export async function writeFileAtomically(path: string, text: string): Promise<void> {
  const dir = dirname(path);
  const temporary = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  // 'wx': never follow or reuse an existing file at the temporary name; created with mode 0600.
  const file = await open(temporary, 'wx', STATE_FILE_MODE);
  try {
    try {
      await file.writeFile(text, 'utf8');
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
  } catch (err) {
    await unlink(temporary).catch(() => {});
    throw err;
  }
  await syncDirectory(dir);
}

async function syncDirectory(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // Some file systems refuse fsync on a directory; the file itself is synced already.
  } finally {
    await handle?.close();
  }
}
