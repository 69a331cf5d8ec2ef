/** A tiny HTTP upstream for gateway tests: identifies itself and echoes requests. */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { freePort } from './ports.ts';

export interface UpstreamRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
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
  /** Stop listening, cancel delayed responses and close every connection (idle ones too). */
  close(): Promise<void>;
}

export interface UpstreamOptions {
  /** Wait this long before answering (models a slow upstream, for drain tests). */
  delayMs?: number;
  /** Listen on this port instead of a fresh free one (e.g. to bring an upstream back). */
  port?: number;
}

/**
 * Every request gets 200 JSON `{ upstream, method, url, headers }` with header `x-upstream: name`;
 * paths starting with `/echo` get the request body streamed back instead.
 */
export async function startUpstream(name: string, opts: UpstreamOptions = {}): Promise<Upstream> {
  const port = opts.port ?? (await freePort());
  const requests: UpstreamRequest[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let hits = 0;

  const server = createServer((req, res) => {
    hits++;
    const info: UpstreamRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers };
    requests.push(info);
    const later = (fn: () => void): void => {
      if (!opts.delayMs) return fn();
      const t = setTimeout(() => {
        timers.delete(t);
        fn();
      }, opts.delayMs);
      timers.add(t);
    };
    if ((req.url ?? '').startsWith('/echo')) {
      later(() => {
        const headers: Record<string, string> = { 'x-upstream': name };
        const ct = req.headers['content-type'];
        if (ct) headers['content-type'] = ct;
        res.writeHead(200, headers);
        req.pipe(res);
      });
      return;
    }
    req.resume();
    req.once('end', () =>
      later(() => {
        const body = JSON.stringify({ upstream: name, method: info.method, url: info.url, headers: info.headers });
        res.writeHead(200, {
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
