import { readFileSync } from 'node:fs';

/**
 * The soft limit on open files (Linux `/proc/self/limits`), or undefined where it cannot be read.
 * Every client connection is a file descriptor, and so is every upstream connection it may need.
 */
export function openFileLimit(read: (path: string) => string = (p) => readFileSync(p, 'utf8')): number | undefined {
  try {
    const line = read('/proc/self/limits')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    if (soft === undefined) return undefined;
    if (soft === 'unlimited') return Number.MAX_SAFE_INTEGER;
    const n = Number(soft);
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** Descriptors kept for Consul, Redis, logs and the admin listener. */
const RESERVED_FILES = 256;
const MAX_DEFAULT_CONNECTIONS = 10_000;
const MIN_DEFAULT_CONNECTIONS = 64;

/**
 * Default `--max-connections`: half of what the open-file limit leaves after a reserve (a proxied
 * connection may hold an upstream one too), at most 10000, so the cap is reached, counted and
 * visible before accept() starts failing with EMFILE.
 */
export function defaultMaxConnections(fileLimit: number | undefined): number {
  if (fileLimit === undefined) return MAX_DEFAULT_CONNECTIONS;
  return Math.max(MIN_DEFAULT_CONNECTIONS, Math.min(MAX_DEFAULT_CONNECTIONS, Math.floor((fileLimit - RESERVED_FILES) / 2)));
}
