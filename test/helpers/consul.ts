/**
 * A real, throwaway Consul agent for integration tests (single server, bootstrap, loopback only,
 * every port freshly allocated). See docs/consul-notes.md, "Starting a throwaway agent for tests".
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { freePorts } from './ports.ts';
import { collectLines, exitOf, hasExited, terminate, track } from './process.ts';

export const repoRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));

export type CheckStatus = 'passing' | 'warning' | 'critical';

export interface ServiceRegistration {
  id: string;
  name: string;
  /** Defaults to 127.0.0.1. */
  address?: string;
  port: number;
  tags?: string[];
  weights?: { passing: number; warning: number };
  /** Default 'passing': a TTL check (CheckID `check:<id>`, TTL 10m). `false`: no check. */
  check?: CheckStatus | false;
  meta?: Record<string, string>;
}

export interface KvEntry {
  value: string;
  modifyIndex: number;
}

export interface ConsulAgent {
  /** "http://127.0.0.1:PORT" */
  readonly addr: string;
  readonly httpPort: number;
  readonly dataDir: string;
  /** PID of the current agent process (changes after start()). */
  readonly pid: number;
  /** Agent stdout/stderr lines, for failure output. */
  readonly logs: string[];
  /** SIGTERM by PID, wait for exit (SIGKILL after 5 s). Keeps the data dir. No-op if stopped. */
  stop(): Promise<void>;
  /** Restart on the same ports and data dir; resolves when ready again. No-op if running. */
  start(): Promise<void>;
  /** stop() and remove the data dir if this helper created it. Idempotent. */
  destroy(): Promise<void>;
  /** Register via the agent and wait until the catalog (and check status) reflect it. */
  register(svc: ServiceRegistration): Promise<void>;
  /** Deregister via the agent and wait until the catalog no longer lists it. */
  deregister(id: string): Promise<void>;
  /** Set the TTL check `check:<id>` and wait until the catalog shows the new status. */
  setCheck(id: string, status: CheckStatus): Promise<void>;
  /** Toggle service maintenance and wait until `_service_maintenance:<id>` (dis)appears. */
  serviceMaintenance(id: string, enable: boolean): Promise<void>;
  /** Toggle node maintenance and wait until `_node_maintenance` (dis)appears. */
  nodeMaintenance(enable: boolean): Promise<void>;
  kvPut(key: string, value: string): Promise<void>;
  kvGet(key: string): Promise<KvEntry | null>;
  kvDelete(key: string): Promise<void>;
  /** Raw HTTP call against the agent; JSON-encodes `body` unless it is a string. */
  api(method: string, path: string, body?: unknown): Promise<{ status: number; text: string; headers: Record<string, string | string[] | undefined> }>;
}

const NODE = 'test';
const READY_TIMEOUT_MS = 30_000;
const SYNC_TIMEOUT_MS = 15_000;
const POLL_MS = 50;

/** `consul` on PATH first, then `<repo>/.tools/bin/consul`. */
export function findConsul(): string {
  const candidates = [
    ...(process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'consul')),
    join(repoRoot, '.tools', 'bin', 'consul'),
  ];
  for (const c of candidates) {
    try {
      accessSync(c, fsConstants.X_OK);
      return c;
    } catch {
      /* next */
    }
  }
  throw new Error('consul binary not found on PATH or in .tools/bin; run: bash scripts/install-consul.sh');
}

export interface StartConsulOptions {
  dataDir?: string;
  /**
   * Extra agent configuration, HCL or JSON, one `-hcl` argument each, applied after the helper's
   * own, e.g. `limits { http_max_conns_per_client = 30 }`. The agent's HTTP limits count this
   * helper's own connections too (up to 16, idle ones closed after 4 s).
   */
  config?: string[];
}

/**
 * A free port can be taken by another test file's process between the check and the agent's
 * bind (the suite runs two files at once): the agent then exits with "address already in use",
 * and is started again on fresh ports.
 */
export async function startConsul(opts: StartConsulOptions = {}): Promise<ConsulAgent> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startConsulOnce(opts);
    } catch (err) {
      if (attempt >= 3 || !(err instanceof Error) || !err.message.includes('address already in use')) throw err;
    }
  }
}

async function startConsulOnce(opts: StartConsulOptions): Promise<ConsulAgent> {
  const bin = findConsul();
  const ownsDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'cgw-consul-')));
  const [httpPort, serfLan, serfWan, server] = (await freePorts(4)) as [number, number, number, number];
  const addr = `http://127.0.0.1:${httpPort}`;
  const args = [
    'agent', '-server', '-bootstrap', '-node', NODE, '-data-dir', dataDir,
    '-bind', '127.0.0.1', '-client', '127.0.0.1',
    '-http-port', String(httpPort), '-dns-port', '-1', '-grpc-port', '-1',
    '-serf-lan-port', String(serfLan), '-serf-wan-port', String(serfWan), '-server-port', String(server),
    '-log-level', 'warn',
    // No phoning home to checkpoint-api.hashicorp.com from tests.
    '-hcl', 'disable_update_check = true',
    // Raft's default multiplier (5) makes a fresh single server wait 5-10 s for its first
    // election; 1 brings startup (and restart) down to about 1-2 s. (The `consul { raft {} }`
    // tuning that -dev uses is ignored outside -dev on 1.8.7.)
    '-hcl', 'performance { raft_multiplier = 1 }',
    ...(opts.config ?? []).flatMap((c) => ['-hcl', c]),
  ];
  const logs: string[] = [];
  let child: ChildProcess | undefined;
  let dispatcher: Agent | undefined;
  let destroyed = false;

  const api: ConsulAgent['api'] = async (method, path, body) => {
    if (!dispatcher) throw new Error('consul agent is stopped');
    const res = await request(`${addr}${path}`, {
      method: method as 'GET',
      dispatcher,
      headersTimeout: 15_000,
      bodyTimeout: 15_000,
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
    return { status: res.statusCode, text: await res.body.text(), headers: res.headers };
  };
  const ok = async (method: string, path: string, body?: unknown): Promise<string> => {
    const r = await api(method, path, body);
    if (r.status !== 200) throw new Error(`consul ${method} ${path} -> ${r.status}: ${r.text.trim()}`);
    return r.text;
  };

  /** Bounded poll of `probe`; aborts early with the agent's logs if the process dies. */
  const until = async (what: string, probe: () => Promise<boolean>, timeoutMs: number): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    let lastErr: unknown;
    for (;;) {
      if (child && hasExited(child)) {
        throw new Error(`consul exited (code ${child.exitCode}, signal ${child.signalCode}) while waiting for ${what}\n${logs.join('\n')}`);
      }
      try {
        if (await probe()) return;
        lastErr = undefined;
      } catch (err) {
        lastErr = err;
      }
      if (Date.now() >= deadline) break;
      await delay(POLL_MS);
    }
    const why = lastErr instanceof Error ? `; last error: ${lastErr.message}` : '';
    throw new Error(`timed out after ${timeoutMs} ms waiting for consul: ${what}${why}\n${logs.slice(-50).join('\n')}`);
  };

  const launch = async (): Promise<void> => {
    dispatcher = new Agent({ connections: 16 });
    const c = spawn(bin, args, { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    track(c);
    collectLines(c.stdout, logs);
    collectLines(c.stderr, logs);
    await new Promise<void>((res, rej) => {
      c.once('spawn', () => res());
      c.once('error', rej);
    });
    try {
      await until('a leader', async () => {
        const r = await api('GET', '/v1/status/leader');
        return r.status === 200 && JSON.parse(r.text) !== '';
      }, READY_TIMEOUT_MS);
      await until('a KV write', async () => {
        const r = await api('PUT', '/v1/kv/cgw-test/ready', 'ok');
        return r.status === 200 && r.text.trim() === 'true';
      }, READY_TIMEOUT_MS);
      await until(`node "${NODE}" in the catalog`, async () => {
        const r = await api('GET', `/v1/catalog/node/${NODE}`);
        return r.status === 200 && (JSON.parse(r.text) as { Node?: unknown } | null)?.Node != null;
      }, READY_TIMEOUT_MS);
      await api('DELETE', '/v1/kv/cgw-test/ready');
    } catch (err) {
      await stop();
      throw err;
    }
  };

  const stop = async (): Promise<void> => {
    const c = child;
    if (c && !hasExited(c)) await terminate(c, 'SIGTERM', 5000);
    else if (c) await exitOf(c);
    const d = dispatcher;
    dispatcher = undefined;
    await d?.destroy();
  };

  type HealthCheck = { CheckID: string; Status: string; ServiceID: string };
  const nodeChecks = async (): Promise<HealthCheck[]> =>
    JSON.parse(await ok('GET', `/v1/health/node/${NODE}`)) as HealthCheck[];
  const nodeServices = async (): Promise<Record<string, unknown>> => {
    const n = JSON.parse(await ok('GET', `/v1/catalog/node/${NODE}`)) as { Services?: Record<string, unknown> } | null;
    return n?.Services ?? {};
  };
  const checkIs = async (checkId: string, status: string | null): Promise<boolean> => {
    const c = (await nodeChecks()).find((x) => x.CheckID === checkId);
    return status === null ? c === undefined : c?.Status === status;
  };

  try {
    await launch();
  } catch (err) {
    if (ownsDir) await rm(dataDir, { recursive: true, force: true });
    throw err;
  }

  const agent: ConsulAgent = {
    addr,
    httpPort,
    dataDir,
    logs,
    get pid(): number {
      return child?.pid ?? -1;
    },
    stop,
    async start() {
      if (destroyed) throw new Error('consul agent was destroyed');
      if (child && !hasExited(child)) return;
      await launch();
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      await stop();
      if (ownsDir) await rm(dataDir, { recursive: true, force: true });
    },
    api,

    async register(svc) {
      const check = svc.check ?? 'passing';
      const body: Record<string, unknown> = {
        ID: svc.id,
        Name: svc.name,
        Address: svc.address ?? '127.0.0.1',
        Port: svc.port,
        Tags: svc.tags ?? [],
      };
      if (svc.weights) body.Weights = { Passing: svc.weights.passing, Warning: svc.weights.warning };
      if (svc.meta) body.Meta = svc.meta;
      if (check !== false) body.Check = { CheckID: `check:${svc.id}`, Name: `ttl ${svc.id}`, TTL: '10m', Status: check };
      await ok('PUT', '/v1/agent/service/register', body);
      await until(`service ${svc.id} in the catalog`, async () => {
        if (!(svc.id in (await nodeServices()))) return false;
        return check === false || (await checkIs(`check:${svc.id}`, check));
      }, SYNC_TIMEOUT_MS);
    },
    async deregister(id) {
      await ok('PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`);
      await until(`service ${id} gone from the catalog`, async () => !(id in (await nodeServices())), SYNC_TIMEOUT_MS);
    },
    async setCheck(id, status) {
      const verb = status === 'passing' ? 'pass' : status === 'warning' ? 'warn' : 'fail';
      await ok('PUT', `/v1/agent/check/${verb}/${encodeURIComponent(`check:${id}`)}`);
      await until(`check:${id} ${status} in the catalog`, () => checkIs(`check:${id}`, status), SYNC_TIMEOUT_MS);
    },
    async serviceMaintenance(id, enable) {
      await ok('PUT', `/v1/agent/service/maintenance/${encodeURIComponent(id)}?enable=${enable}&reason=test`);
      await until(`maintenance ${enable ? 'on' : 'off'} for ${id}`,
        () => checkIs(`_service_maintenance:${id}`, enable ? 'critical' : null), SYNC_TIMEOUT_MS);
    },
    async nodeMaintenance(enable) {
      await ok('PUT', `/v1/agent/maintenance?enable=${enable}&reason=test`);
      await until(`node maintenance ${enable ? 'on' : 'off'}`,
        () => checkIs('_node_maintenance', enable ? 'critical' : null), SYNC_TIMEOUT_MS);
    },

    async kvPut(key, value) {
      const t = await ok('PUT', `/v1/kv/${kvPath(key)}`, value);
      if (t.trim() !== 'true') throw new Error(`consul KV PUT ${key} answered ${t.trim()}`);
    },
    async kvGet(key) {
      const r = await api('GET', `/v1/kv/${kvPath(key)}`);
      if (r.status === 404) return null;
      if (r.status !== 200) throw new Error(`consul KV GET ${key} -> ${r.status}: ${r.text.trim()}`);
      const [e] = JSON.parse(r.text) as Array<{ Value: string | null; ModifyIndex: number }>;
      if (!e) return null;
      return { value: e.Value === null ? '' : Buffer.from(e.Value, 'base64').toString('utf8'), modifyIndex: e.ModifyIndex };
    },
    async kvDelete(key) {
      await ok('DELETE', `/v1/kv/${kvPath(key)}`);
    },
  };
  return agent;
}

function kvPath(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}
