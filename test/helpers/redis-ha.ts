/**
 * Throwaway highly available Redis set-ups on free loopback ports, from the plain `redis-server`
 * and `redis-cli` binaries (Debian's redis-server package; a sentinel is `redis-server <conf>
 * --sentinel`, as Redis' own docs allow, so no redis-sentinel binary is needed):
 *
 * - a Redis Cluster of 3 masters with one replica each, created by `redis-cli --cluster create`;
 * - a Sentinel group: one master, two replicas and three sentinels with a quorum of two.
 *
 * Timeouts are short (a node counts as failed after 1 s) so a failover takes seconds, not the
 * production defaults' 15-30 s. Every node writes only into its own temporary directory, every
 * process is stopped by its PID, and the directories are removed on stop().
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePorts } from './ports.ts';
import { collectLines, exitOf, hasExited, terminate, track } from './process.ts';
import { waitFor } from './wait.ts';

const run = promisify(execFile);
const HOST = '127.0.0.1';
const START_TIMEOUT_MS = 20_000;
/** Cluster creation and sentinel discovery gossip once a second or so; a loaded machine is slower. */
const CONVERGE_TIMEOUT_MS = 60_000;
/**
 * How long a node may stay silent before it is taken for failed (cluster and sentinel alike):
 * short for quick failovers, but not so short that a busy machine's stall fails a healthy master.
 */
export const NODE_TIMEOUT_MS = 2000;

export interface RedisNode {
  readonly port: number;
  readonly pid: number;
  readonly logs: string[];
  /** Kill by PID (SIGKILL by default: a crash, not a shutdown) and wait for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGSTOP: the process keeps its sockets open but answers nothing (a hung host). kill() still ends it. */
  freeze(): void;
  /** Running and not frozen: it answers. */
  readonly alive: boolean;
}

/** One `redis-cli` call against a loopback port; bounded, rejects on a non-zero exit. */
export async function redisCli(port: number, ...args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', HOST, '-p', String(port), ...args], { timeout: 10_000 });
  return stdout.trim();
}

async function spawnNode(port: number, args: string[], logs: string[]): Promise<RedisNode> {
  const child: ChildProcess = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  collectLines(child.stdout, logs, `[${port}] `);
  collectLines(child.stderr, logs, `[${port}] `);
  const exited = exitOf(child);
  try {
    await waitFor(
      async () => {
        if (hasExited(child)) throw new Error(`redis-server on ${port} exited (code ${await exited})`);
        return (await redisCli(port, 'PING').catch(() => '')) === 'PONG';
      },
      { timeoutMs: START_TIMEOUT_MS, intervalMs: 50, message: `redis-server on ${port} answers PING` },
    );
  } catch (err) {
    await terminate(child, 'SIGKILL');
    throw new Error(`${(err as Error).message}\n${logs.join('\n')}`);
  }
  let frozen = false;
  return {
    port,
    get pid() {
      return child.pid ?? -1;
    },
    logs,
    get alive() {
      return !frozen && !hasExited(child);
    },
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      // A stopped process takes SIGKILL only (any other signal waits until it runs again).
      if (!hasExited(child)) await terminate(child, frozen ? 'SIGKILL' : signal, 5000);
    },
    freeze() {
      if (child.pid === undefined || hasExited(child)) return;
      process.kill(child.pid, 'SIGSTOP');
      frozen = true;
    },
  };
}

/** Memory only, loopback only, logs to stdout, no protected mode (nothing but loopback can reach it). */
function baseArgs(port: number, dir: string): string[] {
  return ['--port', String(port), '--bind', HOST, '--protected-mode', 'no', '--save', '', '--appendonly', 'no', '--dir', dir, '--logfile', ''];
}

export interface RedisCluster {
  /** Every node, masters first as created (a failover changes who is master; ask `masterOf`). */
  readonly nodes: RedisNode[];
  /** `--redis-cluster` value: every node as host:port. */
  readonly seeds: string;
  readonly logs: string[];
  /** The port of the master that serves `key`'s slot now, as the given live node sees it. */
  masterOf(key: string): Promise<number>;
  /** The replicas of the master on `port` that answer. */
  replicasOf(port: number): Promise<number[]>;
  /** Resolves once every live node says cluster_state:ok and agrees that `port` is a master. */
  waitMaster(port: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

interface ClusterNodeLine {
  id: string;
  port: number;
  flags: string[];
  masterId: string;
  slots: Array<[number, number]>;
}

function parseClusterNodes(text: string): ClusterNodeLine[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const [id = '', addr = '', flags = '', masterId = '', , , , , ...slots] = line.trim().split(' ');
      const port = Number(addr.split('@')[0]?.split(':')[1]);
      return {
        id,
        port,
        flags: flags.split(','),
        masterId,
        slots: slots
          .filter((s) => !s.startsWith('['))
          .map((s) => {
            const [from, to] = s.split('-').map(Number);
            return [from ?? 0, to ?? from ?? 0] as [number, number];
          }),
      };
    });
}

export async function startRedisCluster(): Promise<RedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'cgw-redis-cluster-'));
  const logs: string[] = [];
  const nodes: RedisNode[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(nodes.map((n) => n.kill('SIGKILL')));
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const ports = await freePorts(6);
    nodes.push(
      ...(await Promise.all(
        ports.map((port) =>
          spawnNode(
            port,
            [
              ...baseArgs(port, dir),
              '--cluster-enabled', 'yes',
              '--cluster-config-file', join(dir, `nodes-${port}.conf`),
              '--cluster-node-timeout', String(NODE_TIMEOUT_MS),
              '--cluster-announce-ip', HOST,
              // A replica whose link broke a while ago still takes over: the test kills masters on purpose.
              '--cluster-replica-validity-factor', '0',
            ],
            logs,
          ),
        ),
      )),
    );
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `${HOST}:${p}`), '--cluster-replicas', '1', '--cluster-yes'], {
      timeout: CONVERGE_TIMEOUT_MS,
    });
    await waitFor(
      async () => {
        for (const port of ports) {
          const info = await redisCli(port, 'CLUSTER', 'INFO');
          if (!info.includes('cluster_state:ok') || !info.includes('cluster_known_nodes:6')) return false;
          const lines = parseClusterNodes(await redisCli(port, 'CLUSTER', 'NODES'));
          if (lines.filter((l) => l.flags.includes('master')).length !== 3 || lines.filter((l) => l.flags.includes('slave')).length !== 3) return false;
        }
        // Replicas must have synced, or none of them may take over.
        for (const port of ports) {
          const repl = await redisCli(port, 'INFO', 'replication');
          if (repl.includes('role:slave') && !repl.includes('master_link_status:up')) return false;
        }
        return true;
      },
      { timeoutMs: CONVERGE_TIMEOUT_MS, intervalMs: 200, message: 'Redis Cluster ok: 3 masters, 3 synced replicas' },
    );
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n${logs.slice(-60).join('\n')}`);
  }

  const liveNode = (): RedisNode => {
    const n = nodes.find((x) => x.alive);
    if (!n) throw new Error('no live cluster node');
    return n;
  };
  const nodesView = async (port: number): Promise<ClusterNodeLine[]> => parseClusterNodes(await redisCli(port, 'CLUSTER', 'NODES'));

  return {
    nodes,
    seeds: nodes.map((n) => `${HOST}:${n.port}`).join(','),
    logs,
    async masterOf(key) {
      const port = liveNode().port;
      const slot = Number(await redisCli(port, 'CLUSTER', 'KEYSLOT', key));
      const owner = (await nodesView(port)).find((l) => l.flags.includes('master') && l.slots.some(([a, b]) => slot >= a && slot <= b));
      if (!owner) throw new Error(`no master for slot ${slot}`);
      return owner.port;
    },
    async replicasOf(port) {
      const view = await nodesView(liveNode().port);
      const master = view.find((l) => l.port === port);
      const answering = new Set(nodes.filter((n) => n.alive).map((n) => n.port));
      return view.filter((l) => master !== undefined && l.masterId === master.id && answering.has(l.port)).map((l) => l.port);
    },
    async waitMaster(port, timeoutMs = CONVERGE_TIMEOUT_MS) {
      await waitFor(
        async () => {
          for (const n of nodes.filter((x) => x.alive)) {
            if (!(await redisCli(n.port, 'CLUSTER', 'INFO')).includes('cluster_state:ok')) return false;
            const me = (await nodesView(n.port)).find((l) => l.port === port);
            if (!me?.flags.includes('master') || me.slots.length === 0) return false;
          }
          return true;
        },
        { timeoutMs, intervalMs: 100, message: `every live node: cluster ok and ${port} a master with slots` },
      );
    },
    stop,
  };
}

export interface RedisSentinelGroup {
  readonly master: RedisNode;
  readonly replicas: RedisNode[];
  readonly sentinels: RedisNode[];
  readonly name: string;
  /** `--redis-sentinels` value. */
  readonly sentinelAddrs: string;
  readonly logs: string[];
  /** The master's port according to the first live sentinel. */
  currentMaster(): Promise<number>;
  /** Resolves once every live sentinel names a master other than `oldPort`, and that node says it is a master. */
  waitFailover(oldPort: number, timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

export async function startRedisSentinel(name = 'mymaster'): Promise<RedisSentinelGroup> {
  const dir = await mkdtemp(join(tmpdir(), 'cgw-redis-sentinel-'));
  const logs: string[] = [];
  const all: RedisNode[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(all.map((n) => n.kill('SIGKILL')));
    await rm(dir, { recursive: true, force: true });
  };
  let master: RedisNode;
  let replicas: RedisNode[];
  let sentinels: RedisNode[];
  try {
    const [masterPort = 0, r1 = 0, r2 = 0, ...sentinelPorts] = await freePorts(6);
    master = await spawnNode(masterPort, [...baseArgs(masterPort, dir), '--replica-announce-ip', HOST], logs);
    all.push(master);
    replicas = await Promise.all(
      [r1, r2].map((port) =>
        spawnNode(port, [...baseArgs(port, dir), '--replicaof', HOST, String(masterPort), '--replica-announce-ip', HOST], logs),
      ),
    );
    all.push(...replicas);
    sentinels = await Promise.all(
      sentinelPorts.map(async (port) => {
        // A sentinel rewrites its configuration file, so each gets its own, writable one.
        const conf = join(dir, `sentinel-${port}.conf`);
        await writeFile(
          conf,
          [
            `port ${port}`,
            `bind ${HOST}`,
            'protected-mode no',
            `dir ${dir}`,
            `sentinel announce-ip ${HOST}`,
            `sentinel monitor ${name} ${HOST} ${masterPort} 2`,
            `sentinel down-after-milliseconds ${name} ${NODE_TIMEOUT_MS}`,
            `sentinel failover-timeout ${name} 5000`,
            `sentinel parallel-syncs ${name} 2`,
            '',
          ].join('\n'),
        );
        return spawnNode(port, [conf, '--sentinel'], logs);
      }),
    );
    all.push(...sentinels);
    await waitFor(
      async () => {
        for (const s of sentinels) {
          const info = (await redisCli(s.port, 'SENTINEL', 'MASTER', name)).split('\n');
          const field = (k: string): string | undefined => info[info.indexOf(k) + 1];
          if (field('num-other-sentinels') !== '2' || field('num-slaves') !== '2') return false;
          if (!(await redisCli(s.port, 'SENTINEL', 'CKQUORUM', name)).startsWith('OK')) return false;
        }
        for (const r of replicas) if (!(await redisCli(r.port, 'INFO', 'replication')).includes('master_link_status:up')) return false;
        return true;
      },
      { timeoutMs: CONVERGE_TIMEOUT_MS, intervalMs: 200, message: 'three sentinels agree on the master and see both replicas in sync' },
    );
  } catch (err) {
    await stop();
    throw new Error(`${(err as Error).message}\n${logs.slice(-60).join('\n')}`);
  }

  const masterFrom = async (sentinelPort: number): Promise<number> => Number((await redisCli(sentinelPort, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)).split('\n')[1]);

  return {
    master,
    replicas,
    sentinels,
    name,
    sentinelAddrs: sentinels.map((s) => `${HOST}:${s.port}`).join(','),
    logs,
    currentMaster: () => masterFrom(sentinels[0]?.port ?? 0),
    async waitFailover(oldPort, timeoutMs = CONVERGE_TIMEOUT_MS) {
      return waitFor(
        async () => {
          const seen = new Set<number>();
          for (const s of sentinels.filter((x) => x.alive)) seen.add(await masterFrom(s.port));
          const [port] = seen;
          if (seen.size !== 1 || port === undefined || port === oldPort) return false;
          return (await redisCli(port, 'INFO', 'replication')).includes('role:master') ? port : false;
        },
        { timeoutMs, intervalMs: 100, message: `sentinels agree on a new master instead of ${oldPort}` },
      );
    },
    stop,
  };
}
