/**
 * HTTP-level attacks against the real gateway, one family per section, each asserting what a user
 * would notice (status, JSON error code, x-request-id, what the upstream saw) and that the gateway
 * still serves afterwards:
 *
 * - bodies over `limits.maxBodyBytes` (chunked or declared, buffered or streamed, with Expect)
 * - admin paths with escapes and names such as `__proto__`, every method
 * - Content-Length beyond 2^53 and other malformed lengths
 * - `Connection` naming Host; Host missing, repeated or not a host
 * - more header fields than --max-header-count
 * - `Expect: 100-continue` answered only after authentication
 * - X-Real-IP, Forwarded, X-Forwarded-* set from the client address, never taken from the client
 * - every 400 the gateway writes (also for heads Node's parser refuses) is the same JSON error
 * - a slow request head gets 408 within --client-header-timeout
 * - requests matching no route counted under route=""; process metrics under standard names
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { generateApiKey } from '../../src/policy/consumers.ts';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send } from '../helpers/http.ts';
import { exchange, header, type Exchange, type RawResponse } from '../helpers/raw-http.ts';
import { startRecorder, type Recorder } from '../helpers/recorder.ts';

const BODY_LIMIT = 1024;
const BIG_LIMIT = 16_384;
const HEADER_TIMEOUT_MS = 1000;

let consul: ConsulAgent;
let gw: GatewayProcess;
let app: Recorder;
let slow: Recorder;
let dir: string;
let internalErrorsBefore = 0;
const { key, keyHash } = generateApiKey('alice');

async function metricsText(): Promise<string> {
  const res = await fetch(`${gw.adminUrl}/metrics`, { signal: AbortSignal.timeout(15_000) });
  assert.equal(res.status, 200);
  return res.text();
}

function metricValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

function metricSum(text: string, name: string): number {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(' ') + 1)), 0);
}

/** One raw exchange with the proxy: `head` lines joined with CRLF, then an empty line and `body`. */
function raw(head: string[], body: string | Buffer = '', opts: { answers?: number; methods?: string[]; gapMs?: number; onContinue?: string; pieces?: (string | Buffer)[] } = {}): Promise<Exchange> {
  const bytes = Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'latin1'), Buffer.isBuffer(body) ? body : Buffer.from(body, 'latin1')]);
  return exchange(gw.listenPort, opts.pieces ?? [bytes], { answers: opts.answers ?? 1, methods: opts.methods ?? [head[0]?.split(' ')[0] ?? 'GET'], deadlineMs: 15_000, ...(opts.gapMs ? { gapMs: opts.gapMs } : {}), ...(opts.onContinue !== undefined ? { onContinue: opts.onContinue } : {}) });
}

/** The one final answer of an exchange, with a readable failure when there is none. */
function only(r: Exchange): RawResponse {
  assert.equal(r.malformed, undefined, `malformed answer: ${r.malformed} ${r.raw.toString('latin1').slice(0, 300)}`);
  assert.equal(r.timedOut, false, `no answer in time: ${r.raw.toString('latin1').slice(0, 300)}`);
  const final = r.finals[0];
  assert.ok(final, `no answer, connection ${r.closed ? 'closed' : 'open'}: ${JSON.stringify(r.raw.toString('latin1').slice(0, 300))}`);
  return final;
}

/** Asserts the gateway's own JSON error: status, code, a message, and requestId equal to x-request-id. */
function assertError(res: RawResponse, status: number, code: string): { code: string; message: string; requestId: string } {
  const text = res.body.toString('utf8');
  assert.equal(res.status, status, `${res.head}\n\n${text}`);
  assert.match(header(res, 'content-type') ?? '', /^application\/json/, `not JSON: ${res.head}`);
  const error = (JSON.parse(text) as { error: { code: string; message: string; requestId: string } }).error;
  assert.equal(error.code, code, text);
  assert.equal(typeof error.message, 'string');
  assert.ok(error.message.length > 0);
  assert.ok(header(res, 'x-request-id'), `no x-request-id: ${res.head}`);
  assert.equal(error.requestId, header(res, 'x-request-id'), 'the body names the x-request-id of the answer');
  return error;
}

/** What the upstream saw, from the recorder's JSON answer. */
function seen(res: RawResponse): { url: string; headers: Record<string, string>; bytes: number } {
  assert.equal(res.status, 200, `${res.head}\n\n${res.body.toString('utf8')}`);
  assert.ok(header(res, 'x-upstream'), 'answered by the upstream');
  return JSON.parse(res.body.toString('utf8')) as { url: string; headers: Record<string, string>; bytes: number };
}

function chunked(total: number, size: number): string {
  let out = '';
  for (let left = total; left > 0; left -= size) {
    const n = Math.min(size, left);
    out += `${n.toString(16)}\r\n${'c'.repeat(n)}\r\n`;
  }
  return `${out}0\r\n\r\n`;
}

/** The gateway answers a normal proxied request and its health probe. */
async function assertServes(): Promise<void> {
  const ok = await send(gw.url, '/app/still-serving');
  assert.equal(ok.status, 200, ok.body.toString());
  assert.equal(ok.headers['x-upstream'], 'app');
  assert.equal((await fetch(`${gw.adminUrl}/-/healthz`, { signal: AbortSignal.timeout(15_000) })).status, 200);
}

before(async () => {
  [consul, app, slow, dir] = await Promise.all([startConsul(), startRecorder('app'), startRecorder('slow', { delayMs: 1500 }), mkdtemp(join(tmpdir(), 'cgw-http-attacks-'))]);
  await writeFile(join(dir, 'defaults.json'), JSON.stringify({ appliesTo: 'defaults', limits: { maxBodyBytes: BODY_LIMIT } }));
  await writeFile(join(dir, 'big.json'), JSON.stringify({ appliesTo: { route: '/big' }, limits: { maxBodyBytes: BIG_LIMIT } }));
  await writeFile(join(dir, 'secure.json'), JSON.stringify({ appliesTo: { route: '/secure' }, auth: { methods: ['apiKey'] } }));
  await consul.kvPut('gateway/consumers/alice', JSON.stringify({ keyHash }));
  await consul.register({ id: 'app-1', name: 'app', port: app.port, tags: ['urlprefix-/app', 'urlprefix-/big', 'urlprefix-/secure'] });
  await consul.register({ id: 'slow-1', name: 'slow', port: slow.port, tags: ['urlprefix-/slow'] });
  gw = await startGateway({
    consul: consul.addr,
    args: [
      '--policies', dir,
      '--client-header-timeout', `${HEADER_TIMEOUT_MS}ms`,
      '--client-body-timeout', '2s',
      // Bodies above this stream to the upstream while they are counted against the limit.
      '--request-buffer-size', '256',
      '--drain-timeout', '5s',
    ],
  });
  await waitFor(async () => (await send(gw.url, '/secure', { headers: { 'x-api-key': key } })).status === 200, { timeoutMs: 20_000, message: 'consumer alice in force' });
  internalErrorsBefore = metricSum(await metricsText(), 'cgw_internal_errors_total');
});

after(async () => {
  await gw?.kill('SIGTERM', 15_000);
  await Promise.all([app?.close(), slow?.close()]);
  await consul?.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('bodies over limits.maxBodyBytes: 413 payload_too_large, never a crash', () => {
  const cases: { name: string; head: string[]; body: string; pieces?: number; onContinue?: string; noContinue?: boolean }[] = [
    { name: 'chunked 4 KB in one chunk (limit 1024)', head: ['POST /app HTTP/1.1', 'Host: x', 'Transfer-Encoding: chunked'], body: chunked(4096, 4096) },
    { name: 'chunked 4 KB in 256-byte chunks', head: ['POST /app HTTP/1.1', 'Host: x', 'Transfer-Encoding: chunked'], body: chunked(4096, 256) },
    { name: 'chunked 4 KB written in 16 pieces', head: ['POST /app/echo HTTP/1.1', 'Host: x', 'Transfer-Encoding: chunked'], body: chunked(4096, 256), pieces: 16 },
    { name: 'chunked 80 KB streamed (limit 16384, buffer 256)', head: ['POST /big HTTP/1.1', 'Host: x', 'Transfer-Encoding: chunked'], body: chunked(80_000, 4000) },
    { name: 'chunked 20 KB streamed in 40 pieces', head: ['PUT /big HTTP/1.1', 'Host: x', 'Transfer-Encoding: chunked'], body: chunked(20_000, 500), pieces: 40 },
    { name: 'chunked over the limit after a valid API key', head: ['POST /secure HTTP/1.1', 'Host: x', `X-Api-Key: ${key}`, 'Transfer-Encoding: chunked'], body: chunked(4096, 512) },
    { name: 'chunked over the limit with Expect: 100-continue', head: ['POST /big HTTP/1.1', 'Host: x', 'Expect: 100-continue', 'Transfer-Encoding: chunked'], body: '', onContinue: chunked(40_000, 4000) },
    { name: 'Content-Length 4096 declared', head: ['POST /app HTTP/1.1', 'Host: x', 'Content-Length: 4096'], body: 'a'.repeat(4096) },
    { name: 'Content-Length 4096 declared with Expect: 100-continue (no 100 first)', head: ['POST /app HTTP/1.1', 'Host: x', 'Content-Length: 4096', 'Expect: 100-continue'], body: '', noContinue: true },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const completeBefore = app.seen.filter((s) => s.complete && s.bytes > BODY_LIMIT && !s.url.startsWith('/big')).length;
      const bytes = Buffer.from(`${c.head.join('\r\n')}\r\n\r\n${c.body}`, 'latin1');
      const pieces = c.pieces ? Array.from({ length: c.pieces }, (_, i) => bytes.subarray(Math.floor((i * bytes.length) / (c.pieces ?? 1)), Math.floor(((i + 1) * bytes.length) / (c.pieces ?? 1)))) : undefined;
      const r = await raw(c.head, c.body, { ...(pieces ? { pieces } : {}), ...(c.onContinue !== undefined ? { onContinue: c.onContinue } : {}) });
      const res = only(r);
      assertError(res, 413, 'payload_too_large');
      assert.equal(header(res, 'connection'), 'close', 'the unread rest of the body ends the connection');
      if (c.noContinue) assert.equal(r.responses.filter((x) => x.status === 100).length, 0, 'refused before 100 Continue');
      assert.equal(app.seen.filter((s) => s.complete && s.bytes > BODY_LIMIT && !s.url.startsWith('/big')).length, completeBefore, 'no over-limit body reached the upstream whole');
      assert.ok(!app.seen.some((s) => s.complete && s.bytes > BIG_LIMIT), 'no body over the /big limit reached the upstream whole');
    });
  }

  test('a client that leaves in the middle of an over-limit chunked body does not hurt the gateway', async () => {
    for (const path of ['/app', '/big']) {
      await exchange(gw.listenPort, [`POST ${path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${chunked(30_000, 1000).slice(0, 20_000)}`], { leave: true });
    }
    await assertServes();
  });

  test('a streamed body that pauses longer than --client-body-timeout gets 408 request_timeout', async () => {
    const r = await raw(['POST /big HTTP/1.1', 'Host: x', 'Content-Length: 5000'], 'a'.repeat(1000));
    assertError(only(r), 408, 'request_timeout');
  });

  test('afterwards the gateway serves', assertServes);
});

describe('admin paths with escapes and prototype names: JSON 400 or 404, every method, the process lives', () => {
  const get = async (method: string, path: string): Promise<RawResponse> =>
    only(await exchange(gw.adminPort, [`${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`], { answers: 1, methods: [method], deadlineMs: 15_000 }));
  const cases: { segment: string; status: number; code?: string }[] = [
    { segment: '%', status: 400, code: 'bad_request' },
    { segment: '%%', status: 400, code: 'bad_request' },
    { segment: '%2', status: 400, code: 'bad_request' },
    { segment: '%zz', status: 400, code: 'bad_request' },
    { segment: '%E0%A4%A', status: 400, code: 'bad_request' },
    { segment: '%C0%AF', status: 400, code: 'bad_request' },
    { segment: '%FF', status: 400, code: 'bad_request' },
    { segment: '__proto__', status: 404, code: 'service_not_found' },
    { segment: '%5F%5Fproto%5F%5F', status: 404, code: 'service_not_found' },
    { segment: 'constructor', status: 404, code: 'service_not_found' },
    { segment: 'toString', status: 404, code: 'service_not_found' },
    { segment: 'hasOwnProperty', status: 404, code: 'service_not_found' },
    { segment: 'valueOf', status: 404, code: 'service_not_found' },
    { segment: '__defineGetter__', status: 404, code: 'service_not_found' },
    { segment: '%00', status: 404, code: 'service_not_found' },
    { segment: 'app', status: 200 },
  ];
  for (const c of cases) {
    test(`GET /v1/services/${c.segment}/endpoints → ${c.status}`, async () => {
      const res = await get('GET', `/v1/services/${c.segment}/endpoints`);
      assert.equal(res.status, c.status, res.body.toString());
      const body = JSON.parse(res.body.toString('utf8')) as { error?: { code: string } } | unknown[];
      if (c.code) assert.equal((body as { error: { code: string } }).error.code, c.code);
      else assert.ok(Array.isArray(body) && body.length === 1);
      for (const method of ['HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
        const other = await get(method, `/v1/services/${c.segment}/endpoints`);
        assert.equal(other.status, method === 'HEAD' ? c.status : 405, `${method}: ${other.body.toString()}`);
      }
    });
  }
  for (const path of ['/%', '/v1/%zz', '/__proto__', '/v1/constructor', '/v1/services/%/x', '*']) {
    test(`GET ${path} → 404 not_found`, async () => {
      const res = await get('GET', path);
      assert.equal(res.status, 404, res.body.toString());
      assert.equal((JSON.parse(res.body.toString('utf8')) as { error: { code: string } }).error.code, 'not_found');
    });
  }
  test('afterwards /-/healthz answers and nothing was counted as an internal error', async () => {
    await assertServes();
    assert.equal(metricSum(await metricsText(), 'cgw_internal_errors_total'), internalErrorsBefore);
  });
});

describe('Content-Length that is not a whole number below 2^53: 400 bad_request', () => {
  const values = ['9007199254740992', '9007199254740993', '18446744073709551616', '123456789012345678901234567890', '-1', '+5', '0x10', '1e3', '1 2', '', '5, 5', '3\r\nContent-Length: 3', '3\r\nContent-Length: 4'];
  for (const value of values) {
    test(`Content-Length: ${JSON.stringify(value)}`, async () => {
      const hits = app.seen.length;
      const res = only(await raw(['POST /app HTTP/1.1', 'Host: x', `Content-Length: ${value}`], 'abc'));
      assertError(res, 400, 'bad_request');
      assert.equal(app.seen.length, hits, 'nothing reached the upstream');
    });
  }
  test('just below 2^53 is a length (413 by the route limit, not 400)', async () => {
    assertError(only(await raw(['POST /app HTTP/1.1', 'Host: x', 'Content-Length: 9007199254740991'], 'abc')), 413, 'payload_too_large');
  });
});

describe('Connection naming Host cannot change the Host the upstream sees', () => {
  const cases: { name: string; lines: string[] }[] = [
    { name: 'Connection: host', lines: ['Connection: host'] },
    { name: 'Connection: Host, close', lines: ['Connection: Host, close'] },
    { name: 'Connection: " HOST "', lines: ['Connection:  HOST '] },
    { name: 'Connection: keep-alive, host, x-forwarded-host, forwarded', lines: ['Connection: keep-alive, host, x-forwarded-host, forwarded'] },
    { name: 'two Connection lines, the second naming host', lines: ['Connection: keep-alive', 'Connection: host'] },
    { name: 'Connection: content-length, host with a body', lines: ['Connection: content-length, host', 'Content-Length: 3'] },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const hasBody = c.lines.some((l) => l.startsWith('Content-Length'));
      const r = await raw([`${hasBody ? 'POST' : 'GET'} /app/conn HTTP/1.1`, 'Host: shop.example.com:8080', ...c.lines], hasBody ? 'abc' : '');
      const s = seen(only(r));
      assert.equal(s.headers.host, 'shop.example.com:8080');
      assert.equal(s.headers['x-forwarded-host'], 'shop.example.com:8080');
      // RFC 7239: a host with a port is not a token, so it is quoted.
      assert.equal(s.headers.forwarded, 'for=127.0.0.1;host="shop.example.com:8080";proto=http');
      if (hasBody) assert.equal(s.bytes, 3, 'the body framing was kept');
    });
  }
});

describe('Host missing, repeated or not a host: 400 bad_request', () => {
  const cases: { name: string; hosts: string[] }[] = [
    { name: 'two Host headers', hosts: ['Host: a.example', 'Host: b.example'] },
    { name: 'two Host headers, same value', hosts: ['Host: a.example', 'Host: a.example'] },
    { name: 'two Host headers, different case', hosts: ['host: a.example', 'HOST: b.example'] },
    { name: 'a Host with a space', hosts: ['Host: a b'] },
    { name: 'a Host list', hosts: ['Host: a.example, b.example'] },
    { name: 'a Host with userinfo', hosts: ['Host: user@a.example'] },
    { name: 'a Host with a path', hosts: ['Host: a.example/admin'] },
    { name: 'no Host in HTTP/1.1', hosts: [] },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const hits = app.seen.length;
      const res = only(await raw(['GET /app HTTP/1.1', ...c.hosts]));
      assertError(res, 400, 'bad_request');
      assert.equal(app.seen.length, hits, 'nothing reached the upstream');
    });
  }
  test('an absolute target: the URL host is the Host the upstream sees, whatever Host said', async () => {
    const s = seen(only(await raw(['GET http://shop.example.com/app/abs HTTP/1.1', 'Host: other.example'])));
    assert.equal(s.headers.host, 'shop.example.com');
    assert.equal(s.url, '/app/abs');
  });
});

describe('more header fields than --max-header-count (200): 431, never cut silently', () => {
  const fields = (n: number, name = (i: number): string => `X-F${i}`): string[] => Array.from({ length: n }, (_, i) => `${name(i)}: v`);
  test('200 fields pass', async () => {
    const s = seen(only(await raw(['GET /app HTTP/1.1', 'Host: x', ...fields(199)])));
    assert.equal(s.headers['x-f198'], 'v', 'the last field arrived');
  });
  const refused: { name: string; lines: string[]; path?: string }[] = [
    { name: '201 fields', lines: fields(200) },
    { name: '2000 fields', lines: fields(2000) },
    { name: '201 fields of the same name', lines: fields(200, () => 'X-Same') },
    { name: 'the API key as field 250 of a protected route', lines: [...fields(249), `X-Api-Key: ${key}`], path: '/secure' },
  ];
  for (const c of refused) {
    test(`${c.name} → 431 headers_too_large`, async () => {
      const hits = app.seen.length;
      const res = only(await raw([`GET ${c.path ?? '/app'} HTTP/1.1`, 'Host: x', ...c.lines]));
      const error = assertError(res, 431, 'headers_too_large');
      assert.match(error.message, /more than 200 header fields/);
      assert.equal(app.seen.length, hits, 'nothing reached the upstream');
    });
  }
});

describe('Expect: 100-continue is answered only after authentication and limits passed', () => {
  const refused: { name: string; lines: string[]; status: number; code: string }[] = [
    { name: 'no API key', lines: ['POST /secure HTTP/1.1', 'Host: x', 'Content-Length: 5', 'Expect: 100-continue'], status: 401, code: 'unauthorized' },
    { name: 'a wrong API key', lines: ['POST /secure HTTP/1.1', 'Host: x', 'Content-Length: 5', 'X-Api-Key: cgw_alice_0000', 'Expect: 100-continue'], status: 401, code: 'unauthorized' },
    { name: 'no API key, chunked', lines: ['PUT /secure HTTP/1.1', 'Host: x', 'Transfer-Encoding: chunked', 'Expect: 100-Continue'], status: 401, code: 'unauthorized' },
    { name: 'a valid key but a declared body over the limit', lines: ['POST /secure HTTP/1.1', 'Host: x', `X-Api-Key: ${key}`, 'Content-Length: 5000', 'Expect: 100-continue'], status: 413, code: 'payload_too_large' },
  ];
  for (const c of refused) {
    test(`${c.name}: ${c.status} without a 100 Continue first`, async () => {
      const hits = app.seen.length;
      const r = await raw(c.lines, '', { onContinue: c.lines.some((l) => l.includes('chunked')) ? '5\r\nhello\r\n0\r\n\r\n' : 'hello' });
      assert.deepEqual(r.responses.map((x) => x.status), [c.status], 'one answer, no interim 100 Continue');
      assertError(only(r), c.status, c.code);
      assert.equal(app.seen.length, hits, 'nothing reached the upstream');
    });
  }
  test('a valid key: 100 Continue, then the body goes through', async () => {
    const r = await raw(['POST /secure/up HTTP/1.1', 'Host: x', `X-Api-Key: ${key}`, 'Content-Length: 5', 'Expect: 100-continue'], '', { onContinue: 'hello' });
    assert.deepEqual(r.responses.map((x) => x.status), [100, 200]);
    const s = seen(r.finals[0] as RawResponse);
    assert.equal(s.bytes, 5);
    assert.equal(s.headers.expect, undefined, 'Expect is not forwarded');
  });
  test('Expect other than 100-continue: the gateway answers with its JSON, not a bare 417', async () => {
    const res = only(await raw(['GET /app HTTP/1.1', 'Host: x', 'Expect: foo']));
    assert.ok(header(res, 'x-upstream') !== undefined || /application\/json/.test(header(res, 'content-type') ?? ''), `${res.head}`);
    assert.ok(header(res, 'x-request-id'), res.head);
  });
});

describe('X-Real-IP, Forwarded and X-Forwarded-* come from the gateway, not the client', () => {
  const cases: { name: string; lines: string[]; host?: string; expect: Record<string, string | undefined> }[] = [
    { name: 'no forwarding headers', lines: [], expect: { 'x-real-ip': '127.0.0.1', 'x-forwarded-for': '127.0.0.1', forwarded: 'for=127.0.0.1;host=x;proto=http', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'x' } },
    { name: "a client's X-Real-IP is replaced", lines: ['X-Real-IP: 6.6.6.6'], expect: { 'x-real-ip': '127.0.0.1' } },
    { name: 'two X-Real-IP lines are replaced', lines: ['X-Real-IP: 6.6.6.6', 'X-Real-IP: 7.7.7.7'], expect: { 'x-real-ip': '127.0.0.1' } },
    { name: 'Connection naming X-Real-IP and Forwarded removes the client values only', lines: ['Connection: x-real-ip, forwarded, x-forwarded-for', 'X-Real-IP: 6.6.6.6', 'Forwarded: for=1.2.3.4'], expect: { 'x-real-ip': '127.0.0.1', forwarded: 'for=127.0.0.1;host=x;proto=http', 'x-forwarded-for': '127.0.0.1' } },
    { name: "a client's Forwarded chain is kept and ours appended", lines: ['Forwarded: for=1.2.3.4;proto=https'], expect: { forwarded: 'for=1.2.3.4;proto=https, for=127.0.0.1;host=x;proto=http' } },
    { name: 'two Forwarded lines', lines: ['Forwarded: for=1.2.3.4', 'Forwarded: for="[2001:db8::1]"'], expect: { forwarded: 'for=1.2.3.4, for="[2001:db8::1]", for=127.0.0.1;host=x;proto=http' } },
    { name: "a client's X-Forwarded-For chain is kept and ours appended", lines: ['X-Forwarded-For: 203.0.113.9, 198.51.100.2'], expect: { 'x-forwarded-for': '203.0.113.9, 198.51.100.2, 127.0.0.1' } },
    { name: "a client's X-Forwarded-Proto and -Host are replaced", lines: ['X-Forwarded-Proto: https', 'X-Forwarded-Host: evil.example'], expect: { 'x-forwarded-proto': 'http', 'x-forwarded-host': 'x' } },
    { name: "with an empty Host, a client's X-Forwarded-Host is dropped", lines: ['X-Forwarded-Host: evil.example'], host: '', expect: { 'x-forwarded-host': undefined, forwarded: 'for=127.0.0.1;proto=http' } },
    { name: 'a Host with a port is quoted as RFC 7239 requires', lines: [], host: '[::1]:8080', expect: { forwarded: 'for=127.0.0.1;host="[::1]:8080";proto=http' } },
    {
      name: 'underscore spellings (X_Real_IP, X_Forwarded_For) are dropped: CGI frameworks read them as ours',
      lines: ['X_Real_IP: 6.6.6.6', 'X_Forwarded_For: 6.6.6.6', 'X_Forwarded_Host: evil.example', 'X_Forwarded_Proto: https'],
      expect: { x_real_ip: undefined, x_forwarded_for: undefined, x_forwarded_host: undefined, x_forwarded_proto: undefined, 'x-real-ip': '127.0.0.1', 'x-forwarded-for': '127.0.0.1' },
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const s = seen(only(await raw(['GET /app/fwd HTTP/1.1', `Host: ${c.host ?? 'x'}`, ...c.lines])));
      for (const [name, value] of Object.entries(c.expect)) assert.equal(s.headers[name], value, `${name}: ${JSON.stringify(s.headers)}`);
    });
  }
  test('HTTP/1.0 without Host: no X-Forwarded-Host from the client', async () => {
    const s = seen(only(await raw(['GET /app/fwd HTTP/1.0', 'X-Forwarded-Host: evil.example'])));
    assert.equal(s.headers['x-forwarded-host'], undefined);
    assert.equal(s.headers['x-real-ip'], '127.0.0.1');
  });
});

describe("every 400 the gateway writes, also for heads Node's parser refuses, is the JSON error", () => {
  const cases: { name: string; bytes: string }[] = [
    { name: 'not a request line', bytes: 'GARBAGE\r\n\r\n' },
    { name: 'an invalid method', bytes: 'G@T /app HTTP/1.1\r\nHost: x\r\n\r\n' },
    { name: 'a lower-case method', bytes: 'get /app HTTP/1.1\r\nHost: x\r\n\r\n' },
    { name: 'an unknown version', bytes: 'GET /app HTTP/9.9\r\nHost: x\r\n\r\n' },
    { name: 'a space in the target', bytes: 'GET /a pp HTTP/1.1\r\nHost: x\r\n\r\n' },
    { name: 'a NUL in the target', bytes: 'GET /ap\0p HTTP/1.1\r\nHost: x\r\n\r\n' },
    { name: 'raw UTF-8 in the target', bytes: `GET /${Buffer.from('é').toString('latin1')} HTTP/1.1\r\nHost: x\r\n\r\n` },
    { name: 'a header name with a space', bytes: 'GET /app HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n' },
    { name: 'a space before the colon', bytes: 'GET /app HTTP/1.1\r\nHost: x\r\nX-A : v\r\n\r\n' },
    { name: 'a header line without colon', bytes: 'GET /app HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n' },
    { name: 'obs-fold', bytes: 'GET /app HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n' },
    { name: 'bare LF line endings', bytes: 'GET /app HTTP/1.1\nHost: x\n\n' },
    { name: 'a bare CR', bytes: 'GET /app HTTP/1.1\rHost: x\r\n\r\n' },
    { name: 'a NUL in a header value', bytes: 'GET /app HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n' },
    { name: 'DEL in a header value', bytes: 'GET /app HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb\r\n\r\n' },
    { name: 'a chunk size that is not hex', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n' },
    { name: 'a negative chunk size', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n' },
    { name: 'a chunk size overflowing 64 bits', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n0\r\n\r\n' },
    { name: 'a control character in a chunk extension', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;\x01\r\nabc\r\n0\r\n\r\n' },
    { name: 'chunk data longer than its size', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n' },
    { name: 'a malformed trailer', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nbad trailer\r\n\r\n' },
    { name: 'a bad chunk after a streamed start', bytes: `POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n${chunked(2000, 500).slice(0, -5)}zz\r\nabc\r\n` },
    { name: 'Content-Length and Transfer-Encoding', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' },
    { name: 'Transfer-Encoding then Content-Length', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n' },
    { name: 'Transfer-Encoding: gzip', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc' },
    { name: 'Transfer-Encoding: chunked, chunked', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' },
    { name: 'two Transfer-Encoding lines', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' },
    { name: 'Transfer-Encoding in HTTP/1.0', bytes: 'POST /app HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' },
    { name: 'two Content-Length lines', bytes: 'POST /app HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc' },
    { name: 'an escaped slash in the path', bytes: 'GET /app/..%2Fsecure HTTP/1.1\r\nHost: x\r\n\r\n' },
    { name: 'an absolute target with another scheme', bytes: 'GET ftp://x/app HTTP/1.1\r\nHost: x\r\n\r\n' },
    { name: 'an asterisk target', bytes: 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n' },
    { name: 'the HTTP/2 preface', bytes: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const hits = app.seen.filter((s) => s.complete).length;
      const r = await exchange(gw.listenPort, [Buffer.from(c.bytes, 'latin1')], { answers: 1, methods: ['GET'], deadlineMs: 15_000 });
      assertError(only(r), 400, 'bad_request');
      assert.equal(app.seen.filter((s) => s.complete).length, hits, 'no complete request reached the upstream');
    });
  }
  test('a malformed request pipelined behind a slow one: the slow one gets its own answer first', async () => {
    const r = await exchange(gw.listenPort, ['GET /slow/first HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n'], { answers: 2, methods: ['GET', 'GET'], deadlineMs: 15_000 });
    assert.equal(r.finals[0]?.status, 200, `the first answer is the slow request's: ${r.raw.toString('latin1').slice(0, 400)}`);
  });
  test('afterwards the gateway serves', assertServes);
});

describe('a slow request head gets 408 request_timeout within --client-header-timeout (1 s)', () => {
  const cases: { name: string; pieces: string[]; gapMs?: number }[] = [
    { name: 'a connection that sends nothing', pieces: [''] },
    { name: 'half a request line', pieces: ['GET /app HT'] },
    { name: 'a head without its end', pieces: ['GET /app HTTP/1.1\r\nHost: x\r\n'] },
    { name: 'header lines trickled every 300 ms', pieces: ['GET /app HTTP/1.1\r\n', ...Array.from({ length: 12 }, (_, i) => `X-Slow-${i}: v\r\n`)], gapMs: 300 },
    { name: 'a second request on a kept-alive connection, half sent', pieces: ['GET /app HTTP/1.1\r\nHost: x\r\n\r\nGET /app HTTP/1.1\r\nHo'] },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const second = c.pieces[0]?.includes('\r\n\r\nGET') ?? false;
      const r = await exchange(gw.listenPort, c.pieces, { answers: second ? 2 : 1, methods: ['GET', 'GET'], deadlineMs: 15_000, ...(c.gapMs ? { gapMs: c.gapMs } : {}) });
      assert.equal(r.timedOut, false, `no answer within 15 s: ${r.raw.toString('latin1')}`);
      const res = r.finals[second ? 1 : 0];
      assert.ok(res, `no 408: ${JSON.stringify(r.raw.toString('latin1').slice(0, 400))}`);
      assertError(res, 408, 'request_timeout');
      assert.ok(r.elapsedMs >= HEADER_TIMEOUT_MS * 0.9, `answered after ${r.elapsedMs} ms, before the timeout`);
      // Node checks on a quarter of the timeout; several seconds of slack for a loaded machine.
      assert.ok(r.elapsedMs < HEADER_TIMEOUT_MS + 7000, `answered after ${r.elapsedMs} ms`);
    });
  }
});

describe('metrics: requests matching no route, and standard process metric names', () => {
  const unrouted: { name: string; pieces: string[]; status: number; code: string }[] = [
    { name: 'no route for the path', pieces: ['GET /no-such-route HTTP/1.1\r\nHost: x\r\n\r\n'], status: 404, code: 'route_not_found' },
    { name: 'no route for __proto__', pieces: ['GET /__proto__ HTTP/1.1\r\nHost: x\r\n\r\n'], status: 404, code: 'route_not_found' },
    { name: 'a head the parser refuses', pieces: ['GET /app HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n'], status: 400, code: 'bad_request' },
    { name: 'two Host headers', pieces: ['GET /app HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n'], status: 400, code: 'bad_request' },
    { name: 'a broken escape in the path', pieces: ['GET /app/%zz HTTP/1.1\r\nHost: x\r\n\r\n'], status: 400, code: 'bad_request' },
    { name: 'too many header fields', pieces: [`GET /app HTTP/1.1\r\nHost: x\r\n${'X-F: v\r\n'.repeat(250)}\r\n`], status: 431, code: 'headers_too_large' },
    { name: 'a head that never ends', pieces: ['GET /app HTTP/1.1\r\n'], status: 408, code: 'request_timeout' },
  ];
  for (const c of unrouted) {
    test(`${c.name}: ${c.status} counted under cgw_requests_total{route="",service="",code="${c.status}"}`, async () => {
      const series = `cgw_requests_total{route="",service="",code="${c.status}"}`;
      const before = metricValue(await metricsText(), series);
      const r = await exchange(gw.listenPort, c.pieces, { answers: 1, methods: ['GET'], deadlineMs: 15_000 });
      assertError(only(r), c.status, c.code);
      // Counted when the answer is written; the metrics read is a separate connection.
      await waitFor(async () => metricValue(await metricsText(), series) === before + 1, { timeoutMs: 15_000, message: `${series} = ${before + 1}` });
    });
  }
  test('process metrics have their standard names', async () => {
    const text = await metricsText();
    for (const name of ['process_cpu_seconds_total', 'nodejs_heap_size_used_bytes', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds']) {
      assert.match(text, new RegExp(`^${name} `, 'm'), `${name} is exported`);
    }
    assert.doesNotMatch(text, /^cgw_process_/m, 'no cgw_process_* names');
    assert.doesNotMatch(text, /^cgw_nodejs_/m, 'no cgw_nodejs_* names');
  });
});

describe('pipelined requests on a connection the client closes', () => {
  test('are finished and no longer counted in flight by their endpoint', async () => {
    await exchange(gw.listenPort, ['GET /slow/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /slow/2 HTTP/1.1\r\nHost: x\r\n\r\nGET /slow/3 HTTP/1.1\r\nHost: x\r\n\r\n'], { leave: true, gapMs: 300 });
    const inflight = async (): Promise<number> => {
      const rows = (await (await fetch(`${gw.adminUrl}/v1/services/slow/endpoints`, { signal: AbortSignal.timeout(15_000) })).json()) as { inflight: number }[];
      return rows.reduce((sum, row) => sum + row.inflight, 0);
    };
    await waitFor(async () => (await inflight()) === 0, { timeoutMs: 15_000, message: 'requests of the closed connection finished' });
  });
});

test('after every attack the gateway serves, is healthy, still applies Consul changes and counted no internal error', async () => {
  await assertServes();
  await consul.register({ id: 'late-1', name: 'late', port: app.port, tags: ['urlprefix-/late'] });
  await waitFor(async () => (await send(gw.url, '/late')).status === 200, { timeoutMs: 20_000, message: 'route of a service registered after the attacks' });
  const after = metricSum(await metricsText(), 'cgw_internal_errors_total');
  assert.equal(after, internalErrorsBefore, gw.logs.filter((l) => /"level":(50|60)/.test(l)).slice(0, 10).join('\n'));
});
