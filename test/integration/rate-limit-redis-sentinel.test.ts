/**
 * Rate limits on Redis through Sentinel (one master, two replicas, three sentinels, from
 * redis-server): two gateways with --redis-sentinels share one limit, and the master dies, then
 * the promoted one hangs, under traffic without stalling anyone (see test/helpers/ratelimit-failover.ts).
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
    failoverCandidate: () => group.currentMaster(),
    async failMaster(port, how, onFailing) {
      const node = [group.master, ...group.replicas].find((n) => n.port === port);
      if (!node) throw new Error(`no node on ${port}`);
      onFailing();
      if (how === 'kill') await node.kill('SIGKILL');
      else node.freeze();
      return group.waitFailover(port);
    },
    stop: () => group.stop(),
  };
});
