/** `cgw start` against an address that answers but is not Consul refuses to start, with a clear message. */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import { freePort } from '../helpers/ports.ts';
import { startGateway } from '../helpers/gateway.ts';

let server: Server;
let port: number;

before(async () => {
  port = await freePort();
  server = createServer((req, res) => {
    // An ordinary web server: HTML for /, 404 for everything else.
    if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html>hello</html>');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
    }
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port }, resolve));
});

after(async () => {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
});

test('a --consul address that is not a Consul agent: exit 1, saying so', async () => {
  const gw = await startGateway({ consul: `http://127.0.0.1:${port}`, waitReady: false });
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([gw.exited, new Promise<'running'>((r) => (timer = setTimeout(() => r('running'), 30_000)))]);
  clearTimeout(timer);
  if (code === 'running') await gw.kill('SIGKILL');
  assert.equal(code, 1, gw.logs.join('\n'));
  assert.match(gw.logs.join('\n'), /is not a Consul agent/);
});
