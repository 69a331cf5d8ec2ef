/**
 * The yardstick for the proxy's own cost: a plain undici reverse proxy with no routing, no
 * metrics, no logs. One upstream, one keep-alive Pool, bodies piped both ways.
 *
 *   node bench/bare-proxy.mjs LISTEN_PORT http://127.0.0.1:UPSTREAM_PORT
 *
 * Plain JavaScript, run by node without a loader, like cgw's compiled dist/.
 */
import { createServer } from 'node:http';
import { Pool } from 'undici';

const [portArg, origin] = process.argv.slice(2);
if (!portArg || !origin) throw new Error('usage: bare-proxy.mjs LISTEN_PORT UPSTREAM_ORIGIN');
const pool = new Pool(origin, { connections: 128, pipelining: 1, keepAliveTimeout: 30_000 });
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'host']);

const server = createServer((req, res) => {
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP.has(k)) headers[k] = v;
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool.request({ method: req.method, path: req.url ?? '/', headers, body: hasBody ? req : null }).then(
    (up) => {
      const out = {};
      for (const [k, v] of Object.entries(up.headers)) if (v !== undefined && !HOP.has(k)) out[k] = v;
      res.writeHead(up.statusCode, out);
      up.body.once('error', () => res.destroy());
      up.body.pipe(res);
    },
    () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end('bad gateway\n');
    },
  );
});
server.listen({ host: '127.0.0.1', port: Number(portArg) }, () => process.stdout.write('listening\n'));
const stop = () => {
  server.close();
  server.closeAllConnections();
  void pool.close().finally(() => process.exit(0));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
