/**
 * A throwaway redis-server on a free loopback port, in memory only. stop() and start() keep the
 * port, so clients that reconnect by themselves find it again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { freePort } from './ports.ts';
import { collectLines, exitOf, hasExited, terminate, track } from './process.ts';

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** PID of the current process (changes after start()). */
  readonly pid: number;
  /** Server output, for failure messages. */
  readonly logs: string[];
  /** SIGTERM by PID and wait for exit. No-op when stopped. */
  stop(): Promise<void>;
  /** Start again on the same port; resolves once it accepts connections. No-op when running. */
  start(): Promise<void>;
}

const READY_LINE = 'Ready to accept connections';
const READY_TIMEOUT_MS = 20_000;

export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  const logs: string[] = [];
  let child: ChildProcess | undefined;

  const launch = async (): Promise<void> => {
    const c = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--protected-mode', 'no'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = c;
    track(c);
    let timer: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        const onLine = (line: string): void => {
          if (line.includes(READY_LINE)) resolve();
        };
        collectLines(c.stdout, logs, '', onLine);
        collectLines(c.stderr, logs, '', onLine);
        c.once('error', reject);
        void exitOf(c).then((code) => reject(new Error(`redis-server exited (code ${code}) before it was ready\n${logs.join('\n')}`)));
        // A guard against a wedged binary only; readiness itself comes from the log line.
        timer = setTimeout(() => reject(new Error(`redis-server not ready after ${READY_TIMEOUT_MS} ms\n${logs.join('\n')}`)), READY_TIMEOUT_MS);
      });
    } catch (err) {
      await terminate(c, 'SIGKILL');
      throw err;
    } finally {
      clearTimeout(timer);
    }
  };

  await launch();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get pid() {
      return child?.pid ?? -1;
    },
    logs,
    async stop() {
      if (child && !hasExited(child)) await terminate(child, 'SIGTERM', 5000);
    },
    async start() {
      if (child && !hasExited(child)) return;
      await launch();
    },
  };
}
