/**
 * A small self-registering demo service for trying the gateway. `npm run build` compiles it to
 * dist/scripts/demo-service.js, which the demo, the compose file and the tests run:
 *
 *   node dist/scripts/demo-service.js --name web --id web-1 --port 0 \
 *     --tags "urlprefix-/web,v1" [--consul URL] [--color blue] [--version v1] \
 *     [--address 127.0.0.1] [--listen-host 127.0.0.1] [--exit-with-parent]
 *
 * Serves JSON `{service, id, version, color, path, time}` on every path, registers itself in
 * Consul (CONSUL_HTTP_ADDR or --consul; X-Consul-Token from CONSUL_HTTP_TOKEN) with a TTL check
 * (CheckID `service:<id>`, TTL 10s) that it passes every 3 s, and deregisters on SIGINT/SIGTERM.
 * With --exit-with-parent it does the same once the process that started it is gone (checked
 * every second), so a demo script killed with SIGKILL leaves no service behind in Consul.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { parseArgs } from 'node:util';

const USAGE = `usage: demo-service --name NAME [--id ID] [--port N] [--tags "t1,t2"] [--consul URL]
                    [--color C] [--version V] [--address ADDR] [--listen-host HOST] [--no-register]
                    [--exit-with-parent]`;

function fail(msg: string): never {
  console.error(`demo-service: ${msg}\n${USAGE}`);
  process.exit(2);
}

let parsed: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    options: {
      name: { type: 'string' },
      id: { type: 'string' },
      port: { type: 'string', default: '0' },
      tags: { type: 'string', default: '' },
      consul: { type: 'string' },
      color: { type: 'string' },
      version: { type: 'string' },
      address: { type: 'string', default: '127.0.0.1' },
      'listen-host': { type: 'string', default: '127.0.0.1' },
      // A backend that is not in Consul, for static routes (policies/routes/*.yaml).
      'no-register': { type: 'boolean', default: false },
      // Deregister and exit once the parent process is gone (scripts/demo.sh passes it).
      'exit-with-parent': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: false,
  });
}
try {
  parsed = parse();
} catch (err) {
  fail(err instanceof Error ? err.message : String(err));
}
const opts = parsed.values;
if (opts.help) {
  console.log(USAGE);
  process.exit(0);
}

const name = opts.name ?? fail('--name is required');
if (!/^[A-Za-z0-9-]+$/.test(name)) fail(`--name must be letters, digits and dashes, got "${name}"`);
const port = Number(opts.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port must be 0-65535, got "${opts.port}"`);
const tags = opts.tags.split(',').map((t) => t.trim()).filter(Boolean);
const version = opts.version ?? tags.find((t) => /^v\d+$/.test(t)) ?? 'v1';
const color = opts.color ?? null;
const address = opts.address;
const listenHost = opts['listen-host'];
const consulRaw = opts.consul ?? process.env.CONSUL_HTTP_ADDR ?? 'http://127.0.0.1:8500';
// CONSUL_HTTP_ADDR is often given without a scheme ("127.0.0.1:8500").
const consulBase = (/^https?:\/\//.test(consulRaw) ? consulRaw : `http://${consulRaw}`).replace(/\/+$/, '');
try {
  new URL(consulBase);
} catch {
  fail(`invalid Consul address "${consulRaw}"`);
}
const token = process.env.CONSUL_HTTP_TOKEN;

async function consul(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = {};
  if (token) headers['X-Consul-Token'] = token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return fetch(`${consulBase}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(5000),
  });
}

// Known once the port is (the default ID includes it).
let serviceId = opts.id ?? '';

const server = createServer((req, res) => {
  const body = JSON.stringify({
    service: name,
    id: serviceId,
    version,
    color,
    path: req.url ?? '/',
    time: new Date().toISOString(),
  });
  req.resume();
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-service-id': serviceId });
  res.end(body);
});

await new Promise<void>((resolve, reject) => {
  server.once('error', (err) => reject(err));
  server.listen({ host: listenHost, port }, resolve);
}).catch((err: unknown) => fail(`cannot listen on ${listenHost}:${port}: ${err instanceof Error ? err.message : String(err)}`));
const actualPort = (server.address() as AddressInfo).port;
serviceId ||= `${name}-${actualPort}`;
const checkId = `service:${serviceId}`;

const registration = {
  ID: serviceId,
  Name: name,
  Address: address,
  Port: actualPort,
  Tags: tags,
  Meta: { version, ...(color ? { color } : {}) },
  Check: {
    CheckID: checkId,
    Name: `${serviceId} TTL`,
    TTL: '10s',
    Status: 'passing',
    // If this process dies without deregistering, Consul cleans it up after a minute.
    DeregisterCriticalServiceAfter: '1m',
  },
};

async function register(): Promise<void> {
  const res = await consul('PUT', '/v1/agent/service/register', registration);
  if (!res.ok) throw new Error(`register: HTTP ${res.status} ${(await res.text()).trim()}`);
}

const registering = !opts['no-register'];
// Consul may still be starting (docker-compose): retry for up to 60 s.
const deadline = Date.now() + 60_000;
for (let attempt = 1; registering; attempt++) {
  try {
    await register();
    break;
  } catch (err) {
    const msg = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    if (Date.now() >= deadline) {
      console.error(`demo-service: cannot register ${serviceId} with Consul at ${consulBase}: ${msg}`);
      server.close();
      process.exit(1);
    }
    if (attempt === 1) console.error(`demo-service: Consul at ${consulBase} not ready (${msg}); retrying`);
    await delay(1000);
  }
}
console.log(
  `demo-service: ${serviceId} (${name} ${version}${color ? ` ${color}` : ''}) on ${listenHost}:${actualPort}, ` +
    (registering ? `registered as ${address}:${actualPort} tags=[${tags.join(',')}]` : 'not registered in Consul'),
);

let stopping = false;
const heartbeat = setInterval(() => {
  if (!registering) return;
  void (async () => {
    try {
      const res = await consul('PUT', `/v1/agent/check/pass/${encodeURIComponent(checkId)}`);
      if (res.status === 404 || (res.status === 500 && /does not have associated TTL|Unknown check/i.test(await res.text()))) {
        // The agent lost us (e.g. a -dev agent restarted): register again.
        if (!stopping) await register();
      } else if (!res.ok) {
        console.error(`demo-service: TTL pass for ${checkId}: HTTP ${res.status}`);
      }
    } catch (err) {
      console.error(`demo-service: TTL pass for ${checkId} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  })();
}, 3000);

// The parent is gone once this process has been handed to another one (init or a subreaper).
const parentPid = process.ppid;
const parentWatch = opts['exit-with-parent']
  ? setInterval(() => {
      if (process.ppid !== parentPid || !isAlive(parentPid)) void shutdown('parent exited');
    }, 1000)
  : undefined;

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function shutdown(reason: string): Promise<void> {
  if (stopping) {
    // A second Ctrl-C gives up on a clean exit. Anything else (the demo script's SIGTERM after
    // this process noticed it was orphaned, say) lets the clean shutdown, bounded below, finish.
    if (reason === 'SIGINT') process.exit(1);
    return;
  }
  stopping = true;
  clearInterval(heartbeat);
  clearInterval(parentWatch);
  if (registering) {
    try {
      const res = await consul('PUT', `/v1/agent/service/deregister/${encodeURIComponent(serviceId)}`);
      if (!res.ok) console.error(`demo-service: deregister ${serviceId}: HTTP ${res.status}`);
    } catch (err) {
      console.error(`demo-service: deregister ${serviceId} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    // Keep serving while gateways see the deregistration (well under a second with cgw), then
    // finish what is in flight: scaling down this way fails no request.
    await delay(1000);
  }
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  await Promise.race([closed, delay(5000)]);
  server.closeAllConnections();
  console.log(`demo-service: ${serviceId} stopped (${reason})`);
  process.exit(0);
}
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGTERM', () => void shutdown('SIGTERM'));
