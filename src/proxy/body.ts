import type { IncomingMessage } from 'node:http';
import { Transform, type Readable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import type { CompiledRoute } from '../runtime/runtime.ts';

/** RFC 9110 §9.2.2: repeating these has the same effect as sending them once. */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

export function isRetryableMethod(method: string, nonIdempotentAllowed: boolean): boolean {
  return nonIdempotentAllowed || IDEMPOTENT.has(method);
}

export interface PreparedBody {
  /** null: no body; a Buffer can be sent again, a stream only once. */
  readonly body: Buffer | Readable | null;
  readonly replayable: boolean;
  /** Set when a chunked body grew past the route's limit while streaming. */
  readonly tooLarge: { hit: boolean };
}

/**
 * A body can be sent again only if we kept it: small bodies (Content-Length up to the retry
 * policy's `maxBodyBytes`) of requests that may be retried are read into memory, within the
 * request deadline. Others stream through, counted against `limits.maxBodyBytes` when chunked.
 */
export async function prepareBody(
  req: IncomingMessage,
  route: CompiledRoute,
  hasBody: boolean,
  declaredLength: number | undefined,
  deadlineAt: number | null,
): Promise<PreparedBody | 'gone' | 'timeout'> {
  const tooLarge = { hit: false };
  if (!hasBody) return { body: null, replayable: true, tooLarge };
  const { retry } = route;
  if (retry.attempts > 0 && isRetryableMethod(req.method ?? 'GET', retry.nonIdempotent) && declaredLength !== undefined && declaredLength <= retry.maxBodyBytes) {
    const buffered = await readBody(req, declaredLength, deadlineAt);
    return typeof buffered === 'string' ? buffered : { body: buffered, replayable: true, tooLarge };
  }
  const body = route.maxBodyBytes !== null && declaredLength === undefined ? limitBody(req, route.maxBodyBytes, tooLarge) : req;
  return { body, replayable: false, tooLarge };
}

function readBody(req: IncomingMessage, length: number, deadlineAt: number | null): Promise<Buffer | 'gone' | 'timeout'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const timer = deadlineAt === null ? undefined : setTimeout(() => finish('timeout'), Math.max(0, deadlineAt - performance.now()));
    function finish(result: Buffer | 'gone' | 'timeout'): void {
      clearTimeout(timer);
      req.off('data', onData);
      resolve(result);
    }
    const onData = (c: Buffer): void => {
      chunks.push(c);
    };
    req.on('data', onData);
    req.once('end', () => finish(Buffer.concat(chunks, length)));
    req.once('error', () => finish('gone'));
    req.once('close', () => {
      if (!req.complete) finish('gone');
    });
  });
}

/** A chunked body is counted as it streams; past the limit the upload is cut and the client gets 413. */
function limitBody(req: IncomingMessage, limit: number, flag: { hit: boolean }): Readable {
  let seen = 0;
  const counted = new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen > limit) {
        flag.hit = true;
        done(new Error('request body too large'));
        return;
      }
      done(null, chunk);
    },
  });
  req.on('error', (err) => counted.destroy(err));
  return req.pipe(counted);
}
