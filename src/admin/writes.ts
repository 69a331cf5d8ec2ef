import type { IncomingMessage, ServerResponse } from 'node:http';
import { ROLLOUT_ACTIONS, type AdminControls, type RolloutActionName } from './controls.ts';
import { decodePathSegment } from './path-segment.ts';

/**
 * The admin API's write routes (`PUT|DELETE /v1/canary/<service>`, `POST /v1/rollouts/<service>/
 * <action>`), reached only with the admin token: the body read within bounds, a cap on writes
 * waiting on Consul, and a record of every write (who: the client's address; what; how it ended)
 * for the log and `cgw_admin_writes_total`. What a body means and what is written is the
 * controls' business (`AdminControls`).
 */

/** Control bodies are a few tags and an index; anything larger is refused unread (413). */
export const MAX_ADMIN_BODY_BYTES = 16 * 1024;
/** Writes waiting on Consul at once; more answer 429 rather than queue behind them. */
const MAX_WRITES_IN_FLIGHT = 8;

export interface AdminWriteRecord {
  /** canary_set, canary_clear, rollout_pause, rollout_resume, rollout_abort, rollout_promote. */
  readonly action: string;
  readonly service: string;
  readonly outcome: 'ok' | 'refused' | 'unauthorized' | 'conflict' | 'busy' | 'failed';
  readonly status: number;
  /** The client's address: who asked. */
  readonly remote: string;
  readonly message?: string;
}

export interface WriteRoute {
  readonly action: string;
  /** undefined: the path segment is not valid percent-encoding. */
  readonly service: string | undefined;
  readonly rolloutAction?: RolloutActionName;
}

/** The write a method and path name; undefined for anything else (which stays 405). */
export function writeRoute(method: string, path: string): WriteRoute | undefined {
  const canary = /^\/v1\/canary\/([^/]+)$/.exec(path);
  if (canary && (method === 'PUT' || method === 'DELETE')) return { action: method === 'PUT' ? 'canary_set' : 'canary_clear', service: decodePathSegment(canary[1] ?? '') };
  const rollout = /^\/v1\/rollouts\/([^/]+)\/([a-z]+)$/.exec(path);
  const action = ROLLOUT_ACTIONS.find((a) => a === rollout?.[2]);
  if (rollout && method === 'POST' && action) return { action: `rollout_${action}`, service: decodePathSegment(rollout[1] ?? ''), rolloutAction: action };
  return undefined;
}

export class AdminWrites {
  private inFlight = 0;

  constructor(private readonly onWrite: ((write: AdminWriteRecord) => void) | undefined) {}

  unauthorized(req: IncomingMessage, route: WriteRoute): void {
    this.onWrite?.({ action: route.action, service: route.service ?? '', outcome: 'unauthorized', status: 401, remote: remoteOf(req) });
  }

  run(req: IncomingMessage, res: ServerResponse, controls: AdminControls, route: WriteRoute, send: (status: number, body: unknown) => void, fail: (err: unknown) => void): void {
    const remote = remoteOf(req);
    const record = (status: number, body: unknown): void => {
      const outcome = status === 200 ? 'ok' : status === 409 ? 'conflict' : status === 429 ? 'busy' : status >= 500 ? 'failed' : 'refused';
      const message = (body as { error?: { message?: string } } | null)?.error?.message;
      this.onWrite?.({ action: route.action, service: route.service ?? '', outcome, status, remote, ...(message ? { message } : {}) });
    };
    const answer = (status: number, body: unknown): void => {
      record(status, body);
      send(status, body);
    };
    const refuse = (status: number, code: string, message: string): void => answer(status, { error: { code, message } });
    if (route.service === undefined) return refuse(400, 'bad_request', 'the service name in the path is not valid percent-encoded UTF-8');
    const service = route.service;
    if (this.inFlight >= MAX_WRITES_IN_FLIGHT) {
      res.setHeader('retry-after', '1');
      return refuse(429, 'busy', `${MAX_WRITES_IN_FLIGHT} admin writes are in flight; try again in a moment`);
    }
    this.inFlight++;
    let released = false;
    const release = (): void => {
      if (!released) this.inFlight--;
      released = true;
    };
    res.on('close', release);
    readBody(req, MAX_ADMIN_BODY_BYTES).then((body) => {
      if (body === 'too-large') {
        release();
        res.setHeader('connection', 'close');
        return refuse(413, 'payload_too_large', `the body is larger than ${MAX_ADMIN_BODY_BYTES} bytes`);
      }
      if (body === 'aborted') return release();
      const ifMatch = typeof req.headers['if-match'] === 'string' ? req.headers['if-match'] : undefined;
      const by = `admin API from ${remote}`;
      const pending =
        route.action === 'canary_set'
          ? controls.putCanary(service, body, ifMatch, by)
          : route.action === 'canary_clear'
            ? controls.deleteCanary(service, body, ifMatch, by)
            : controls.rolloutAction(service, route.rolloutAction as RolloutActionName, by);
      pending.finally(release).then((a) => answer(a.status, a.body), fail);
    }, fail);
  }
}

function remoteOf(req: IncomingMessage): string {
  return req.socket.remoteAddress ?? 'unknown';
}

/** The body as text, at most `limit` bytes (a longer one is not read further). */
function readBody(req: IncomingMessage, limit: number): Promise<string | 'too-large' | 'aborted'> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (Number.isFinite(declared) && declared > limit) return Promise.resolve('too-large');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (value: string | 'too-large' | 'aborted'): void => {
      if (done) return;
      done = true;
      resolve(value);
    };
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // Nothing more is read: the answer says 413 and the connection closes after it.
        req.pause();
        finish('too-large');
        return;
      }
      if (!done) chunks.push(chunk);
    });
    req.on('end', () => finish(Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => finish('aborted'));
    req.on('close', () => finish(size > limit ? 'too-large' : 'aborted'));
  });
}
