/**
 * What request spans cost: the same load through cgw without --otlp-endpoint, with it at
 * --otlp-sample 0 (spans made, none recorded) and at 1 (every span recorded and exported to a
 * receiver on loopback). Prints figures; asserts nothing (machines differ).
 *
 *   node --import tsx bench/tracing.ts          # after bash scripts/setup.sh
 *   BENCH_SECONDS=10 node --import tsx bench/tracing.ts
 */
import { createServer } from 'node:http';
import { load, formatRun, concurrency, seconds } from './load.ts';
import { startConsul } from '../test/helpers/consul.ts';
import { startGateway } from '../test/helpers/gateway.ts';
import { startOtlpReceiver } from '../test/helpers/otlp-receiver.ts';
import { listenOn } from '../src/core/net.ts';

const body = JSON.stringify({ hello: 'world', padding: 'x'.repeat(200) });
const upstream = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
});
const upstreamPort = await listenOn(upstream, '127.0.0.1', 0);
const consul = await startConsul();
const receiver = await startOtlpReceiver();
try {
  await consul.register({ id: 'bench-1', name: 'bench', port: upstreamPort, tags: ['urlprefix-/bench'] });
  console.log(`cgw tracing benchmark: ${seconds}s per run, ${concurrency} concurrent, 1 upstream, node ${process.version}, access log off`);
  const variants: [string, string[]][] = [
    ['no --otlp-endpoint     ', []],
    ['--otlp-sample 0        ', ['--otlp-endpoint', receiver.endpoint, '--otlp-sample', '0']],
    ['--otlp-sample 1        ', ['--otlp-endpoint', receiver.endpoint, '--otlp-sample', '1']],
  ];
  for (const [name, args] of variants) {
    const gateway = await startGateway({ consul: consul.addr, args: ['--log-level', 'warn', '--no-access-log', ...args] });
    try {
      await load(gateway.url, '/bench/warmup'); // JIT and connection warm-up, not reported
      console.log(`${name}: ${formatRun(await load(gateway.url, '/bench/x'))}`);
    } finally {
      await gateway.kill('SIGTERM');
    }
  }
  console.log(`spans received: ${receiver.spans.length}`);
  console.log("(load generator, upstream, receiver, Consul and cgw share this machine's cores)");
} finally {
  await receiver.close();
  await consul.destroy();
  upstream.close();
}
