import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { checkHead, contentLength, refusalOfParserError, writeRawRefusal, type HeadLimits } from '../../src/proxy/client-errors.ts';

const LIMITS: HeadLimits = { maxHeaderCount: 10, maxHeaderSize: 4096, headerTimeoutMs: 1000 };

/** The parts of a parsed request checkHead reads, built from raw header lines as Node would. */
function head(lines: [string, string][], version: '1.0' | '1.1' | '2.0' | '0.9' = '1.1'): IncomingMessage {
  const headers: Record<string, string> = {};
  for (const [name, value] of lines) {
    const key = name.toLowerCase();
    // Node keeps the first Host and Content-Length and joins the rest; enough for these cases.
    if (key in headers) {
      if (key !== 'host' && key !== 'content-length') headers[key] = `${headers[key]}, ${value}`;
    } else headers[key] = value;
  }
  const [major, minor] = version.split('.').map(Number) as [number, number];
  return { rawHeaders: lines.flat(), headers, httpVersionMajor: major, httpVersionMinor: minor } as unknown as IncomingMessage;
}

describe('checkHead: heads Node parses but a proxy must not pass on', () => {
  const refused: { name: string; lines: [string, string][]; version?: '1.0' | '1.1' | '2.0' | '0.9'; code: string; message: RegExp }[] = [
    // Node's HTTP/1 parser takes these request lines; the fuzz test sent `PUT / HTTP/2.0` and found them.
    { name: 'HTTP/2.0 in an HTTP/1 request line', lines: [['Host', 'a']], version: '2.0', code: 'bad_request', message: /HTTP\/2\.0 in an HTTP\/1 request line/ },
    { name: 'HTTP/0.9 in a request line', lines: [['Host', 'a']], version: '0.9', code: 'bad_request', message: /HTTP\/0\.9 in an HTTP\/1 request line/ },
    { name: 'two Host headers', lines: [['Host', 'a'], ['Host', 'b']], code: 'bad_request', message: /more than one Host/ },
    { name: 'two Host headers with the same value, different case', lines: [['host', 'a'], ['HOST', 'a']], code: 'bad_request', message: /more than one Host/ },
    { name: 'no Host in HTTP/1.1', lines: [['Accept', '*/*']], code: 'bad_request', message: /must have a Host/ },
    { name: 'a Host with a space', lines: [['Host', 'a b']], code: 'bad_request', message: /not a valid host/ },
    { name: 'a Host list', lines: [['Host', 'a.example, b.example']], code: 'bad_request', message: /not a valid host/ },
    { name: 'a Host with userinfo', lines: [['Host', 'user@a.example']], code: 'bad_request', message: /not a valid host/ },
    { name: 'a Host with a path', lines: [['Host', 'a.example/x']], code: 'bad_request', message: /not a valid host/ },
    { name: 'a Host with a quote', lines: [['Host', 'a"b']], code: 'bad_request', message: /not a valid host/ },
    { name: 'a Host with a broken escape', lines: [['Host', 'a%zz']], code: 'bad_request', message: /not a valid host/ },
    { name: 'a Host with a non-numeric port', lines: [['Host', 'a.example:http']], code: 'bad_request', message: /not a valid host/ },
    { name: 'Transfer-Encoding in HTTP/1.0', lines: [['Host', 'a'], ['Transfer-Encoding', 'chunked']], version: '1.0', code: 'bad_request', message: /HTTP\/1\.0/ },
    { name: 'Content-Length of 2^53', lines: [['Host', 'a'], ['Content-Length', '9007199254740992']], code: 'bad_request', message: /2\^53/ },
    { name: 'Content-Length beyond 2^53', lines: [['Host', 'a'], ['Content-Length', '9007199254740993']], code: 'bad_request', message: /2\^53/ },
    { name: 'Content-Length with a sign', lines: [['Host', 'a'], ['Content-Length', '-1']], code: 'bad_request', message: /2\^53/ },
    { name: 'more fields than the limit', lines: [['Host', 'a'], ...Array.from({ length: 10 }, (_, i): [string, string] => [`x-${i}`, 'v'])], code: 'headers_too_large', message: /more than 10 header fields/ },
  ];
  for (const c of refused) {
    test(`${c.name} → ${c.code}`, () => {
      const r = checkHead(head(c.lines, c.version), LIMITS);
      assert.equal(r?.code, c.code);
      assert.match(r?.message ?? '', c.message);
    });
  }

  const accepted: { name: string; lines: [string, string][]; version?: '1.0' | '1.1' }[] = [
    { name: 'a plain Host', lines: [['Host', 'shop.example.com']] },
    { name: 'a Host with a port', lines: [['Host', 'shop.example.com:8080']] },
    { name: 'an IPv4 Host', lines: [['Host', '127.0.0.1:9000']] },
    { name: 'an IPv6 Host', lines: [['Host', '[::1]:9000']] },
    { name: 'an empty Host (a target without authority)', lines: [['Host', '']] },
    { name: 'a Host with escapes, underscores and sub-delims', lines: [['Host', 'my_host%41.example!$&']] },
    { name: 'HTTP/1.0 without Host', lines: [['Accept', '*/*']], version: '1.0' },
    { name: 'exactly the limit of fields', lines: [['Host', 'a'], ...Array.from({ length: 9 }, (_, i): [string, string] => [`x-${i}`, 'v'])] },
    { name: 'a Content-Length just below 2^53', lines: [['Host', 'a'], ['Content-Length', '9007199254740991']] },
    { name: 'chunked in HTTP/1.1', lines: [['Host', 'a'], ['Transfer-Encoding', 'chunked']] },
  ];
  for (const c of accepted) {
    test(`${c.name} is accepted`, () => assert.equal(checkHead(head(c.lines, c.version), LIMITS), undefined));
  }

  test('contentLength reads the checked value', () => {
    assert.equal(contentLength(head([['Host', 'a'], ['Content-Length', '0042']])), 42);
    assert.equal(contentLength(head([['Host', 'a']])), undefined);
  });
});

describe('refusalOfParserError: what Node refuses, answered as our JSON errors', () => {
  const err = (code: string): NodeJS.ErrnoException => Object.assign(new Error(code), { code });
  for (const code of ['ECONNRESET', 'EPIPE', 'ETIMEDOUT']) {
    test(`${code}: the client is gone, nothing to answer`, () => assert.equal(refusalOfParserError(err(code), LIMITS), undefined));
  }
  test('header overflow → 431 headers_too_large naming the limit', () => {
    const r = refusalOfParserError(err('HPE_HEADER_OVERFLOW'), LIMITS);
    assert.equal(r?.code, 'headers_too_large');
    assert.match(r?.message ?? '', /4096 bytes/);
  });
  test('a slow head → 408 request_timeout naming the timeout', () => {
    const r = refusalOfParserError(err('ERR_HTTP_REQUEST_TIMEOUT'), LIMITS);
    assert.equal(r?.code, 'request_timeout');
    assert.match(r?.message ?? '', /1000 ms/);
  });
  for (const code of ['HPE_INVALID_METHOD', 'HPE_INVALID_CHUNK_SIZE', 'HPE_UNEXPECTED_CONTENT_LENGTH', 'HPE_INVALID_TRANSFER_ENCODING', 'HPE_INVALID_HEADER_TOKEN', 'HPE_STRICT']) {
    test(`${code} → 400 bad_request`, () => assert.equal(refusalOfParserError(err(code), LIMITS)?.code, 'bad_request'));
  }
});

describe('writeRawRefusal', () => {
  test('writes one complete JSON response with a request id, and closes', () => {
    let written = '';
    const socket = { end: (text: string) => (written = text) } as unknown as Socket;
    assert.equal(writeRawRefusal(socket, { code: 'bad_request', message: 'malformed' }), 400);
    const [headText = '', body = ''] = written.split('\r\n\r\n');
    const lines = headText.split('\r\n');
    assert.equal(lines[0], 'HTTP/1.1 400 Bad Request');
    const headers = Object.fromEntries(lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    assert.equal(headers.connection, 'close');
    assert.equal(Number(headers['content-length']), Buffer.byteLength(body));
    const parsed = JSON.parse(body) as { error: { code: string; message: string; requestId: string } };
    assert.deepEqual(parsed.error, { code: 'bad_request', message: 'malformed', requestId: headers['x-request-id'] });
  });
});
