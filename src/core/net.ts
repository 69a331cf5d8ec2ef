import type { Server } from 'node:net';

/**
 * Listens and resolves with the bound port (useful with port 0), rejecting on EADDRINUSE etc.
 * Host '' (from `:8080`) means every interface: Node's default, dual-stack where IPv6 exists.
 */
export function listenOn(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const bound = (): void => {
      server.off('error', reject);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    };
    if (host === '') server.listen(port, bound);
    else server.listen(port, host, bound);
  });
}

/** `host:port` for logs and views; `*:port` for every interface. */
export function formatAddress(host: string, port: number): string {
  return host === '' ? `*:${port}` : host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The admin address is on loopback: 127.0.0.0/8, ::1 or localhost (every interface is not). */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}
