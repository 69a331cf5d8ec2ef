/**
 * Raw HTTP/1.1 over a socket, for requests no client library will send (broken framing, bare LF,
 * NUL bytes, pipelines) and a strict reading of what comes back: every byte must belong to a
 * well-formed response, or the connection must close.
 */
import { connect } from 'node:net';

export interface RawResponse {
  readonly status: number;
  readonly reason: string;
  /** Lower-case names; every value of a repeated field, in order. */
  readonly headers: Record<string, string[]>;
  readonly body: Buffer;
  /** The head as received, for failure messages. */
  readonly head: string;
}

export interface Parsed {
  /** Complete responses, 1xx included, in order. */
  readonly responses: RawResponse[];
  /** Bytes after the last complete response. */
  readonly rest: Buffer;
  /** The bytes cannot be the start of a well-formed response. */
  readonly error?: string;
  /** The last response is delimited by the end of the connection (no length, not chunked). */
  readonly untilClose?: boolean;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const STATUS_LINE = /^HTTP\/1\.[01] (\d{3}) ([\t\x20-\x7e\x80-\xff]*)$/;

/**
 * Splits `buf` into responses. `methods[i]` is the method of the i-th request sent (a HEAD answer
 * has no body); interim (1xx) answers do not count as answers to a request. With `closed`, a
 * response without length ends with the bytes.
 */
export function parseResponses(buf: Buffer, methods: readonly string[] = [], closed = false): Parsed {
  const responses: RawResponse[] = [];
  let at = 0;
  let finals = 0;
  for (;;) {
    if (at >= buf.length) return { responses, rest: Buffer.alloc(0) };
    const end = buf.indexOf('\r\n\r\n', at, 'latin1');
    if (end === -1) {
      const partial = buf.subarray(at).toString('latin1');
      if (!'HTTP/1.'.startsWith(partial.slice(0, 7))) return { responses, rest: buf.subarray(at), error: `not a status line: ${JSON.stringify(partial.slice(0, 80))}` };
      return { responses, rest: buf.subarray(at) };
    }
    const head = buf.subarray(at, end).toString('latin1');
    const lines = head.split('\r\n');
    const m = STATUS_LINE.exec(lines[0] ?? '');
    if (!m) return { responses, rest: buf.subarray(at), error: `malformed status line: ${JSON.stringify((lines[0] ?? '').slice(0, 120))}` };
    const status = Number(m[1]);
    const headers: Record<string, string[]> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      const name = colon > 0 ? line.slice(0, colon) : '';
      if (!TOKEN.test(name) || /[\r\n\0]/.test(line)) return { responses, rest: buf.subarray(at), error: `malformed header line: ${JSON.stringify(line.slice(0, 120))}` };
      (headers[name.toLowerCase()] ??= []).push(line.slice(colon + 1).trim());
    }
    let pos = end + 4;
    const interim = status >= 100 && status < 200;
    const method = interim ? undefined : methods[finals];
    const lengths = headers['content-length'];
    const chunked = headers['transfer-encoding']?.join(',').toLowerCase().split(',').map((t) => t.trim()).includes('chunked') ?? false;
    if (lengths && headers['transfer-encoding']) return { responses, rest: buf.subarray(at), error: 'response with both Content-Length and Transfer-Encoding' };
    if (lengths && (new Set(lengths).size !== 1 || !/^\d+$/.test(lengths[0] ?? ''))) return { responses, rest: buf.subarray(at), error: `bad response Content-Length ${JSON.stringify(lengths)}` };
    let body: Buffer;
    const lastBeforeClose = headers.connection?.some((v) => /(^|,)\s*close\s*(,|$)/i.test(v)) === true;
    if (method === 'HEAD' && lengths && lastBeforeClose && buf.length - pos === Number(lengths[0])) {
      // A refusal written before the request was parsed cannot know it was a HEAD: it carries
      // its body, then closes. Nothing can follow it, so the bytes are read as its body.
      body = buf.subarray(pos);
      pos = buf.length;
    } else if (interim || status === 204 || status === 304 || method === 'HEAD') {
      body = Buffer.alloc(0);
    } else if (chunked) {
      const chunks: Buffer[] = [];
      for (;;) {
        const eol = buf.indexOf('\r\n', pos, 'latin1');
        if (eol === -1) return { responses, rest: buf.subarray(at) };
        const sizeText = buf.subarray(pos, eol).toString('latin1').split(';')[0]?.trim() ?? '';
        if (!/^[0-9a-fA-F]{1,15}$/.test(sizeText)) return { responses, rest: buf.subarray(at), error: `bad chunk size ${JSON.stringify(sizeText.slice(0, 40))}` };
        const size = parseInt(sizeText, 16);
        pos = eol + 2;
        if (size === 0) {
          // Trailers, then an empty line.
          const trailerEnd = buf.indexOf('\r\n', pos, 'latin1');
          if (trailerEnd === -1) return { responses, rest: buf.subarray(at) };
          if (trailerEnd !== pos) {
            const all = buf.indexOf('\r\n\r\n', pos, 'latin1');
            if (all === -1) return { responses, rest: buf.subarray(at) };
            pos = all + 4;
          } else pos += 2;
          break;
        }
        if (buf.length < pos + size + 2) return { responses, rest: buf.subarray(at) };
        if (buf.toString('latin1', pos + size, pos + size + 2) !== '\r\n') return { responses, rest: buf.subarray(at), error: 'chunk not followed by CRLF' };
        chunks.push(buf.subarray(pos, pos + size));
        pos += size + 2;
      }
      body = Buffer.concat(chunks);
    } else if (lengths) {
      const n = Number(lengths[0]);
      if (buf.length < pos + n) return { responses, rest: buf.subarray(at) };
      body = buf.subarray(pos, pos + n);
      pos += n;
    } else {
      // Delimited by the end of the connection.
      if (!closed) return { responses, rest: buf.subarray(at), untilClose: true };
      body = buf.subarray(pos);
      pos = buf.length;
    }
    responses.push({ status, reason: m[2] ?? '', headers, body, head });
    if (!interim) finals++;
    at = pos;
  }
}

export interface ExchangeOptions {
  /** Methods of the requests sent, in order (HEAD answers have no body). */
  readonly methods?: readonly string[];
  /** Stop as soon as this many final answers arrived (default: wait for the close). */
  readonly answers?: number;
  /** Fail (timedOut) when neither enough answers nor the close came within this (default 10 s). */
  readonly deadlineMs?: number;
  /** Destroy our socket right after writing (a client that leaves mid-request). */
  readonly leave?: boolean;
  /** Wait this long between pieces (default: one event-loop turn). */
  readonly gapMs?: number;
  /** Written once a `100 Continue` arrives (the body of a request sent with `Expect: 100-continue`). */
  readonly onContinue?: Buffer | string;
}

export interface Exchange {
  readonly responses: RawResponse[];
  /** Final (non-1xx) answers. */
  readonly finals: RawResponse[];
  /** Every byte received. */
  readonly raw: Buffer;
  /** The server closed (or reset) the connection. */
  readonly closed: boolean;
  readonly timedOut: boolean;
  /** Bytes that are not (yet) a complete response. */
  readonly rest: Buffer;
  /** Why the bytes received are not well-formed responses, if they are not. */
  readonly malformed?: string;
  readonly elapsedMs: number;
}

/**
 * Writes `pieces` on a fresh loopback connection and reads until the server closes, `answers`
 * final responses arrived, or the deadline passed. Never half-closes: Node drops a response
 * still on its way to a half-closed client.
 */
export function exchange(port: number, pieces: readonly (Buffer | string)[], opts: ExchangeOptions = {}): Promise<Exchange> {
  const deadlineMs = opts.deadlineMs ?? 10_000;
  const methods = opts.methods ?? [];
  const started = Date.now();
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1', noDelay: true });
    const received: Buffer[] = [];
    let settled = false;
    const finish = (closed: boolean, timedOut: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      const raw = Buffer.concat(received);
      const parsed = parseResponses(raw, methods, closed);
      const responses = parsed.responses;
      resolve({
        responses,
        finals: responses.filter((r) => r.status >= 200),
        raw,
        closed,
        timedOut,
        rest: parsed.rest,
        ...(parsed.error !== undefined ? { malformed: parsed.error } : {}),
        elapsedMs: Date.now() - started,
      });
    };
    const timer = setTimeout(() => finish(false, true), deadlineMs);
    let continued = false;
    socket.on('data', (d: Buffer) => {
      received.push(d);
      if (opts.answers === undefined && opts.onContinue === undefined) return;
      const parsed = parseResponses(Buffer.concat(received), methods, false);
      if (opts.onContinue !== undefined && !continued && parsed.responses.some((r) => r.status === 100)) {
        continued = true;
        socket.write(opts.onContinue);
      }
      if (opts.answers === undefined) return;
      if (parsed.error !== undefined) return finish(false, false);
      const finals = parsed.responses.filter((r) => r.status >= 200).length;
      if (finals >= opts.answers && parsed.rest.length === 0) finish(false, false);
    });
    // A reset after (or instead of) an answer is a close as far as the client can tell.
    socket.on('error', () => finish(true, false));
    socket.on('close', () => finish(true, false));
    socket.once('connect', () => {
      void (async () => {
        for (const piece of pieces) {
          if (settled || socket.destroyed) return;
          socket.write(piece);
          await new Promise((r) => (opts.gapMs ? setTimeout(r, opts.gapMs) : setImmediate(r)));
        }
        if (opts.leave) finish(true, false);
      })();
    });
  });
}

/** A header's only value (undefined when absent, the values joined when repeated). */
export function header(r: RawResponse, name: string): string | undefined {
  return r.headers[name.toLowerCase()]?.join(', ');
}
