/**
 * Seeded fuzzing of the real gateway over raw sockets: random and malformed request lines, heads,
 * framings, bodies, pipelines and clients that leave mid-request on the proxy listener, and random
 * methods and paths on the admin listener. Every case must get well-formed HTTP answers or a
 * closed connection within a deadline; every refusal written by the gateway must be its JSON
 * error; nothing unauthenticated or over the body limit may reach an upstream. Afterwards the
 * process is alive, serves, answers /-/healthz, applies a Consul change, and counted no internal
 * error.
 *
 * Replay: CGW_FUZZ_SEED=<seed> (decimal or 0x hex; `random` for a fresh one) and
 * CGW_FUZZ_CASES=<n> select the run; the seed is in the test names and in every failure.
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ERROR_CODES, type ErrorCode } from '../../src/core/errors.ts';
import { generateApiKey } from '../../src/policy/consumers.ts';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor, type GatewayProcess } from '../helpers/gateway.ts';
import { send } from '../helpers/http.ts';
import { exchange, header, type Exchange, type RawResponse } from '../helpers/raw-http.ts';
import { startRecorder, type Recorder } from '../helpers/recorder.ts';
import { mulberry32 } from '../helpers/random.ts';

const SEED = parseSeed(process.env.CGW_FUZZ_SEED);
const PROXY_CASES = Number(process.env.CGW_FUZZ_CASES ?? 600);
const ADMIN_CASES = Math.max(40, Math.round(PROXY_CASES / 3));
/** Cases in flight at once; most answer at once, a few wait for the 1 s client timeouts. */
const CONCURRENCY = 12;
/** Per case: an answer or a close within this, even on a loaded machine (timeouts are 1 s). */
const CASE_DEADLINE_MS = 12_000;
const BODY_LIMIT = 1024;
const BIG_LIMIT = 16_384;
const MAX_HEADER_COUNT = 64;
const MAX_HEADER_SIZE = 16_384;
const HEX = `0x${SEED.toString(16)}`;
/** --drain-timeout: after the run nothing is in flight, so SIGTERM must exit 0 well before it. */
const DRAIN_MS = 5_000;

function parseSeed(raw: string | undefined): number {
  if (raw === undefined || raw === '') return 0x5eed_c6f1;
  if (raw === 'random') return randomInt(0, 2 ** 31);
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff) throw new Error(`CGW_FUZZ_SEED must be an unsigned 32-bit integer or "random", got ${raw}`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness

class Rng {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  float(): number {
    return this.next();
  }
  /** 0 <= n < max */
  int(max: number): number {
    return Math.floor(this.next() * max);
  }
  range(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }
  /** Bytes as a latin1 string (one char per byte), from `alphabet` or any byte. */
  bytes(n: number, alphabet?: string): string {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet ? alphabet[this.int(alphabet.length)] : String.fromCharCode(this.int(256));
    return s;
  }
}

/** UTF-8 bytes of `s` as a latin1 string, so it can be glued into a raw request. */
const utf8 = (s: string): string => Buffer.from(s, 'utf8').toString('latin1');

// ---------------------------------------------------------------------------------------------
// Case generation

interface Case {
  readonly index: number;
  readonly listener: 'proxy' | 'admin';
  /** What the generator chose, for failure messages. */
  readonly description: string[];
  /** Written one after the other (the parser sees them split at these points). */
  readonly pieces: Buffer[];
  /** Methods of the requests sent, in order. */
  readonly methods: string[];
  /** The client leaves right after writing: no answer is expected. */
  readonly leave: boolean;
  /** Admin cases: the Host names loopback (any other is refused by the loopback admin listener). */
  readonly loopbackHost?: boolean;
}

interface RequestParts {
  method: string;
  target: string;
  version: string;
  /** Raw header lines without line endings. */
  headers: string[];
  body: string;
  /** Every line ending of the head ('\r\n' unless broken on purpose). */
  eol: string;
  /** The head is cut short (never finished). */
  truncatedHead: boolean;
  /** Framing is clean: the server reads exactly this request and can answer it. */
  clean: boolean;
}

const GOOD_METHODS = ['GET', 'GET', 'GET', 'POST', 'POST', 'PUT', 'HEAD', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'PROPFIND', 'PURGE'];
const BAD_METHODS = ['get', 'G ET', 'FOO', 'CONNECT', 'PRI', '', 'GET\0', 'G\u00e9T', 'M'.repeat(300), '"GET"', 'GET/'];
const PREFIXES = ['/app', '/app', '/app', '/big', '/big', '/secure', '/secure', '/nothing', '/', '/App', '/secure/', '/app/'];
const SEGMENTS = [
  'a', 'users', '42', '%', '%2', '%zz', '%41', '%61pp', '%2F', '%2f', '%5C', '%5c', '%00', '%C0%AF', '%E2%82%AC', '%FF', '%E0%A4%A',
  '.', '..', '%2e', '%2E%2E', '.%2e', '__proto__', 'constructor', 'toString', 'prototype', 'hasOwnProperty', '~user', '', ';x=1',
  '\\', utf8('é'), utf8('日本'), utf8('\u{1F600}'), '%F0%9F%98%80', 'a+b', '%20', '*', '@', ':', '!$&\'()*+,;=',
];
const QUERIES = ['', '', '', '?a=1', '?%', '?%zz=1', '?__proto__[x]=1&constructor[prototype][y]=2', '?a=%E2%82%AC&b=', '?=&&=', '??', '?#', '#frag', '?q=' + 'x'.repeat(2000), `?${utf8('ü')}`];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/1.2', 'HTTP/2.0', 'HTTP/0.9', 'http/1.1', 'HTTP/1.1 x', 'HTTP/11', ''];
const HOSTS = ['x', 'x', 'x', 'api.example.com', 'API.EXAMPLE.COM:8080', '127.0.0.1', '[::1]:80', '', 'a b', 'a, b', 'u@h', 'h/p', utf8('hé'), 'x'.repeat(300)];
const CONNECTION_TOKENS = ['close', 'keep-alive', 'host', 'Host', 'content-length', 'transfer-encoding', 'x-forwarded-for', 'x-real-ip', 'forwarded', 'x-api-key', 'x-request-id', 'upgrade', 'te', 'x-cgw-consumer', 'expect', ''];

/** Segments every layer accepts; with them a request reaches routing (and often the upstream). */
const SAFE_SEGMENTS = ['a', 'users', '42', '%41', '%61pp', '%E2%82%AC', '__proto__', 'constructor', 'toString', 'prototype', '~user', 'a+b', '%20', ';x=1', '@', ':', '%5F%5Fproto%5F%5F'];
const SAFE_QUERIES = ['', '', '?a=1', '?__proto__[x]=1&constructor[prototype][y]=2', '?a=%E2%82%AC&b=', '?=&&=', '?%', '?%zz=1'];

function randomPath(rng: Rng, safe = false): string {
  let path = safe ? rng.pick(['/app', '/app', '/big', '/secure', '/nothing', '/']) : rng.pick(PREFIXES);
  const n = rng.chance(0.3) ? 0 : rng.range(1, 4);
  for (let i = 0; i < n; i++) {
    if (!path.endsWith('/')) path += '/';
    path += rng.chance(0.05) ? 'a'.repeat(rng.range(100, 3000)) : rng.pick(safe ? SAFE_SEGMENTS : SEGMENTS);
  }
  if (rng.chance(0.1)) path = path.replace(/\//g, () => (rng.chance(0.3) ? '//' : '/'));
  return path + rng.pick(safe ? SAFE_QUERIES : QUERIES);
}

function randomTarget(rng: Rng): string {
  const r = rng.float();
  if (r < 0.8) return randomPath(rng);
  if (r < 0.9) {
    const scheme = rng.pick(['http', 'http', 'https', 'HTTP', 'ftp']);
    const authority = rng.pick(['x', 'api.example.com', 'u:p@x', '[::1]', 'x:99999', '', 'x:80', '%41']);
    return `${scheme}://${authority}${rng.chance(0.85) ? randomPath(rng) : ''}`;
  }
  return rng.pick(['*', 'x:443', '', 'app', '//app', `/${'\0'}app`, '/ap p', '/app\t', utf8('/é')]);
}

/** One random extra header line (or a broken one), with what it is for the description. */
const BENIGN_HEADERS = [0, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23];
const HOSTILE_HEADERS = [1, 2, 3, 4, 6, 11, 12, 21];

function randomHeader(rng: Rng, key: string, hostile: boolean): [string, string] {
  const r = rng.pick(hostile ? HOSTILE_HEADERS : BENIGN_HEADERS);
  switch (r) {
    case 0: return ['dup', 'X-Dup: 1\r\nX-Dup: 2'];
    case 1: return ['obs-fold', 'X-Fold: a\r\n  folded'];
    case 2: return ['NUL in value', 'X-Nul: a\0b'];
    case 3: return ['long name', `X-${'n'.repeat(rng.range(100, 6000))}: v`];
    case 4: return ['long value', `X-Long: ${'v'.repeat(rng.range(1000, MAX_HEADER_SIZE + 4000))}`];
    case 5: return ['connection tokens', `Connection: ${Array.from({ length: rng.range(1, 4) }, () => rng.pick(CONNECTION_TOKENS)).join(rng.pick([', ', ',', ' , ']))}`];
    case 6: return ['expect', `Expect: ${hostile ? rng.pick(['200-ok', 'foo', '', '100-continue, foo']) : rng.pick(['100-continue', '100-CONTINUE'])}`];
    case 7: return ['upgrade', rng.pick(['Upgrade: websocket\r\nConnection: Upgrade', 'Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__', 'Upgrade: foo'])];
    case 8: return ['forwarding', rng.pick(['X-Forwarded-For: 203.0.113.9', 'X-Real-IP: 6.6.6.6', 'X-Real-IP: 6.6.6.6\r\nX-Real-IP: 7.7.7.7', 'Forwarded: for=1.2.3.4;proto=https', 'Forwarded: for="[2001:db8::1]"', 'X-Forwarded-Host: evil.test', 'X-Forwarded-Proto: https'])];
    case 9: return ['request id', `X-Request-Id: ${rng.pick(['abc', 'a b', 'x'.repeat(200), '', '../../etc', utf8('é')])}`];
    case 10: return ['forged identity', rng.pick(['X-Cgw-Consumer: root', 'x_cgw_subject: admin', 'X-CGW-Scopes: all'])];
    case 11: return ['bad name', rng.pick(['Bad Name: v', 'X\0: v', '(x): v', ': v', 'nocolon', 'X-A : v', ' X-Lead: v', 'X-\u00e9: v'])];
    case 12: return ['control char', `X-Ctl: a${String.fromCharCode(rng.pick([1, 8, 11, 12, 13, 27, 127]))}b`];
    case 13: return ['high bytes', `X-Bin: ${rng.bytes(rng.range(1, 40), '\x80\x9f\xa0\xe9\xff')}`];
    case 14: return ['api key', `X-Api-Key: ${rng.pick([key, key, 'wrong', `${key}x`, '', `${key}, ${key}`])}`];
    case 15: return ['authorization', `Authorization: ${rng.pick(['Bearer x.y.z', 'Basic Og==', `ApiKey ${key}`, ''])}`];
    case 16: return ['te', `TE: ${rng.pick(['trailers', 'gzip', 'chunked'])}`];
    case 17: return ['content-type', `Content-Type: ${rng.pick(['application/json', 'text/plain; charset=utf-8', 'multipart/form-data; boundary=x', '', utf8('ü/ü')])}`];
    case 18: return ['canary', `X-Canary: ${rng.pick(['v1', '__proto__', 'constructor', ''])}`];
    case 19: return ['cookie', `Cookie: ${rng.bytes(rng.range(0, 200), 'abc=; ')}`];
    case 20: return ['proxy headers', rng.pick(['Proxy-Authorization: Basic x', 'Proxy-Connection: keep-alive', 'Keep-Alive: timeout=1', 'Trailer: X-T'])];
    case 21: return ['host again', `Host: ${rng.pick(HOSTS)}`];
    case 22: return ['random token', `${rng.bytes(rng.range(1, 30), 'abcxyz-_.~!#$%&*+^`|0123')}: ${rng.bytes(rng.range(0, 60), 'abc xyz\t:;,"=')}`];
    default: return ['max-forwards', `Max-Forwards: ${rng.pick(['0', '-1', 'x'])}`];
  }
}

function chunkedBody(rng: Rng, total: number, description: string[], hostile: boolean): { body: string; clean: boolean } {
  let body = '';
  let left = total;
  let clean = true;
  while (left > 0) {
    const size = Math.min(left, rng.range(1, 700));
    const ext = rng.chance(0.1) ? rng.pick(hostile ? [';a=b', ';x', ';q="1"', ' ;a', `;${'e'.repeat(500)}`] : [';a=b', ';x', ';q="1"']) : '';
    if (ext.startsWith(' ')) clean = false;
    body += `${size.toString(16)}${ext}\r\n${'c'.repeat(size)}\r\n`;
    left -= size;
  }
  if (hostile && rng.chance(0.3)) {
    // Broken framing somewhere after the good chunks.
    const broken = rng.pick([
      'zz\r\nabc\r\n', '-1\r\nabc\r\n', 'ffffffffffffffffff\r\nabc\r\n', '0x5\r\nabcde\r\n', ' 5\r\nabcde\r\n', '5\r\nabcdefgh\r\n',
      '5\r\nabcdeXX', '3;\x01\r\nabc\r\n', '\r\n', '0\r\nbad trailer\r\n\r\n', '3\nabc\n0\n\n',
    ]);
    description.push(`broken chunk ${JSON.stringify(broken)}`);
    return { body: body + broken, clean: false };
  }
  if (hostile && rng.chance(0.2)) {
    description.push('chunked body never finished');
    return { body, clean: false };
  }
  const trailer = rng.chance(0.15) ? rng.pick(['X-T: 1\r\n', 'X-T: 1\r\nX-U: 2\r\n', 'Content-Length: 5\r\n']) : '';
  return { body: `${body}0\r\n${trailer}\r\n`, clean };
}

/** One request: a plausible one most of the time, with one or more things wrong in many. */
/**
 * One request. Half are plausible (valid line, Host and framing, benign headers, bodies around
 * the limits), so the deep path (auth, buffering, streaming, forwarding) is exercised; the other
 * half have one or more things wrong anywhere.
 */
function randomRequest(rng: Rng, key: string, description: string[]): RequestParts {
  const hostile = rng.chance(0.5);
  description.push(hostile ? 'hostile' : 'plausible');
  const method = !hostile || rng.chance(0.85) ? rng.pick(GOOD_METHODS) : rng.pick(BAD_METHODS);
  const target = hostile ? randomTarget(rng) : rng.chance(0.9) ? randomPath(rng, true) : `http://${rng.pick(['x', 'api.example.com'])}${randomPath(rng, true)}`;
  const version = hostile ? rng.pick(VERSIONS) : rng.chance(0.9) ? 'HTTP/1.1' : 'HTTP/1.0';
  const headers: string[] = [];
  let clean = true;
  const hostChoice = rng.float();
  if (!hostile) headers.push(`Host: ${rng.pick(['x', 'x', 'api.example.com', '127.0.0.1', '[::1]:80', ''])}`);
  else if (hostChoice < 0.8) headers.push(`Host: ${rng.pick(HOSTS)}`);
  else if (hostChoice < 0.9) headers.push(`Host: ${rng.pick(HOSTS)}`, `Host: ${rng.pick(HOSTS)}`);
  else description.push('no Host');
  if (target.includes('/secure') && rng.chance(0.7)) headers.push(`X-Api-Key: ${rng.chance(0.8) ? key : 'wrong'}`);
  const extras = rng.chance(0.06) ? rng.range(MAX_HEADER_COUNT - 8, MAX_HEADER_COUNT + 8) : rng.range(0, 3);
  if (extras > 3) description.push(`${extras} extra headers`);
  for (let i = 0; i < extras; i++) {
    if (extras > 3) {
      headers.push(`X-Many-${i}: ${i}`);
      continue;
    }
    const [what, line] = randomHeader(rng, key, hostile && rng.chance(0.5));
    description.push(what);
    headers.push(line);
  }

  // Body and framing.
  let body = '';
  // Plausible requests: no body, an exact Content-Length, or well-formed chunks.
  const framing = hostile ? rng.float() : rng.pick([0.1, 0.1, 0.5, 0.5, 0.8]);
  const size = rng.chance(0.25) ? rng.range(BODY_LIMIT - 8, BIG_LIMIT + 4000) : rng.range(0, 1500);
  if (framing < 0.45) {
    description.push('no body');
  } else if (framing < 0.6) {
    description.push(`content-length ${size}`);
    headers.push(`Content-Length: ${size}`);
    body = rng.bytes(size, 'abcdefgh');
  } else if (framing < 0.66) {
    const extra = rng.pick(['GARBAGE\r\n\r\n', 'GET /app HTTP/1.1\r\nHost: x\r\n\r\n', rng.bytes(rng.range(1, 50)), '\r\n\r\n']);
    description.push(`content-length ${size} followed by ${JSON.stringify(extra.slice(0, 40))}`);
    headers.push(`Content-Length: ${size}`);
    body = rng.bytes(size, 'abcdefgh') + extra;
    clean = false;
  } else if (framing < 0.72) {
    const sent = rng.int(Math.max(1, size));
    description.push(`content-length ${size + 1} but ${sent} bytes`);
    headers.push(`Content-Length: ${size + 1}`);
    body = rng.bytes(sent, 'abcdefgh');
    clean = false;
  } else if (framing < 0.88) {
    description.push(`chunked ${size}`);
    headers.push(rng.pick(['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked', 'transfer-encoding: Chunked']));
    const chunked = chunkedBody(rng, size, description, hostile);
    body = chunked.body;
    clean &&= chunked.clean;
  } else if (framing < 0.93) {
    const te = rng.pick(['Content-Length: 3\r\nTransfer-Encoding: chunked', 'Transfer-Encoding: chunked\r\nContent-Length: 3', 'Transfer-Encoding: gzip', 'Transfer-Encoding: chunked, chunked',
      'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked', 'Transfer-Encoding: identity', 'Transfer-Encoding: xchunked', 'Transfer-Encoding: chunked, gzip', 'Transfer-Encoding:  chunked', 'Transfer-Encoding: chunked;q=1']);
    description.push(`framing ${JSON.stringify(te)}`);
    headers.push(te);
    body = '3\r\nabc\r\n0\r\n\r\n';
    clean = false;
  } else {
    const cl = rng.pick(['9007199254740992', '9007199254740993', '99999999999999999999', '18446744073709551616', '-1', '+1', '1e3', '0x10', '', '1,1', '1, 2', ' 12 ', '1 2', '١٢',
      '3\r\nContent-Length: 3', '3\r\nContent-Length: 4', '0003']);
    description.push(`content-length ${JSON.stringify(cl)}`);
    headers.push(`Content-Length: ${cl === '١٢' ? utf8(cl) : cl}`);
    body = 'abc';
    clean = false;
  }

  let eol = '\r\n';
  if (hostile && rng.chance(0.08)) {
    eol = rng.pick(['\n', '\r', '\n\r']);
    description.push(`line ending ${JSON.stringify(eol)}`);
  }
  const truncatedHead = hostile && rng.chance(0.08);
  if (truncatedHead) description.push('head never finished');
  const requestClean = clean && eol === '\r\n' && !truncatedHead && !BAD_METHODS.includes(method);
  return { method, target, version, headers, body, eol, truncatedHead, clean: requestClean };
}

function serialize(r: RequestParts): string {
  const line = r.version === '' ? `${r.method} ${r.target}` : `${r.method} ${r.target} ${r.version}`;
  const head = [line, ...r.headers].join('\r\n').replace(/\r\n/g, r.eol);
  if (r.truncatedHead) return head.slice(0, Math.max(1, Math.floor(head.length / 2)));
  return `${head}${r.eol}${r.eol}${r.body}`;
}

/** Splits `bytes` at up to three random points, so the parser sees it arrive in pieces. */
function split(rng: Rng, bytes: Buffer): Buffer[] {
  if (bytes.length < 2 || rng.chance(0.6)) return [bytes];
  const cuts = [...new Set(Array.from({ length: rng.range(1, 3) }, () => rng.range(1, bytes.length - 1)))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let at = 0;
  for (const cut of cuts) {
    pieces.push(bytes.subarray(at, cut));
    at = cut;
  }
  pieces.push(bytes.subarray(at));
  return pieces;
}

function proxyCase(rng: Rng, index: number, key: string): Case {
  const description: string[] = [];
  const count = rng.chance(0.12) ? rng.range(2, 4) : 1;
  const requests: RequestParts[] = [];
  for (let i = 0; i < count; i++) {
    if (count > 1) description.push(`[request ${i + 1}/${count}]`);
    const r = randomRequest(rng, key, description);
    requests.push(r);
    if (!r.clean) break; // what follows a broken request is its garbage, not another request
  }
  const bytes = Buffer.from(requests.map(serialize).join(''), 'latin1');
  const leave = rng.chance(0.08);
  if (leave) description.push('client leaves after writing');
  return { index, listener: 'proxy', description, pieces: split(rng, bytes), methods: requests.map((r) => r.method), leave };
}

const ADMIN_METHODS = ['GET', 'GET', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'FOO', 'get'];
const ADMIN_SEGMENTS = [...SEGMENTS, 'app', 'vault', 'web', '%5F%5Fproto%5F%5F', 'valueOf', '__defineGetter__', 'isPrototypeOf', 'x'.repeat(5000), '%%', '%u0041', '%C3', '%C3%28', '%ED%A0%80', '%EF%BF%BF'];

function adminCase(rng: Rng, index: number): Case {
  const method = rng.pick(ADMIN_METHODS);
  const seg = (): string => rng.pick(ADMIN_SEGMENTS);
  const path = rng.pick([
    () => `/v1/services/${seg()}/endpoints`,
    () => `/v1/services/${seg()}/endpoints`,
    () => `/v1/services/${seg()}/endpoints`,
    () => `/v1/services/${seg()}${rng.pick(['', '/', '/x', '/endpoints/x'])}`,
    () => `/v1/${seg()}`,
    () => `/${seg()}/${seg()}`,
    () => rng.pick(['/-/healthz', '/-/readyz', '/metrics', '/v1/status', '/v1/services', '/v1/routes', '/v1/canary', '/v1/watches', '/v1/problems', '/v1/policies', '/v1/consumers', '/v1/snapshot']) + rng.pick(QUERIES),
    () => rng.pick(['*', 'http://x/v1/status', '/v1/services/app/endpoints', '//v1//services', '/v1/services/%2e%2e/endpoints']),
  ])();
  const host = rng.chance(0.9) ? '127.0.0.1' : rng.pick(HOSTS);
  const lines = [`${method} ${path} HTTP/1.1`, `Host: ${host}`];
  if (rng.chance(0.2)) lines.push(randomHeader(rng, 'k', rng.chance(0.3))[1]);
  if (method !== 'GET' && method !== 'HEAD' && rng.chance(0.3)) lines.push('Content-Length: 3');
  const bytes = Buffer.from(`${lines.join('\r\n')}\r\n\r\n${lines.some((l) => l === 'Content-Length: 3') ? 'abc' : ''}`, 'latin1');
  const loopbackHost = host === '127.0.0.1' || host === '[::1]:80';
  return { index, listener: 'admin', description: [`${method} ${JSON.stringify(path.slice(0, 200))} Host ${JSON.stringify(host.slice(0, 40))}`], pieces: split(rng, bytes), methods: [method], leave: false, loopbackHost };
}

// ---------------------------------------------------------------------------------------------
// The system under test

let consul: ConsulAgent;
let gw: GatewayProcess;
let app: Recorder;
let vault: Recorder;
let dir: string;
let gatewayExited = false;
const { key, keyHash } = generateApiKey('alice');

async function metricsText(): Promise<string> {
  const res = await fetch(`${gw.adminUrl}/metrics`, { signal: AbortSignal.timeout(15_000) });
  assert.equal(res.status, 200);
  return res.text();
}

/** Sum of every series of `name` (0 when it has none yet). */
function metricSum(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

before(async () => {
  [consul, app, vault, dir] = await Promise.all([startConsul(), startRecorder('app'), startRecorder('vault'), mkdtemp(join(tmpdir(), 'cgw-fuzz-'))]);
  await writeFile(join(dir, 'defaults.json'), JSON.stringify({ appliesTo: 'defaults', limits: { maxBodyBytes: BODY_LIMIT } }));
  await writeFile(join(dir, 'big.json'), JSON.stringify({ appliesTo: { route: '/big' }, limits: { maxBodyBytes: BIG_LIMIT } }));
  await writeFile(join(dir, 'secure.json'), JSON.stringify({ appliesTo: { route: '/secure' }, auth: { methods: ['apiKey'] } }));
  await consul.kvPut('gateway/consumers/alice', JSON.stringify({ keyHash }));
  await consul.register({ id: 'app-1', name: 'app', port: app.port, tags: ['urlprefix-/app', 'urlprefix-/big', 'urlprefix-api.example.com/'] });
  await consul.register({ id: 'vault-1', name: 'vault', port: vault.port, tags: ['urlprefix-/secure'] });
  gw = await startGateway({
    consul: consul.addr,
    args: [
      '--policies', dir,
      '--client-header-timeout', '1s',
      '--client-body-timeout', '1s',
      // Small, so bodies above it take the streaming path (counted while they flow to the upstream).
      '--request-buffer-size', '512',
      '--max-header-count', String(MAX_HEADER_COUNT),
      '--max-header-size', String(MAX_HEADER_SIZE),
      '--drain-timeout', `${DRAIN_MS}ms`,
    ],
  });
  void gw.exited.then(() => (gatewayExited = true));
  // The key works before the fuzz starts, so a refusal later is the fuzz's doing.
  await waitFor(async () => (await send(gw.url, '/secure', { headers: { 'x-api-key': key } })).status === 200, { timeoutMs: 20_000, message: 'consumer alice in force' });
});

after(async () => {
  await gw?.kill('SIGTERM', DRAIN_MS + 10_000);
  await Promise.all([app?.close(), vault?.close()]);
  await consul?.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Oracles

interface Finding {
  readonly c: Case;
  readonly problem: string;
  readonly result?: Exchange;
}

const KNOWN_CODES = new Set(Object.keys(ERROR_CODES));

/** What must hold for every answer on the proxy listener; returns the problems found. */
function checkProxyAnswers(c: Case, r: Exchange): { broken: string[]; inconsistent: string[] } {
  const broken: string[] = [];
  const inconsistent: string[] = [];
  if (r.timedOut) broken.push(`neither an answer to each request nor a close within ${CASE_DEADLINE_MS} ms`);
  if (r.malformed !== undefined) broken.push(`malformed answer: ${r.malformed}`);
  else if (r.closed && r.rest.length > 0) broken.push(`connection closed in the middle of an answer (${r.rest.length} bytes)`);
  let previous: RawResponse | undefined;
  for (const res of r.responses) {
    // Authentication, authorization, rate and header limits come before the go-ahead (a chunked
    // body can only be found too large after it, so 413 may follow a 100).
    if (res.status >= 200 && previous?.status === 100 && [401, 403, 429, 431].includes(res.status)) {
      inconsistent.push(`100 Continue was sent before the ${res.status} refusal`);
    }
    previous = res;
    if (res.status < 200) continue;
    if (header(res, 'x-upstream') !== undefined) {
      if (res.status !== 200) broken.push(`upstream answer with status ${res.status}`);
      continue;
    }
    // Written by the gateway: its JSON error, every time.
    const what = `${res.status} ${JSON.stringify(res.head.slice(0, 300))}`;
    const isHead = c.methods[r.finals.indexOf(res)] === 'HEAD';
    if (!/application\/json/.test(header(res, 'content-type') ?? '')) {
      inconsistent.push(`gateway answer is not JSON: ${what}`);
      continue;
    }
    if (isHead) continue;
    let error: { code?: unknown; message?: unknown; requestId?: unknown } | undefined;
    try {
      error = (JSON.parse(res.body.toString('utf8')) as { error?: typeof error }).error;
    } catch {
      inconsistent.push(`gateway answer body is not JSON: ${what}`);
      continue;
    }
    if (typeof error?.code !== 'string' || !KNOWN_CODES.has(error.code)) inconsistent.push(`unknown error code ${JSON.stringify(error?.code)}: ${what}`);
    else if (ERROR_CODES[error.code as ErrorCode].status !== res.status) inconsistent.push(`code ${error.code} with status ${res.status}`);
    if (error?.code === 'internal_error') broken.push(`500 internal_error: ${res.body.toString('utf8')}`);
    if (typeof error?.message !== 'string') inconsistent.push(`error without a message: ${what}`);
    if (typeof error?.requestId !== 'string' || error.requestId !== header(res, 'x-request-id')) inconsistent.push(`requestId ${JSON.stringify(error?.requestId)} is not the x-request-id header: ${what}`);
  }
  return { broken, inconsistent };
}

function checkAdminAnswers(c: Case, r: Exchange): string[] {
  const problems: string[] = [];
  if (r.timedOut) problems.push(`neither an answer nor a close within ${CASE_DEADLINE_MS} ms`);
  if (r.malformed !== undefined) problems.push(`malformed answer: ${r.malformed}`);
  else if (r.closed && r.rest.length > 0) problems.push(`connection closed in the middle of an answer (${r.rest.length} bytes)`);
  const method = c.methods[0];
  for (const res of r.finals) {
    if (res.status >= 500) problems.push(`admin answered ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`);
    // The admin listener is on loopback: a request for another host is refused (DNS rebinding),
    // whatever its method and path; Node's parser may refuse a malformed Host first (400).
    if (c.loopbackHost === false) {
      if (res.status !== 403 && res.status !== 400) problems.push(`a request for a non-loopback host answered ${res.status}, not 403`);
    } else if (res.status === 403) problems.push(`a request for a loopback host answered 403`);
    else if (method !== 'GET' && method !== 'HEAD' && res.status !== 405 && res.status !== 400) problems.push(`${method} answered ${res.status}, not 405`);
    if (res.status >= 400 && method !== 'HEAD' && res.body.length > 0) {
      try {
        const code = (JSON.parse(res.body.toString('utf8')) as { error?: { code?: unknown } }).error?.code;
        if (typeof code !== 'string') problems.push(`admin error without a code: ${res.body.toString('utf8').slice(0, 200)}`);
      } catch {
        problems.push(`admin error body is not JSON: ${res.body.toString('latin1').slice(0, 200)}`);
      }
    }
  }
  return problems;
}

function describeCase(c: Case): string {
  const bytes = Buffer.concat(c.pieces).toString('latin1');
  const shown = bytes.length > 1500 ? `${bytes.slice(0, 1500)}… (${bytes.length} bytes)` : bytes;
  return `seed ${HEX} case ${c.listener}#${c.index} [${c.description.join('; ')}] pieces ${c.pieces.map((p) => p.length).join('+')}\n  sent: ${JSON.stringify(shown)}`;
}

function describeResult(r: Exchange): string {
  const raw = r.raw.toString('latin1');
  return `  got (${r.elapsedMs} ms, closed ${r.closed}, timed out ${r.timedOut}): ${JSON.stringify(raw.length > 800 ? `${raw.slice(0, 800)}…` : raw)}`;
}

async function runAll(cases: readonly Case[], run: (c: Case) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < cases.length) {
      const c = cases[next++] as Case;
      await run(c);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

// ---------------------------------------------------------------------------------------------
// The run

const broken: Finding[] = [];
const inconsistent: Finding[] = [];
let internalErrorsBefore = 0;
let fuzzMs = 0;

test(`fuzz seed=${HEX}: ${PROXY_CASES} proxy and ${ADMIN_CASES} admin cases get well-formed answers or a close, in time`, { timeout: 120_000 }, async (t) => {
  internalErrorsBefore = metricSum(await metricsText(), 'cgw_internal_errors_total');
  const rng = new Rng(SEED);
  const cases: Case[] = [];
  for (let i = 0; i < PROXY_CASES; i++) cases.push(proxyCase(rng, i, key));
  for (let i = 0; i < ADMIN_CASES; i++) cases.push(adminCase(rng, i));
  // Interleaved, so the admin listener is hit while the proxy is busy.
  const order = cases.map((c, i) => ({ c, k: (i * 2654435761) % 4294967296 })).sort((a, b) => a.k - b.k).map((x) => x.c);

  const started = Date.now();
  const statuses = new Map<string, number>();
  await runAll(order, async (c) => {
    const port = c.listener === 'proxy' ? gw.listenPort : gw.adminPort;
    const r = await exchange(port, c.pieces, { methods: c.methods, answers: c.leave ? undefined : c.methods.length, deadlineMs: CASE_DEADLINE_MS, leave: c.leave });
    if (gatewayExited) broken.push({ c, problem: 'the gateway process exited', result: r });
    if (c.leave) return;
    for (const k of r.finals.length > 0 ? r.finals.map((f) => `${c.listener} ${f.status}`) : [`${c.listener} closed`]) statuses.set(k, (statuses.get(k) ?? 0) + 1);
    if (c.listener === 'admin') {
      for (const problem of checkAdminAnswers(c, r)) broken.push({ c, problem, result: r });
      return;
    }
    const found = checkProxyAnswers(c, r);
    for (const problem of found.broken) broken.push({ c, problem, result: r });
    for (const problem of found.inconsistent) inconsistent.push({ c, problem, result: r });
  });
  fuzzMs = Date.now() - started;
  t.diagnostic(`seed ${HEX}: ${cases.length} cases in ${fuzzMs} ms; answers: ${[...statuses].sort().map(([k, n]) => `${k}×${n}`).join(', ')}`);

  const report = broken.slice(0, 10).map((f) => `${f.problem}\n${describeCase(f.c)}\n${f.result ? describeResult(f.result) : ''}`);
  assert.equal(broken.length, 0, `${broken.length} cases failed (replay with CGW_FUZZ_SEED=${HEX}):\n\n${report.join('\n\n')}\n\ngateway log tail:\n${gw.logs.slice(-30).join('\n')}`);
  assert.equal(gatewayExited, false, 'the gateway is still running');
});

/**
 * Node itself would answer an HTTP/1.1 request without Host (a bare 400) and an Expect other than
 * 100-continue (a bare 417) before the gateway sees the request; the gateway answers them instead.
 */

test(`fuzz seed=${HEX}: every answer the gateway writes itself is its JSON error with the request id`, () => {
  const byProblem = new Map<string, Finding[]>();
  for (const f of inconsistent) {
    const kind = f.problem.replace(/: .*/s, '');
    byProblem.set(kind, [...(byProblem.get(kind) ?? []), f]);
  }
  const report = [...byProblem.values()].map((fs) => `${fs.length}× ${fs[0]?.problem}\n${fs[0] ? describeCase(fs[0].c) : ''}`);
  assert.equal(inconsistent.length, 0, `${inconsistent.length} answers (replay with CGW_FUZZ_SEED=${HEX}):\n\n${report.join('\n\n')}`);
});

test(`fuzz seed=${HEX}: nothing unauthenticated, over its body limit or with forged forwarding reached an upstream`, () => {
  const problems: string[] = [];
  for (const s of vault.seen) {
    if (s.headers['x-cgw-consumer'] !== 'alice') problems.push(`vault got ${s.method} ${s.url} without the authenticated consumer: ${JSON.stringify(s.headers).slice(0, 400)}`);
  }
  for (const [name, rec] of [['app', app], ['vault', vault]] as const) {
    for (const s of rec.seen) {
      const limit = s.url.startsWith('/big') ? BIG_LIMIT : BODY_LIMIT;
      if (s.complete && s.bytes > limit) problems.push(`${name} got a complete ${s.bytes}-byte body for ${s.url} (limit ${limit})`);
      const h = s.headers;
      if (h['x-real-ip'] !== '127.0.0.1') problems.push(`${name} ${s.url}: x-real-ip ${JSON.stringify(h['x-real-ip'])}`);
      if (!/(^|, )127\.0\.0\.1$/.test(String(h['x-forwarded-for']))) problems.push(`${name} ${s.url}: x-forwarded-for ${JSON.stringify(h['x-forwarded-for'])}`);
      if (!/(^|, )for=127\.0\.0\.1(;host=[^,]*)?;proto=http$/.test(String(h.forwarded))) problems.push(`${name} ${s.url}: forwarded ${JSON.stringify(h.forwarded)}`);
      if (h['x-forwarded-proto'] !== 'http') problems.push(`${name} ${s.url}: x-forwarded-proto ${JSON.stringify(h['x-forwarded-proto'])}`);
      if (h['x-forwarded-host'] !== undefined && h['x-forwarded-host'] !== h.host) problems.push(`${name} ${s.url}: x-forwarded-host ${JSON.stringify(h['x-forwarded-host'])} but host ${JSON.stringify(h.host)}`);
      for (const hop of ['te', 'trailer', 'upgrade', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'expect']) {
        if (h[hop] !== undefined) problems.push(`${name} ${s.url}: hop-by-hop ${hop} forwarded`);
      }
      for (const forged of Object.keys(h).filter((n) => n.replace(/_/g, '-').startsWith('x-cgw-'))) {
        if (name !== 'vault' || !['x-cgw-consumer', 'x-cgw-auth-method', 'x-cgw-subject'].includes(forged)) problems.push(`${name} ${s.url}: identity header ${forged} forwarded`);
      }
      // A protected route's credential is the gateway's business (public routes pass it on).
      if (name === 'vault' && h['x-api-key'] !== undefined) problems.push(`${name} ${s.url}: the API key was forwarded`);
    }
  }
  assert.deepEqual(problems.slice(0, 20), [], `seed ${HEX}: ${problems.length} problems`);
});

test(`fuzz seed=${HEX}: afterwards the gateway serves, is healthy, applies Consul changes and counted no internal error`, { timeout: 60_000 }, async (t) => {
  assert.equal(gatewayExited, false, 'the gateway process is alive');
  const ok = await send(gw.url, '/app/after-fuzz');
  assert.equal(ok.status, 200, ok.body.toString());
  assert.equal(ok.headers['x-upstream'], 'app');
  const authed = await send(gw.url, '/secure/after-fuzz', { headers: { 'x-api-key': key } });
  assert.equal(authed.status, 200, authed.body.toString());
  const health = await fetch(`${gw.adminUrl}/-/healthz`, { signal: AbortSignal.timeout(15_000) });
  assert.equal(health.status, 200);
  assert.equal((await fetch(`${gw.adminUrl}/-/readyz`, { signal: AbortSignal.timeout(15_000) })).status, 200);

  // A Consul change still reaches routing: a new tagged instance gets its route.
  assert.equal((await send(gw.url, '/late')).status, 404);
  await consul.register({ id: 'late-1', name: 'late', port: app.port, tags: ['urlprefix-/late'] });
  await waitFor(async () => (await send(gw.url, '/late')).status === 200, { timeoutMs: 20_000, message: 'route /late of a service registered after the fuzz' });

  const after = metricSum(await metricsText(), 'cgw_internal_errors_total');
  assert.equal(after, internalErrorsBefore, `cgw_internal_errors_total moved from ${internalErrorsBefore} to ${after} (seed ${HEX}):\n${gw.logs.filter((l) => /"level":(50|60)/.test(l)).slice(0, 10).join('\n')}`);
  t.diagnostic(`fuzz took ${fuzzMs} ms`);
});

/**
 * A pipelined request whose response is queued behind another when the connection closes gets
 * no 'close' of its own from Node; the gateway ends it with its connection, so nothing stays in
 * flight and SIGTERM has nothing to wait for.
 */

test(`fuzz seed=${HEX}: afterwards SIGTERM finds nothing in flight and exits 0 at once`, { timeout: 60_000 }, async () => {
  assert.equal(gatewayExited, false);
  const started = Date.now();
  const code = await gw.kill('SIGTERM', DRAIN_MS + 10_000);
  const ms = Date.now() - started;
  const draining = gw.logs.find((l) => l.includes('"draining"') || l.includes('requests had to be cut')) ?? '';
  assert.equal(code, 0, `exit code ${code} after ${ms} ms: requests were still in flight ${draining}`);
  assert.ok(ms < DRAIN_MS, `exit took ${ms} ms (drain timeout ${DRAIN_MS} ms)`);
});
