import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { constants, openSync, closeSync, fstatSync, readSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { MAX_STATE_FILE_BYTES } from './state-file.ts';

/** The state file holds KV certificates with their keys and policy credentials: owner only. */
export const STATE_FILE_MODE = 0o600;

export type StateFileRead = { readonly kind: 'absent' } | { readonly kind: 'unreadable'; readonly error: string } | { readonly kind: 'read'; readonly bytes: Buffer };

/**
 * Reads the file once, at start (synchronously: nothing serves yet). At most one byte past the
 * bound is read, so an oversized file costs no more memory than the bound and is still seen as one.
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
    const want = Math.min(stat.size, maxBytes + 1);
    const bytes = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const n = readSync(fd, bytes, got, want - got, got);
      if (n === 0) break;
      got += n;
    }
    // stat.size can lag a file still growing: the size bound is on what was read.
    return { kind: 'read', bytes: stat.size > maxBytes ? Buffer.alloc(maxBytes + 1) : bytes.subarray(0, got) };
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
