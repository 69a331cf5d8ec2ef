/** Raw HTTP for tests that need what undici/fetch refuse to send (a `Host` override, `Connection: <token>`). */
import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface SendOptions {
  method?: string;
  headers?: OutgoingHttpHeaders;
  body?: Buffer;
  /** Written one by one without Content-Length (chunked transfer encoding). */
  chunks?: Buffer[];
}

/**
 * One request on a fresh connection through node:http; rejects after 10 s without an answer. A
 * reset after the answer arrived is ignored: the gateway may close the connection while a refused
 * body is still being written.
 */
export function send(base: string, path: string, opts: SendOptions = {}): Promise<Reply> {
  const url = new URL(path, base);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpRequest(
      { host: url.hostname, port: url.port, path: url.pathname + url.search, method: opts.method ?? 'GET', headers: opts.headers, agent: false },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.once('error', reject);
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error(`timeout: ${opts.method ?? 'GET'} ${path}`)));
    req.once('error', (err) => {
      if (!answered) reject(err);
    });
    if (opts.chunks) {
      void (async () => {
        for (const c of opts.chunks ?? []) {
          if (req.destroyed) return;
          req.write(c);
          await new Promise((r) => setImmediate(r));
        }
        req.end();
      })();
    } else {
      req.end(opts.body);
    }
  });
}
