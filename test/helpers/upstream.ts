/**
 * A tiny HTTP upstream for gateway tests: identifies itself and echoes requests. Its behaviour
 * (status, delay, hanging, failing the next N requests) can be changed while it runs, so one
 * registered instance can be made sick and healthy again.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { freePort } from './ports.ts';

export interface UpstreamRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export interface UpstreamBehaviour {
  /** Status of every answer (default 200); the body is the same JSON (or echo) as for 200. */
  status: number;
  /** Wait this long before answering (0: at once). */
  delayMs: number;
  /** Never answer (the connection stays open until the client or close() ends it). */
  hang: boolean;
}

export interface Upstream {
  readonly name: string;
  readonly port: number;
  /** "http://127.0.0.1:PORT" */
  readonly url: string;
  /** Number of requests received so far. */
  readonly hits: number;
  /** Method/url/headers of every request received, in order. */
  readonly requests: UpstreamRequest[];
  /** The behaviour in force now. */
  readonly behaviour: Readonly<UpstreamBehaviour>;
  /** Changes the behaviour for requests arriving from now on. */
  set(change: Partial<UpstreamBehaviour>): void;
  /** The next `n` requests are answered with `status` (default 503), then the behaviour in force resumes. */
  failNext(n: number, status?: number): void;
  /** Stop listening, cancel delayed responses and close every connection (idle ones too). */
  close(): Promise<void>;
}

export interface UpstreamOptions {
  /** Wait this long before answering (models a slow upstream, for drain tests). */
  delayMs?: number;
  /** Listen on this port instead of a fresh free one (e.g. to bring an upstream back). */
  port?: number;
  /** Answer with this status instead of 200. */
  status?: number;
  /** Never answer. */
  hang?: boolean;
}

/**
 * Every request gets JSON `{ upstream, method, url, headers }` with header `x-upstream: name` and
 * status 200 (or the status set); paths starting with `/echo` get the request body streamed back
 * instead.
 */
export async function startUpstream(name: string, opts: UpstreamOptions = {}): Promise<Upstream> {
  const port = opts.port ?? (await freePort());
  const requests: UpstreamRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let hits = 0;
  const behaviour: UpstreamBehaviour = { status: opts.status ?? 200, delayMs: opts.delayMs ?? 0, hang: opts.hang ?? false };
  let failures: { left: number; status: number } | undefined;

  const server = createServer((req, res) => {
    hits++;
    const info: UpstreamRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers };
    requests.push(info);
    // Read at arrival: a change made while this request waits applies to later requests only.
    let status = behaviour.status;
    if (failures && failures.left > 0) {
      failures.left--;
      status = failures.status;
    }
    const { delayMs, hang } = behaviour;
    const later = (fn: () => void): void => {
      if (hang) return;
      if (!delayMs) return fn();
      const t = setTimeout(() => {
        timers.delete(t);
        fn();
      }, delayMs);
      timers.add(t);
    };
    if ((req.url ?? '').startsWith('/echo')) {
      later(() => {
        const headers: Record<string, string> = { 'x-upstream': name };
        const ct = req.headers['content-type'];
        if (ct) headers['content-type'] = ct;
        res.writeHead(status, headers);
        req.pipe(res);
      });
      return;
    }
    req.resume();
    req.once('end', () =>
      later(() => {
        const body = JSON.stringify({ upstream: name, method: info.method, url: info.url, headers: info.headers });
        res.writeHead(status, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'x-upstream': name,
        });
        res.end(body);
      }),
    );
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port }, () => {
      server.off('error', reject);
      resolve();
    });
  });

  let closing: Promise<void> | undefined;
  return {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    get hits() {
      return hits;
    },
    requests,
    get behaviour() {
      return { ...behaviour };
    },
    set(change) {
      Object.assign(behaviour, change);
    },
    failNext(n, status = 503) {
      failures = { left: n, status };
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        timers.clear();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
