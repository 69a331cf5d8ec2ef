import { setTimeout as delay } from 'node:timers/promises';

export interface WaitForOptions {
  /**
   * Give up after this long (default 15000 ms). A deadline, not a delay: waitFor returns as soon as
   * the condition holds, so a generous bound costs passing tests nothing and keeps a loaded machine
   * (process start-up, Consul propagation, scheduling) from failing them.
   */
  timeoutMs?: number;
  /** Delay between attempts (default 25 ms). */
  intervalMs?: number;
  /** Included in the timeout error. */
  message?: string;
}

/**
 * Bounded poll: calls `fn` until it returns something other than undefined/false, and resolves
 * with that value. Throws on timeout with `message`, the last value and the last error thrown by
 * `fn` (errors thrown by `fn` count as "not yet").
 */
export async function waitFor<T>(
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  opts: WaitForOptions = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const intervalMs = opts.intervalMs ?? 25;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  let lastErr: unknown;
  let attempts = 0;
  for (;;) {
    attempts++;
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
      last = v;
      lastErr = undefined;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() >= deadline) break;
    await delay(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
  const parts = [
    `waitFor timed out after ${timeoutMs} ms (${attempts} attempts)`,
    opts.message ? `: ${opts.message}` : '',
    `; last value: ${safeInspect(last)}`,
    lastErr !== undefined ? `; last error: ${lastErr instanceof Error ? lastErr.message : String(lastErr)}` : '',
  ];
  throw new Error(parts.join(''), lastErr !== undefined ? { cause: lastErr } : undefined);
}

function safeInspect(v: unknown): string {
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 500 ? `${s.slice(0, 500)}…` : s;
  } catch {
    return String(v);
  }
}

/**
 * Runs `write` (a Consul change), then polls `converged` until it holds, and returns the
 * milliseconds from the end of the write to the start of the first converged probe: the time the
 * change took to reach routing, as a client would see it.
 */
export async function propagationMs(write: () => Promise<void>, converged: () => Promise<boolean>, what: string): Promise<number> {
  await write();
  const written = Date.now();
  let startedAt = written;
  await waitFor(
    async () => {
      startedAt = Date.now();
      return converged();
    },
    { timeoutMs: 15_000, intervalMs: 10, message: what },
  );
  return startedAt - written;
}
