/** Runs the real gateway and CLI, compiled (dist/cli/main.js, see build.ts), as child processes for integration tests. */
import { spawn } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { assertBuilt, CLI } from './build.ts';
import { repoRoot } from './consul.ts';
import { freePorts } from './ports.ts';
import { collectLines, exitOf, hasExited, terminate, track } from './process.ts';

export { waitFor } from './wait.ts';
export type { WaitForOptions } from './wait.ts';

/** Start-up of a child gateway on a busy machine can take a while. */
const READY_TIMEOUT_MS = 30_000;

export interface GatewayOptions {
  /** Consul HTTP address, e.g. agent.addr. */
  consul: string;
  /** Extra CLI arguments appended after the defaults. */
  args?: string[];
  /** Extra environment (merged over process.env). */
  env?: Record<string, string>;
  /** Reuse fixed ports (e.g. to restart a gateway in place); default fresh free ports. */
  listenPort?: number;
  adminPort?: number;
  /** Wait until /-/readyz answers 200 (default true). With false, resolves once spawned. */
  waitReady?: boolean;
  /** Readiness bound (default 30000 ms). */
  readyTimeoutMs?: number;
}

export interface GatewayProcess {
  /** Proxy base URL, "http://127.0.0.1:PORT". */
  readonly url: string;
  /** Admin base URL, "http://127.0.0.1:PORT". */
  readonly adminUrl: string;
  readonly listenPort: number;
  readonly adminPort: number;
  readonly pid: number;
  /** stdout and stderr lines, interleaved in arrival order ("[err] " prefix for stderr). */
  readonly logs: string[];
  readonly stdout: string[];
  readonly stderr: string[];
  /**
   * Send `signal` by PID and resolve with the exit code (null if ended by a signal). Escalates
   * to SIGKILL after `killAfterMs` (default 15000) so a hung shutdown cannot hang the test.
   */
  kill(signal?: NodeJS.Signals, killAfterMs?: number): Promise<number | null>;
  /** Resolves with the exit code when the process exits (null if ended by a signal). */
  readonly exited: Promise<number | null>;
}

/**
 * Starts a gateway. A free port can be taken by another test's process between the check and
 * the gateway's bind; then the gateway exits and the other process answers on its admin port. The
 * ready check asks /v1/status for the pid that answered, and a gateway whose ports were taken is
 * started again on fresh ones (ports the caller chose are not retried).
 */
export async function startGateway(opts: GatewayOptions): Promise<GatewayProcess> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startGatewayOnce(opts);
    } catch (err) {
      const retry = err instanceof PortTakenError && opts.listenPort === undefined && opts.adminPort === undefined && attempt < 3;
      if (!retry) throw err;
    }
  }
}

class PortTakenError extends Error {}

async function answeredBy(adminUrl: string): Promise<number | null> {
  try {
    const res = await fetch(`${adminUrl}/v1/status`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as { pid?: number };
    return typeof body.pid === 'number' ? body.pid : null;
  } catch {
    return null;
  }
}

async function startGatewayOnce(opts: GatewayOptions): Promise<GatewayProcess> {
  const [freeA, freeB] = (await freePorts(2)) as [number, number];
  const listenPort = opts.listenPort ?? freeA;
  const adminPort = opts.adminPort ?? freeB;
  assertBuilt();
  const args = [
    CLI, 'start',
    '--consul', opts.consul,
    '--listen', `127.0.0.1:${listenPort}`,
    '--admin', `127.0.0.1:${adminPort}`,
    '--log-level', 'warn',
    // One process unless a test asks for workers: passive health and local limits are per
    // process, and most tests count on one of each (test/integration/workers.test.ts covers N).
    ...(opts.args?.includes('--workers') ? [] : ['--workers', '1']),
    ...(opts.args ?? []),
  ];
  const child = spawn(process.execPath, args, {
    cwd: repoRoot,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  const logs: string[] = [];
  const stdout: string[] = [];
  const stderr: string[] = [];
  collectLines(child.stdout, stdout, '', (l) => logs.push(l));
  collectLines(child.stderr, stderr, '', (l) => logs.push(`[err] ${l}`));
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', reject);
  });
  const exited = exitOf(child);
  const gw: GatewayProcess = {
    url: `http://127.0.0.1:${listenPort}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    listenPort,
    adminPort,
    pid: child.pid ?? -1,
    logs,
    stdout,
    stderr,
    kill: (signal = 'SIGTERM', killAfterMs = 15_000) => terminate(child, signal, killAfterMs),
    exited,
  };
  if (opts.waitReady === false) return gw;

  const timeoutMs = opts.readyTimeoutMs ?? READY_TIMEOUT_MS;
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  let takenBy: number | null | undefined;
  for (;;) {
    if (hasExited(child)) {
      await exited; // let the line readers flush
      const message = `gateway exited (code ${child.exitCode}, signal ${child.signalCode}) before it was ready\n${logs.join('\n')}`;
      throw logs.some((l) => l.includes('EADDRINUSE')) ? new PortTakenError(message) : new Error(message);
    }
    try {
      const res = await fetch(`${gw.adminUrl}/-/readyz`, { signal: AbortSignal.timeout(10_000) });
      const body = await res.text();
      if (res.status === 200) {
        const pid = await answeredBy(gw.adminUrl);
        if (pid === child.pid) return gw;
        takenBy = pid;
        break;
      }
      last = `${res.status} ${body.slice(0, 200)}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() >= deadline) break;
    await delay(50);
  }
  await terminate(child, 'SIGKILL');
  if (takenBy !== undefined) throw new PortTakenError(`another process (pid ${takenBy ?? 'unknown'}) answers on the admin port ${adminPort}`);
  throw new Error(`gateway not ready after ${timeoutMs} ms (last readyz: ${last})\n${logs.join('\n')}`);
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string>;
  /** Written to stdin, which is then closed. */
  input?: string;
  /** Kill the CLI (SIGKILL) and reject after this long (default 30000 ms). */
  timeoutMs?: number;
}

/** Runs `node dist/cli/main.js ...args` from the repo root and collects its output. */
export async function runCli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  assertBuilt();
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  track(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdin.on('error', () => {}); // EPIPE if the CLI exits without reading stdin
  child.stdin.end(opts.input ?? '');
  // 'close' (not 'exit') so that all output has been read.
  const closed = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const first = await Promise.race([closed, timedOut]);
  clearTimeout(timer);
  if (first === 'timeout') {
    await terminate(child, 'SIGKILL');
    throw new Error(`cgw ${args.join(' ')} did not finish within ${timeoutMs} ms\nstdout:\n${stdout}\nstderr:\n${stderr}`);
  }
  return { code: first, stdout, stderr };
}
