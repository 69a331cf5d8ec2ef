/**
 * Rate limits on a real Redis Cluster (3 masters, 3 replicas, from redis-server and redis-cli):
 * two gateways with --redis-cluster share one limit, and the master that holds the limit's slot
 * dies, then another one hangs, under traffic without stalling anyone (see test/helpers/ratelimit-failover.ts).
 */
import { redisCli, startRedisCluster } from '../helpers/redis-ha.ts';
import { rateLimitFailoverSuite } from '../helpers/ratelimit-failover.ts';

rateLimitFailoverSuite('Redis Cluster', async () => {
  const cluster = await startRedisCluster();
  return {
    gatewayArgs: ['--redis-cluster', cluster.seeds],
    logs: cluster.logs,
    async keys(pattern) {
      const found = new Set<string>();
      for (const node of cluster.nodes.filter((n) => n.alive)) {
        for (const key of (await redisCli(node.port, '--scan', '--pattern', pattern)).split('\n')) if (key !== '') found.add(key);
      }
      return [...found];
    },
    masterOf: (key) => cluster.masterOf(key),
    async failoverCandidate() {
      for (const node of cluster.nodes.filter((n) => n.alive)) {
        const replicas = await cluster.replicasOf(node.port);
        if (replicas.length > 0) return node.port;
      }
      throw new Error('no master with a replica left');
    },
    async failMaster(port, how, onFailing) {
      const [replica] = await cluster.replicasOf(port);
      const node = cluster.nodes.find((n) => n.port === port);
      if (!node || replica === undefined) throw new Error(`no node or no replica for ${port}`);
      onFailing();
      if (how === 'kill') await node.kill('SIGKILL');
      else node.freeze();
      await cluster.waitMaster(replica);
      return replica;
    },
    stop: () => cluster.stop(),
  };
});
