import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

/** Children started by the helpers that have not exited yet (for the exit-time safety net). */
const live = new Set<ChildProcess>();
/** Per child: resolves with the exit code once it has exited AND its stdio is drained. */
const closed = new WeakMap<ChildProcess, Promise<number | null>>();
let hooked = false;

/**
 * Remember a child so that, if the test process exits without cleaning up, the child is
 * SIGKILLed by its PID instead of being orphaned.
 */
export function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  closed.set(child, new Promise((resolve) => child.once('close', (code) => resolve(code))));
  if (!hooked) {
    hooked = true;
    const killAll = (): void => {
      for (const c of live) {
        if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
          try {
            process.kill(c.pid, 'SIGKILL');
          } catch {
            /* already gone */
          }
        }
      }
    };
    process.once('exit', killAll);
    // The test runner ends a file that ran out of time with a signal, and 'exit' does not run
    // then: the children (Consul agents, gateways) would be left behind.
    for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
      process.once(signal, () => {
        killAll();
        process.exit(128 + (signal === 'SIGTERM' ? 15 : signal === 'SIGINT' ? 2 : 1));
      });
    }
  }
}

/** Push each line of `stream` into `sink` (optionally prefixed); also call `onLine`. */
export function collectLines(
  stream: Readable | null,
  sink: string[],
  prefix = '',
  onLine?: (line: string) => void,
): void {
  if (!stream) return;
  const rl = createInterface({ input: stream, crlfDelay: Infinity });
  rl.on('line', (line) => {
    sink.push(prefix + line);
    onLine?.(line);
  });
}

export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/**
 * Resolves with the exit code (null when the child was ended by a signal). For tracked children
 * this waits for 'close', so every output line has been collected by then.
 */
export function exitOf(child: ChildProcess): Promise<number | null> {
  const c = closed.get(child);
  if (c) return c;
  if (hasExited(child)) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/**
 * Send `signal` to the child by PID and wait for it to exit; SIGKILL after `killAfterMs`.
 * Resolves with the exit code (null if it died from a signal). No-op if already exited.
 */
export async function terminate(
  child: ChildProcess,
  signal: NodeJS.Signals = 'SIGTERM',
  killAfterMs = 15_000,
): Promise<number | null> {
  const exited = exitOf(child);
  if (hasExited(child) || child.pid === undefined) return exited;
  try {
    process.kill(child.pid, signal);
  } catch {
    return exited; // raced with its own exit
  }
  let timer: NodeJS.Timeout | undefined;
  const escalate = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, killAfterMs);
  });
  const first = await Promise.race([exited.then(() => 'exited' as const), escalate.then(() => 'timeout' as const)]);
  clearTimeout(timer);
  if (first === 'timeout' && !hasExited(child) && child.pid !== undefined) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  return exited;
}
