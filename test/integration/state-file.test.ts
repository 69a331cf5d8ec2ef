/**
 * --state-file against a real Consul: the file is written while Consul answers; a gateway started
 * while Consul is down serves the routes it holds to the upstreams still running, marked stale
 * (readyz, cgw status, metrics), until Consul is back and the live snapshot replaces it. Corrupt
 * and foreign files are refused whole with a clear line; a foreign one is never overwritten. Once
 * with --workers 2.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { runCli, startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send } from '../helpers/http.ts';
import { freePort } from '../helpers/ports.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let dir: string;
const ups: Record<string, Upstream> = {};
const gateways: GatewayProcess[] = [];

async function gateway(opts: Parameters<typeof startGateway>[0]): Promise<GatewayProcess> {
  const gw = await startGateway(opts);
  gateways.push(gw);
  return gw;
}

async function metricValue(gw: GatewayProcess, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(labels ? `${name}{${labels}}` : `${name} `));
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function readyz(gw: GatewayProcess): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${gw.adminUrl}/-/readyz`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

interface FileRoutes {
  routes: string[];
  version: string;
  writtenAt: string;
}

function readState(path: string): FileRoutes | undefined {
  if (!existsSync(path)) return undefined;
  const file = JSON.parse(readFileSync(path, 'utf8')) as { writtenAt: string; snapshotVersion: string; snapshot: { routes: { id: string }[] } };
  return { routes: file.snapshot.routes.map((r) => r.id).sort(), version: file.snapshotVersion, writtenAt: file.writtenAt };
}

/**
 * An agent that answers the start-up questions (leader, datacenter) but never answers a watch:
 * the first sync never completes, so only --state-file-wait can put the file in force.
 */
async function stuckConsul(): Promise<{ addr: string; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const json = (body: unknown): void => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-consul-index': '1' });
      res.end(JSON.stringify(body));
    };
    if (req.url?.startsWith('/v1/status/leader')) return json('127.0.0.1:8300');
    if (req.url?.startsWith('/v1/agent/self')) return json({ Config: { Datacenter: 'dc1' } });
    // Every other request hangs until the test ends.
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    addr: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** An address where no Consul answers (nothing listens on a free port). */
async function deadConsul(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}

before(async () => {
  consul = await startConsul();
  dir = mkdtempSync(join(tmpdir(), 'cgw-state-it-'));
  for (const name of ['web-1', 'api-1', 'new-1']) ups[name] = await startUpstream(name);
  await consul.register({ id: 'web-1', name: 'web', port: ups['web-1']!.port, tags: ['urlprefix-/web'] });
  await consul.register({ id: 'api-1', name: 'api', port: ups['api-1']!.port, tags: ['urlprefix-/api strip=/api'] });
});

after(async () => {
  for (const gw of gateways) await gw.kill();
  for (const u of Object.values(ups)) await u.close();
  await consul?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

describe('--state-file', () => {
  const path = (): string => join(dir, 'state.json');
  let written: FileRoutes;

  test('a gateway with Consul writes the file (0600) and keeps serving from Consul, not the file', async () => {
    const gw = await gateway({ consul: consul.addr, args: ['--wait', '5s', '--state-file', path()] });
    written = await waitFor(() => {
      const f = readState(path());
      return f !== undefined && f.routes.join(',') === '/api,/web' && f;
    }, { timeoutMs: 30_000, message: 'state file with /api and /web' });
    assert.equal(statSync(path()).mode & 0o777, 0o600);
    const ready = await readyz(gw);
    assert.equal(ready.status, 200);
    assert.equal(ready.body.stale, undefined, 'not stale: Consul answered');
    assert.equal(await metricValue(gw, 'cgw_state_file_in_force'), 0);
    // Counted once the rename is synced, a moment after the file appears.
    await waitFor(async () => (await metricValue(gw, 'cgw_state_file_writes_total', 'outcome="written"')) === 1, { message: 'one write counted' });
    await gw.kill();
  });

  test('Consul down at boot: the file serves the last routes, marked stale; Consul back: the live snapshot replaces it', async () => {
    await consul.stop();
    const gw = await gateway({ consul: consul.addr, args: ['--wait', '5s', '--state-file', path()] });
    const web = await send(gw.url, '/web/hello');
    assert.equal(web.status, 200, web.body.toString());
    assert.equal(web.headers['x-upstream'], 'web-1');
    const api = await send(gw.url, '/api/x');
    assert.equal(api.status, 200);
    assert.equal(api.headers['x-upstream'], 'api-1');

    const ready = await readyz(gw);
    assert.equal(ready.status, 200);
    assert.equal(ready.body.status, 'ready');
    assert.equal(ready.body.stale, true);
    assert.equal(ready.body.source, 'state-file');
    assert.equal(ready.body.writtenAt, written.writtenAt);
    assert.equal(typeof ready.body.staleSince, 'string');
    assert.equal(await metricValue(gw, 'cgw_state_file_in_force'), 1);
    assert.ok((await metricValue(gw, 'cgw_state_file_age_seconds')) > 0);
    const status = await runCli(['status', '--admin', gw.adminUrl]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /ready: +yes, STALE \(serving the state file; Consul not reached\)/);
    assert.ok(status.stdout.includes(`SERVING the state file written at ${written.writtenAt} (snapshot ${written.version}), Consul not reached`), status.stdout);
    await waitFor(() => gw.logs.some((l) => l.includes('Consul not reached: serving the state file written at')), { message: 'stale serving logged' });
    // Not rewritten while stale: the file still says when its snapshot was really current.
    assert.equal(readState(path())?.writtenAt, written.writtenAt);

    await consul.start();
    // The agent keeps its services across the restart; their TTL checks come back critical.
    await consul.setCheck('web-1', 'passing');
    await consul.setCheck('api-1', 'passing');
    await consul.register({ id: 'new-1', name: 'new', port: ups['new-1']!.port, tags: ['urlprefix-/new'] });
    await waitFor(async () => (await readyz(gw)).body.stale === undefined, { timeoutMs: 90_000, message: 'stale mark cleared after Consul came back' });
    await waitFor(async () => (await send(gw.url, '/new')).status === 200, { timeoutMs: 30_000, message: '/new routed from live Consul' });
    assert.equal(await metricValue(gw, 'cgw_state_file_in_force'), 0);
    assert.equal(await metricValue(gw, 'cgw_state_file_age_seconds'), 0);
    const after = await runCli(['status', '--admin', gw.adminUrl]);
    assert.doesNotMatch(after.stdout, /STALE|SERVING/);
    // The live snapshot is written for the next boot.
    await waitFor(() => readState(path())?.routes.join(',') === '/api,/new,/web', { timeoutMs: 30_000, message: 'state file with /new' });
    await gw.kill();
  });

  test('--workers 2, Consul down: every worker gets the stale snapshot', async () => {
    const gw = await gateway({ consul: await deadConsul(), args: ['--workers', '2', '--state-file', path()] });
    const status = (await (await fetch(`${gw.adminUrl}/v1/status`)).json()) as { workers: { current: boolean }[]; stateFile: { inForce: boolean } };
    assert.equal(status.workers.length, 2);
    assert.ok(status.workers.every((w) => w.current), JSON.stringify(status.workers));
    assert.equal(status.stateFile.inForce, true);
    for (let i = 0; i < 10; i++) {
      const r = await send(gw.url, '/new');
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(r.headers['x-upstream'], 'new-1');
    }
    assert.equal((await readyz(gw)).body.stale, true);
    assert.equal(await metricValue(gw, 'cgw_state_file_in_force'), 1);
    await gw.kill();
  });

  test('an agent that answers but never completes the first sync: the file serves after --state-file-wait', async () => {
    const stuck = await stuckConsul();
    try {
      const gw = await gateway({ consul: stuck.addr, args: ['--state-file', path(), '--state-file-wait', '2s', '--no-register'] });
      const ready = await readyz(gw);
      assert.equal(ready.body.stale, true);
      assert.equal((await send(gw.url, '/web')).headers['x-upstream'], 'web-1');
      await gw.kill();
    } finally {
      await stuck.close();
    }
  });

  test('a damaged file of ours with Consul up: refused, the gateway serves from Consul, the file is replaced by a good one', async () => {
    const damaged = join(dir, 'damaged.json');
    writeFileSync(damaged, readFileSync(path(), 'utf8').replace(`"port":${ups['web-1']!.port}`, '"port":2'), { mode: 0o600 });
    const gw = await gateway({ consul: consul.addr, args: ['--wait', '5s', '--state-file', damaged] });
    await waitFor(() => gw.logs.some((l) => l.includes('state file refused (corrupt): checksum mismatch') && l.includes('replaced by the next snapshot')), { message: 'refusal logged' });
    assert.equal((await send(gw.url, '/web')).status, 200);
    await waitFor(() => {
      try {
        const f = readState(damaged);
        return f !== undefined && !readFileSync(damaged, 'utf8').includes('"port":2,') && f;
      } catch {
        return false;
      }
    }, { timeoutMs: 30_000, message: 'damaged file replaced' });
    const status = await waitFor(async () => {
      const r = await runCli(['status', '--admin', gw.adminUrl]);
      return !r.stdout.includes('REFUSED') && r.stdout;
    }, { timeoutMs: 30_000, message: 'refusal gone from cgw status once replaced' });
    assert.match(status, /state file: +\S*damaged\.json: written/);
    await gw.kill();
  });

  test('a corrupt file (checksum) with Consul down: refused with a clear line, not ready, no stale routes', async () => {
    const corrupt = join(dir, 'corrupt.json');
    writeFileSync(corrupt, readFileSync(path(), 'utf8').replace(`"port":${ups['web-1']!.port}`, '"port":1'), { mode: 0o600 });
    const gw = await gateway({ consul: await deadConsul(), waitReady: false, args: ['--state-file', corrupt, '--state-file-wait', '1s'] });
    await waitFor(() => gw.logs.some((l) => l.includes('state file refused (corrupt): checksum mismatch')), { timeoutMs: 30_000, message: 'refusal logged' });
    await waitFor(async () => (await readyz(gw)).status === 503, { timeoutMs: 30_000 });
    const r = await send(gw.url, '/web');
    assert.equal(r.status, 503);
    assert.match(r.body.toString(), /not_ready/);
    assert.equal(await metricValue(gw, 'cgw_state_file_reads_total', 'outcome="corrupt"'), 1);
    const status = await runCli(['status', '--admin', gw.adminUrl]);
    assert.equal(status.code, 1, 'not ready');
    assert.match(status.stdout, /REFUSED .*corrupt\.json \(corrupt\): checksum mismatch/);
    await gw.kill();
  });

  test('a foreign file with Consul up: refused, the gateway serves from Consul, the file is never overwritten', async () => {
    const foreign = join(dir, 'foreign.json');
    const text = '{"hello": "not a cgw state file"}\n';
    writeFileSync(foreign, text);
    const gw = await gateway({ consul: consul.addr, args: ['--wait', '5s', '--state-file', foreign] });
    await waitFor(() => gw.logs.some((l) => l.includes('state file refused (foreign): not a cgw state file') && l.includes('never overwritten')), { message: 'refusal logged' });
    assert.equal((await send(gw.url, '/web')).status, 200);
    await consul.register({ id: 'later-1', name: 'later', port: ups['new-1']!.port, tags: ['urlprefix-/later'] });
    await waitFor(async () => (await send(gw.url, '/later')).status === 200, { timeoutMs: 30_000, message: 'Consul changes still applied' });
    assert.ok((await metricValue(gw, 'cgw_state_file_writes_total', 'outcome="not_ours"')) >= 1);
    assert.equal(readFileSync(foreign, 'utf8'), text);
    await gw.kill();
    assert.equal(readFileSync(foreign, 'utf8'), text, 'not even on drain');
  });

  test('a valid file whose snapshot the data plane cannot compile: refused whole, not ready, nothing served', async () => {
    const uncompilable = join(dir, 'uncompilable.json');
    const envelope = JSON.parse(readFileSync(path(), 'utf8')) as { sha256: string; snapshot: { routes: { id: string; access: unknown }[] } };
    // Passes the structure check (a list of strings), but no CIDR: the router cannot be built.
    for (const r of envelope.snapshot.routes) if (r.id === '/api') r.access = { kind: 'allow', cidrs: ['not-an-address/8'] };
    envelope.sha256 = createHash('sha256').update(JSON.stringify(envelope.snapshot)).digest('hex');
    writeFileSync(uncompilable, JSON.stringify(envelope), { mode: 0o600 });
    const gw = await gateway({ consul: await deadConsul(), waitReady: false, args: ['--state-file', uncompilable] });
    await waitFor(() => gw.logs.some((l) => l.includes('state file refused (uncompilable)')), { timeoutMs: 30_000, message: 'refusal logged' });
    assert.equal((await readyz(gw)).status, 503);
    const web = await send(gw.url, '/web');
    assert.equal(web.status, 503, 'not even the routes that would compile: never half applied');
    assert.equal(await metricValue(gw, 'cgw_state_file_reads_total', 'outcome="uncompilable"'), 1);
    assert.equal(await metricValue(gw, 'cgw_state_file_in_force'), 0);
    await gw.kill();
  });

  test('a file of another KV prefix with Consul down: refused as foreign, not ready', async () => {
    const gw = await gateway({ consul: await deadConsul(), waitReady: false, args: ['--state-file', path(), '--kv-prefix', 'other/'] });
    await waitFor(() => gw.logs.some((l) => l.includes('state file refused (foreign): written for KV prefix \\"gateway/\\"')), { timeoutMs: 30_000, message: 'refusal logged' });
    assert.equal((await readyz(gw)).status, 503);
    assert.equal((await send(gw.url, '/web')).status, 503);
    await gw.kill();
  });
});
