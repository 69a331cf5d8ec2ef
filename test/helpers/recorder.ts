/**
 * An upstream that records every request it gets (head, body size, whether the body ended) and
 * answers 200 with JSON `{ upstream, method, url, headers, bytes }` once the body has ended: what
 * the gateway forwarded, including a body cut short, is visible to the test.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { freePort } from './ports.ts';

export interface Recorded {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  bytes: number;
  /** The whole body arrived. */
  complete: boolean;
}

export interface Recorder {
  readonly name: string;
  readonly port: number;
  /** "http://127.0.0.1:PORT" */
  readonly url: string;
  readonly seen: Recorded[];
  close(): Promise<void>;
}

export interface RecorderOptions {
  /** Wait this long after the body before answering. */
  delayMs?: number;
}

export async function startRecorder(name: string, opts: RecorderOptions = {}): Promise<Recorder> {
  const seen: Recorded[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const server: Server = createServer((req, res) => {
    const entry: Recorded = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, bytes: 0, complete: false };
    seen.push(entry);
    req.on('data', (c: Buffer) => (entry.bytes += c.length));
    req.on('error', () => {});
    res.on('error', () => {});
    req.once('end', () => {
      entry.complete = true;
      const answer = (): void => {
        const body = JSON.stringify({ upstream: name, method: entry.method, url: entry.url, headers: entry.headers, bytes: entry.bytes });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-upstream': name });
        res.end(body);
      };
      if (!opts.delayMs) return answer();
      const t = setTimeout(() => {
        timers.delete(t);
        answer();
      }, opts.delayMs);
      timers.add(t);
    });
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port }, resolve));
  return {
    name,
    port,
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
