import type { IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import type { CompiledRoute } from '../runtime/runtime.ts';

/** RFC 9110 §9.2.2: repeating these has the same effect as sending them once. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

export function isRetryableMethod(method: string, nonIdempotentAllowed: boolean): boolean {
  return nonIdempotentAllowed || IDEMPOTENT.has(method);
}

/** How a streamed body ended badly; read by the forward step to answer 413, 408 or 499. */
export interface BodyState {
  /** The body grew past the route's `limits.maxBodyBytes` while streaming. */
  tooLarge: boolean;
  /** No body bytes for `--client-body-timeout`. */
  idle: boolean;
  /** The client connection failed while its body was read. */
  broken: boolean;
}

export interface PreparedBody {
  /** null: no body; a Buffer can be sent again, a stream only once. */
  readonly body: Buffer | Readable | null;
  readonly replayable: boolean;
  readonly state: BodyState;
}

export type BodyRefusal = 'gone' | 'timeout' | 'idle' | 'too_large';

export interface BodyLimits {
  /** Bodies up to this many bytes are read completely before an upstream is picked. */
  readonly bufferBytes: number;
  /** `limits.maxBodyBytes` of the route, or null. */
  readonly maxBodyBytes: number | null;
  /** `--client-body-timeout`: the longest pause between two pieces of the body. */
  readonly idleMs: number;
}

/**
 * Request bodies are buffered like nginx's `proxy_request_buffering`: a body up to the buffer size
 * (the larger of `--request-buffer-size` and, for a retryable request, `retries.maxBodyBytes`) is
 * read completely before any upstream is picked, so a client that trickles its body holds a
 * gateway socket and a little memory, never an upstream connection or a breaker probe. A larger
 * body streams through after its first buffer-full has arrived, counted against
 * `limits.maxBodyBytes` and watched for idleness; the per-endpoint request cap bounds what such
 * uploads can hold upstream.
 */
export async function prepareBody(
  req: IncomingMessage,
  route: CompiledRoute,
  limits: BodyLimits,
  hasBody: boolean,
  declaredLength: number | undefined,
  deadlineAt: number | null,
): Promise<PreparedBody | BodyRefusal> {
  const state: BodyState = { tooLarge: false, idle: false, broken: false };
  if (!hasBody) return { body: null, replayable: true, state };
  if (route.grpc) {
    // A gRPC call streams: a bidirectional client may send one message and wait for the answer
    // before the next, so waiting for a buffer-full (or the end) would stall it. Never replayable,
    // so never retried, and not watched for idleness (a stream may rightly pause; its deadline,
    // grpc-timeout, bounds it).
    const stream = streamRest(req, [], 0, { ...limits, idleMs: 0 }, state);
    stream.on('error', ignore);
    return { body: stream, replayable: false, state };
  }
  const retryable = route.retry.attempts > 0 && isRetryableMethod(req.method ?? 'GET', route.retry.nonIdempotent);
  const bufferBytes = retryable ? Math.max(limits.bufferBytes, route.retry.maxBodyBytes) : limits.bufferBytes;
  // A declared length above the route's limit was refused before; one within the buffer is read whole.
  const wanted = declaredLength !== undefined && declaredLength <= bufferBytes ? declaredLength : bufferBytes;
  const read = await readUpTo(req, wanted, limits, deadlineAt);
  if (typeof read === 'string') return read;
  if (read.complete) return { body: read.body, replayable: true, state };
  // More than a buffer-full is coming: stream it, the part read so far first.
  const stream = streamRest(req, read.chunks, read.bytes, limits, state);
  // undici listens while it sends; after it is done (an early answer, a retry) an error of this
  // stream must still have a listener, or it would end the process. `state` carries the reason.
  stream.on('error', ignore);
  return { body: stream, replayable: false, state };
}

interface PartialRead {
  readonly complete: boolean;
  readonly body: Buffer;
  readonly chunks: Buffer[];
  readonly bytes: number;
}

/**
 * Reads until the body ends or more than `wanted` bytes arrived. Past `maxBodyBytes` it stops with
 * 'too_large' (the rest is never read; the caller closes the connection after its 413).
 */
function readUpTo(req: IncomingMessage, wanted: number, limits: BodyLimits, deadlineAt: number | null): Promise<{ complete: boolean; body: Buffer; chunks: Buffer[]; bytes: number } | BodyRefusal> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    let settled = false;
    let lastDataAt = performance.now();
    const deadline = deadlineAt === null ? undefined : setTimeout(() => finish('timeout'), Math.max(0, deadlineAt - performance.now()));
    let idleTimer = setTimeout(onIdleTimer, limits.idleMs);
    function onIdleTimer(): void {
      const quiet = performance.now() - lastDataAt;
      if (quiet >= limits.idleMs) finish('idle');
      else idleTimer = setTimeout(onIdleTimer, limits.idleMs - quiet);
    }
    function finish(result: PartialRead | BodyRefusal): void {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      clearTimeout(idleTimer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
      if (typeof result !== 'string' && !result.complete) req.pause();
      resolve(result);
    }
    const onData = (chunk: Buffer): void => {
      lastDataAt = performance.now();
      chunks.push(chunk);
      bytes += chunk.length;
      if (limits.maxBodyBytes !== null && bytes > limits.maxBodyBytes) finish('too_large');
      else if (bytes > wanted) finish({ complete: false, body: EMPTY, chunks, bytes });
    };
    const onEnd = (): void => finish({ complete: true, body: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, bytes), chunks, bytes });
    const onError = (): void => finish('gone');
    const onClose = (): void => {
      if (!req.complete) finish('gone');
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

const EMPTY = Buffer.alloc(0);

function ignore(): void {}

class BodyStreamError extends Error {}

/**
 * The rest of a large body as a stream for undici: what was read already, then the socket's data
 * with backpressure, counted and watched for idleness. Failing here (too large, idle, client
 * gone) destroys only this stream, so undici aborts the upstream request while the client
 * connection stays usable for the 413/408 answer; `state` tells the forward step why.
 */
function streamRest(req: IncomingMessage, first: readonly Buffer[], firstBytes: number, limits: BodyLimits, state: BodyState): Readable {
  let seen = firstBytes;
  let lastDataAt = performance.now();
  let idleTimer: NodeJS.Timeout | undefined;
  const body = new Readable({
    read() {
      req.resume();
    },
    destroy(err, done) {
      clearTimeout(idleTimer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onBroken);
      req.off('close', onClose);
      req.pause();
      done(err);
    },
  });
  const fail = (why: 'tooLarge' | 'idle' | 'broken', message: string): void => {
    state[why] = true;
    body.destroy(new BodyStreamError(message));
  };
  const onIdleTimer = (): void => {
    if (limits.idleMs === 0) return;
    const quiet = performance.now() - lastDataAt;
    if (quiet < limits.idleMs) idleTimer = setTimeout(onIdleTimer, limits.idleMs - quiet);
    else fail('idle', 'request body idle');
  };
  const onData = (chunk: Buffer): void => {
    lastDataAt = performance.now();
    seen += chunk.length;
    if (limits.maxBodyBytes !== null && seen > limits.maxBodyBytes) fail('tooLarge', 'request body too large');
    else if (!body.push(chunk)) req.pause();
  };
  const onEnd = (): void => {
    clearTimeout(idleTimer);
    body.push(null);
  };
  const onBroken = (): void => fail('broken', 'client connection failed while sending its body');
  const onClose = (): void => {
    if (!req.complete) onBroken();
  };
  for (const chunk of first) body.push(chunk);
  req.on('data', onData);
  req.once('end', onEnd);
  req.once('error', onBroken);
  req.once('close', onClose);
  if (limits.idleMs > 0) idleTimer = setTimeout(onIdleTimer, limits.idleMs);
  return body;
}
