/**
 * The benchmarks' upstream, run as its own process so its CPU can be read apart from the load
 * generator's: a small keep-alive JSON server (node:http) on one or more loopback ports. Every
 * answer carries `x-instance: <port>`, so a caller can tell which port (instance) served it.
 *
 *   node bench/backend.mjs [PORT ...]   # 0 or nothing: a free port; prints {"ports":[...]} once listening
 *
 * Plain JavaScript, run by node without a loader, like cgw's compiled dist/.
 */
import { createServer } from 'node:http';

const body = JSON.stringify({ hello: 'world', padding: 'x'.repeat(200) });
const length = String(Buffer.byteLength(body));
const wanted = process.argv.slice(2).map(Number);
if (wanted.length === 0) wanted.push(0);

/** @param {number} port @returns {Promise<import('node:http').Server>} */
function listen(port) {
  return new Promise((resolve, reject) => {
    const server = createServer();
    // Longer than the proxies' idle timeouts (nginx keepalive_timeout 60 s): the proxy, not the
    // backend, closes an idle upstream connection, so none is reused just as it is being closed.
    server.keepAliveTimeout = 65_000;
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port }, () => {
      const addr = server.address();
      const own = typeof addr === 'object' && addr ? String(addr.port) : '?';
      server.on('request', (req, res) => {
        req.resume();
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': length, 'x-instance': own });
        res.end(body);
      });
      resolve(server);
    });
  });
}

const servers = await Promise.all(wanted.map(listen));
const ports = servers.map((s) => {
  const a = s.address();
  return typeof a === 'object' && a ? a.port : 0;
});
process.stdout.write(`${JSON.stringify({ ports })}\n`);
const stop = () => {
  for (const s of servers) {
    s.close();
    s.closeAllConnections();
  }
  setTimeout(() => process.exit(0), 200).unref();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
