/**
 * A routed service that Consul answers about with HTTP errors before it was ever read does not
 * hold back the views of every other service: after a few such answers it counts as read with no
 * instances, and it is reported. A small fake Consul on loopback plays the agent.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { after, before, test } from 'node:test';
import { ConsulClient } from '../../src/consul/client.ts';
import { ConsulSupervisor } from '../../src/consul/supervisor.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { freePort } from '../helpers/ports.ts';
import { waitFor } from '../helpers/wait.ts';

const WEB = [
  {
    Node: { Node: 'n1', Address: '127.0.0.1' },
    Service: { ID: 'web-1', Service: 'web', Address: '127.0.0.1', Port: 8001, Tags: ['urlprefix-/web'] },
    Checks: [{ CheckID: 'serfHealth', Status: 'passing', ServiceID: '' }],
  },
];

let server: Server;
let port: number;
let brokenStatus = 500;

before(async () => {
  port = await freePort();
  server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'x-consul-index': '5' });
      res.end(JSON.stringify(body));
    };
    if (path === '/v1/status/leader') return json(200, '127.0.0.1:8300');
    if (path === '/v1/catalog/services') return json(200, { web: ['urlprefix-/web'], broken: ['urlprefix-/broken'] });
    if (path === '/v1/kv/gateway/') return json(404, null);
    if (path === '/v1/health/service/web') return json(200, WEB);
    if (path === '/v1/health/service/broken') {
      res.writeHead(brokenStatus, { 'content-type': 'text/plain' });
      return res.end('rpc error: no such thing');
    }
    json(404, null);
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port }, resolve));
});

after(async () => {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
});

for (const status of [500, 400, 301]) {
  test(`health answered with ${status} again and again: the other services' views are handed on, the service is reported`, async () => {
    brokenStatus = status;
    const client = new ConsulClient({ address: `http://127.0.0.1:${port}`, maxConnections: 16 });
    const supervisor = new ConsulSupervisor({
      client,
      waitMs: 2_000,
      kvPrefix: 'gateway/',
      maxConnections: 16,
      resyncIntervalMs: 60_000,
      isRouted: (tags) => tags.some((t) => t.startsWith('urlprefix-')),
      logger: createLogger('silent'),
      metrics: createMetrics({ defaultMetrics: false }),
      onChange: () => {},
    });
    supervisor.start();
    try {
      const views = await waitFor(() => supervisor.views(), { timeoutMs: 20_000, message: 'views despite one unreadable service' });
      assert.equal(views.health.get('web')?.length, 1);
      assert.deepEqual(views.health.get('broken'), []);
      const problem = supervisor.problems().find((p) => p.subject === 'broken');
      assert.equal(problem?.kind, 'service');
      assert.match(problem?.message ?? '', /does not answer for the health of this service/);
    } finally {
      await supervisor.close();
      await client.close();
    }
  });
}
