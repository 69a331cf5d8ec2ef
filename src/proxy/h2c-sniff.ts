import type { Server } from 'node:http';
import type { Http2Server } from 'node:http2';
import type { Socket } from 'node:net';

/** RFC 9113 §3.4: every prior-knowledge HTTP/2 connection opens with these 24 octets. */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * Makes `http1` (a listening http.Server) hand connections that open with the HTTP/2 preface to
 * `h2`: the first bytes are read, put back (`unshift`; node:http2 and the HTTP/1.1 parser both
 * take bytes already buffered on the socket) and the socket given to the server that speaks them.
 * A connection that sends nothing is closed after `firstBytesTimeoutMs`, as a head that never
 * comes would be. Hand-written: no library offers this, and it is the only way to serve both on
 * one port without the deprecated `Upgrade: h2c`.
 */
export function sniffHttp2Preface(http1: Server, h2: Http2Server, firstBytesTimeoutMs: number): void {
  const [original, ...others] = http1.listeners('connection') as ((socket: Socket) => void)[];
  if (!original) throw new Error('http server has no connection listener');
  http1.removeAllListeners('connection');
  http1.on('connection', (socket: Socket) => {
    const timer = setTimeout(() => socket.destroy(), firstBytesTimeoutMs);
    const gone = (): void => clearTimeout(timer);
    socket.once('close', gone);
    // Errors before the hand-over (a reset) must not be thrown; afterwards the new owner listens too.
    socket.on('error', ignore);
    const first = (): void => {
      const chunk = socket.read() as Buffer | null;
      if (chunk === null) {
        socket.once('readable', first);
        return;
      }
      clearTimeout(timer);
      socket.off('close', gone);
      socket.unshift(chunk);
      const n = Math.min(chunk.length, PREFACE.length);
      if (chunk.subarray(0, n).equals(PREFACE.subarray(0, n))) h2.emit('connection', socket);
      else original.call(http1, socket);
    };
    socket.once('readable', first);
  });
  // Listeners added before (none today) keep their place after ours.
  for (const listener of others) http1.on('connection', listener);
}

function ignore(): void {}
