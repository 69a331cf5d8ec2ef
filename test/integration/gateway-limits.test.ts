/**
 * Request size limits through the real gateway: a route's `limits.maxBodyBytes` (Content-Length
 * and chunked bodies) and `limits.maxHeaderBytes`, the server-wide `--max-header-size`, their JSON
 * errors and `cgw_request_limit_rejections_total`.
 */
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { freePort } from '../helpers/ports.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send as sendRaw, type Reply, type SendOptions } from '../helpers/http.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

const send = (path: string, opts: SendOptions = {}): Promise<Reply> => sendRaw(gw.url, path, opts);



function errorOf(r: Reply): { code: string; message: string; requestId: string } {
  assert.match(String(r.headers['content-type']), /application\/json/, `not JSON: ${r.status} ${r.body.toString()}`);
  return (JSON.parse(r.body.toString()) as { error: { code: string; message: string; requestId: string } }).error;
}

async function metricValue(name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/**
 * An upstream that records, per request, whether the whole body arrived: the helper upstream
 * counts a request as soon as its head arrives, which cannot tell a cut-off chunked body apart.
 */
interface Recorder {
  readonly url: string;
  readonly seen: { heads: number; complete: number; bytes: number[] };
  close(): Promise<void>;
}

async function startRecorder(): Promise<Recorder> {
  const seen = { heads: 0, complete: 0, bytes: [] as number[] };
  const server: Server = createServer((req, res) => {
    seen.heads += 1;
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.once('end', () => {
      seen.complete += 1;
      seen.bytes.push(n);
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'recorder' });
      res.end(JSON.stringify({ bytes: n }));
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port }, resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

let consul: ConsulAgent;
let gw: GatewayProcess;
let upstream: Upstream;
let recorder: Recorder;
let dir: string;

before(async () => {
  [consul, upstream, recorder] = await Promise.all([startConsul(), startUpstream('lim'), startRecorder()]);
  dir = await mkdtemp(join(tmpdir(), 'cgw-limits-'));
  await mkdir(join(dir, 'routes'));
  await writeFile(join(dir, 'routes', 'lim.yaml'), `path: /lim\nstrip: /lim\nupstreams: [${upstream.url}]\n`);
  await writeFile(join(dir, 'routes', 'rec.yaml'), `path: /rec\nupstreams: [${recorder.url}]\n`);
  await writeFile(join(dir, 'defaults.yaml'), 'appliesTo: defaults\nlimits:\n  maxBodyBytes: 1024\n  maxHeaderBytes: 2048\n');
  gw = await startGateway({ consul: consul.addr, args: ['--policies', dir, '--max-header-size', '4096'] });
});

after(async () => {
  await gw?.kill();
  await Promise.all([upstream?.close(), recorder?.close()]);
  await consul?.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('a 2 KB body with Content-Length: 413 payload_too_large, the upstream never hit', async () => {
  const hits = upstream.hits;
  const before = await metricValue('cgw_request_limit_rejections_total', 'route="/lim",kind="body"');
  const r = await send('/lim/echo', { method: 'POST', body: Buffer.alloc(2048, 'a'), headers: { 'content-type': 'text/plain' } });
  assert.equal(r.status, 413);
  const e = errorOf(r);
  assert.equal(e.code, 'payload_too_large');
  assert.match(e.message, /1024 bytes/);
  assert.equal(e.requestId, r.headers['x-request-id']);
  assert.equal(upstream.hits, hits, 'the upstream was not asked');
  assert.equal(await metricValue('cgw_request_limit_rejections_total', 'route="/lim",kind="body"'), before + 1);
});

test('a chunked 2 KB body (no Content-Length): 413, and the upstream gets no complete request', async () => {
  const complete = recorder.seen.complete;
  const before = await metricValue('cgw_request_limit_rejections_total', 'route="/rec",kind="body"');
  const chunks = Array.from({ length: 8 }, () => Buffer.alloc(256, 'c'));
  const r = await send('/rec', { method: 'POST', chunks, headers: { 'content-type': 'text/plain' } });
  assert.equal(r.status, 413, r.body.toString());
  assert.equal(errorOf(r).code, 'payload_too_large');
  assert.equal(await metricValue('cgw_request_limit_rejections_total', 'route="/rec",kind="body"'), before + 1);
  assert.equal(recorder.seen.complete, complete, `the upstream received a whole body: ${JSON.stringify(recorder.seen)}`);

  // Under the limit, chunked bodies pass whole.
  const ok = await send('/rec', { method: 'POST', chunks: [Buffer.alloc(300, 'c'), Buffer.alloc(300, 'd')] });
  assert.equal(ok.status, 200, ok.body.toString());
  assert.deepEqual(JSON.parse(ok.body.toString()), { bytes: 600 });
});

test('a 512-byte body passes and is streamed back by /echo', async () => {
  const body = Buffer.from(Array.from({ length: 512 }, (_, i) => String.fromCharCode(97 + (i % 26))).join(''));
  const r = await send('/lim/echo', { method: 'POST', body, headers: { 'content-type': 'text/plain' } });
  assert.equal(r.status, 200, r.body.toString());
  assert.equal(r.headers['x-upstream'], 'lim');
  assert.ok(r.body.equals(body), `echoed body differs: ${r.body.length} ${r.body.toString().slice(0, 300)}`);
});

test('maxHeaderBytes 2048: a 3 KB header gets 431 headers_too_large from the route, a normal request 200', async () => {
  const before = await metricValue('cgw_request_limit_rejections_total', 'route="/lim",kind="headers"');
  const hits = upstream.hits;
  // 3 KB: over the route's 2048, under the server's --max-header-size 4096.
  const r = await send('/lim', { headers: { 'x-big': 'h'.repeat(3072) } });
  assert.equal(r.status, 431);
  const e = errorOf(r);
  assert.equal(e.code, 'headers_too_large');
  assert.match(e.message, /2048 bytes/, 'refused by the route limit, not the server limit');
  assert.equal(upstream.hits, hits);
  assert.equal(await metricValue('cgw_request_limit_rejections_total', 'route="/lim",kind="headers"'), before + 1);

  const ok = await send('/lim', { headers: { 'x-small': 'h'.repeat(100) } });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers['x-upstream'], 'lim');
});

test('--max-header-size 4096: a 10 KB header gets a JSON 431 from the server, and serving goes on', async () => {
  const r = await send('/lim', { headers: { 'x-huge': 'h'.repeat(10 * 1024) } });
  assert.equal(r.status, 431);
  const e = errorOf(r);
  assert.equal(e.code, 'headers_too_large');
  assert.match(e.message, /4096 bytes/);
  assert.equal(r.headers.connection, 'close');

  await waitFor(async () => (await send('/lim')).status === 200, { timeoutMs: 15_000, message: 'gateway serves after a server-level 431' });
  assert.equal((await fetch(`${gw.adminUrl}/-/readyz`)).status, 200);
});
