/**
 * Rate limits on Redis through Sentinel (one master, two replicas, three sentinels, from
 * redis-server): two gateways with --redis-sentinels share one limit, and the master dies under
 * traffic without stalling anyone (see test/helpers/ratelimit-failover.ts).
 */
import { redisCli, startRedisSentinel } from '../helpers/redis-ha.ts';
import { rateLimitFailoverSuite } from '../helpers/ratelimit-failover.ts';

rateLimitFailoverSuite('Redis Sentinel', async () => {
  const group = await startRedisSentinel('cgw-limits');
  return {
    gatewayArgs: ['--redis-sentinels', group.sentinelAddrs, '--redis-sentinel-name', group.name],
    logs: group.logs,
    async keys(pattern) {
      const port = await group.currentMaster();
      return (await redisCli(port, '--scan', '--pattern', pattern)).split('\n').filter((k) => k !== '');
    },
    masterOf: () => group.currentMaster(),
    async killMaster(port, onKilled) {
      const node = [group.master, ...group.replicas].find((n) => n.port === port);
      if (!node) throw new Error(`no node on ${port}`);
      await node.kill('SIGKILL');
      onKilled();
      return group.waitFailover(port);
    },
    stop: () => group.stop(),
  };
});
