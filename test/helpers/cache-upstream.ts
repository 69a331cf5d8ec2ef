/**
 * An upstream for response cache tests whose answer is steered by the query string: `cc`
 * (Cache-Control), `vary`, `etag` (a matching If-None-Match gets a 304), `lm` (Last-Modified), `cookie` (a Set-Cookie), `size` (body
 * bytes), `delay` (ms), `status`. The body names the request number per path and query and the
 * credentials it saw, so a test can tell whose response a client got and whether it was stored.
 */
import { createServer, type IncomingMessage } from 'node:http';
import { freePort } from './ports.ts';

export interface CacheUpstream {
  readonly port: number;
  /** Requests received for a path and query (as the gateway sent them). */
  hits(pathAndQuery: string): number;
  readonly total: number;
  close(): Promise<void>;
}

export interface CacheReply {
  n: number;
  path: string;
  auth: string | null;
  apiKey: string | null;
  lang: string | null;
}

export async function startCacheUpstream(): Promise<CacheUpstream> {
  const port = await freePort();
  const counts = new Map<string, number>();
  let total = 0;
  const server = createServer((req: IncomingMessage, res) => {
    const url = new URL(req.url ?? '/', 'http://upstream');
    const key = url.pathname + url.search;
    const n = (counts.get(key) ?? 0) + 1;
    counts.set(key, n);
    total += 1;
    const q = url.searchParams;
    const answer = (): void => {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (q.has('cc')) headers['cache-control'] = q.get('cc') as string;
      if (q.has('vary')) headers.vary = q.get('vary') as string;
      if (q.has('etag')) headers.etag = q.get('etag') as string;
      if (q.has('lm')) headers['last-modified'] = q.get('lm') as string;
      if (q.has('etag') && req.headers['if-none-match'] === q.get('etag')) {
        // A revalidation: the stored body is still good (RFC 9110 §15.4.5).
        res.writeHead(304, headers);
        res.end();
        return;
      }
      if (q.has('cookie')) headers['set-cookie'] = `session=${q.get('cookie')}-${n}; Path=/`;
      const reply: CacheReply = { n, path: key, auth: req.headers.authorization ?? null, apiKey: (req.headers['x-api-key'] as string | undefined) ?? null, lang: (req.headers['accept-language'] as string | undefined) ?? null };
      let body = Buffer.from(JSON.stringify(reply));
      const size = Number(q.get('size') ?? 0);
      if (size > body.length) body = Buffer.concat([body, Buffer.alloc(size - body.length, 0x20)]);
      res.writeHead(Number(q.get('status') ?? 200), headers);
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const delay = Number(q.get('delay') ?? 0);
    if (delay > 0) setTimeout(answer, delay);
    else answer();
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    port,
    hits: (k) => counts.get(k) ?? 0,
    get total() {
      return total;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
