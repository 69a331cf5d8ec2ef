import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CGW_VERSION } from './fleet.ts';

/**
 * The release and the commit it was built from, for `cgw version`, `--version` and the fleet.
 * The commit comes from `dist/build-info.json` when a packaging step wrote one (an image has no
 * `.git`), else from the checkout's `.git` read directly (HEAD, its ref, or packed-refs): no git
 * binary and no child process, so asking costs a few small reads.
 */
export interface BuildInfo {
  readonly version: string;
  /** Full commit hash, or null when neither source knows it. */
  readonly commit: string | null;
}

const HASH = /^[0-9a-f]{40}$/;

/** src/core or dist/core → the repository (or package) root. */
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export function buildInfo(root = ROOT): BuildInfo {
  return { version: CGW_VERSION, commit: fromBuildFile(root) ?? fromGit(root) };
}

export function versionLine(info: BuildInfo = buildInfo()): string {
  return `cgw ${info.version}${info.commit ? ` (commit ${info.commit.slice(0, 12)})` : ''}`;
}

function read(file: string): string | null {
  try {
    const text = readFileSync(file, 'utf8');
    return text.length > 64 * 1024 ? null : text;
  } catch {
    return null;
  }
}

function fromBuildFile(root: string): string | null {
  const text = read(join(root, 'dist', 'build-info.json'));
  if (text === null) return null;
  try {
    const commit = (JSON.parse(text) as { commit?: unknown }).commit;
    return typeof commit === 'string' && HASH.test(commit) ? commit : null;
  } catch {
    return null;
  }
}

function fromGit(root: string): string | null {
  const head = read(join(root, '.git', 'HEAD'))?.trim();
  if (!head) return null;
  if (HASH.test(head)) return head;
  const ref = /^ref: (refs\/[A-Za-z0-9._/-]+)$/.exec(head)?.[1];
  if (!ref || ref.split('/').includes('..')) return null;
  const loose = read(join(root, '.git', ref))?.trim();
  if (loose && HASH.test(loose)) return loose;
  for (const line of (read(join(root, '.git', 'packed-refs')) ?? '').split('\n')) {
    const [hash, name] = line.split(' ');
    if (name === ref && hash && HASH.test(hash)) return hash;
  }
  return null;
}
