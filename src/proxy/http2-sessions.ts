import { constants, type Http2SecureServer, type Http2Server, type Http2Session, type SecureServerOptions, type ServerHttp2Stream } from 'node:http2';
import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Socket } from 'node:net';

/** Limits of the HTTP/2 side of the listeners; documented in the README ("HTTP/2 and gRPC"). */
export interface Http2Limits {
  /** SETTINGS_MAX_CONCURRENT_STREAMS we announce; streams beyond it are refused by nghttp2. */
  readonly maxConcurrentStreams: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE, the same bound as --max-header-size for HTTP/1.1 heads. */
  readonly maxHeaderListSize: number;
  /** Header fields per request (pseudo-headers included); the pipeline refuses above --max-header-count with 431. */
  readonly maxHeaderListPairs: number;
  /** A session that has sent no request within this is closed (like a head that never came). */
  readonly firstRequestTimeoutMs: number;
  /** Streams the client resets before their answer, per session, within RESET_WINDOW_MS, before the session is ended. */
  readonly maxResetsPerWindow: number;
}

export const DEFAULT_MAX_CONCURRENT_STREAMS = 100;
/** Resets a session may cause in one window; a browser that cancels navigations stays far below. */
export const DEFAULT_MAX_RESETS_PER_WINDOW = 100;
const RESET_WINDOW_MS = 10_000;
/** Idle sessions (no frame either way) are closed after this, as keep-alive connections are. */
const IDLE_TIMEOUT_MS = 60_000;
/** nghttp2's buffers per session, in MB (Node's default is 10): bounds what one client can pin. */
const MAX_SESSION_MEMORY_MB = 10;

/** The node:http2 server options every listener of the proxy uses. */
export function http2ServerOptions(limits: Http2Limits): Pick<SecureServerOptions, 'settings' | 'maxHeaderListPairs' | 'maxSessionMemory' | 'maxSessionRejectedStreams' | 'maxSessionInvalidFrames' | 'maxSettings'> {
  return {
    settings: {
      maxConcurrentStreams: limits.maxConcurrentStreams,
      maxHeaderListSize: limits.maxHeaderListSize,
      // Server push is never used; announcing so lets clients skip its bookkeeping.
      enablePush: false,
    },
    maxHeaderListPairs: limits.maxHeaderListPairs,
    maxSessionMemory: MAX_SESSION_MEMORY_MB,
    // Node's own floods guards (defaults 100 and 1000): a session that keeps opening streams over
    // the limit, or sends invalid frames, is ended with ENHANCE_YOUR_CALM.
    maxSessionRejectedStreams: 100,
    maxSessionInvalidFrames: 1000,
    maxSettings: 32,
  };
}

interface SessionState {
  resets: number;
  windowStartedAt: number;
  openStreams: number;
  sawStream: boolean;
  socket: Socket | undefined;
}

const STATE = Symbol('cgw.http2');
type TrackedSession = Http2Session & { [STATE]?: SessionState };

/**
 * The HTTP/2 sessions of the proxy's listeners: counted, bounded in time, ended when a client
 * resets streams faster than any real client does (the "rapid reset" attack, CVE-2023-44487:
 * each stream opened and reset at once costs the server a request, the client almost nothing,
 * and SETTINGS_MAX_CONCURRENT_STREAMS never binds), and closed with GOAWAY on drain.
 */
export class Http2Sessions {
  private readonly sessions = new Set<TrackedSession>();
  private arriving: Socket | undefined;

  constructor(
    private readonly limits: Http2Limits,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {}

  watch(server: Http2Server | Http2SecureServer, secure: boolean): void {
    // node:http2 hides a session's socket behind a proxy that may not be destroyed; the socket a
    // session is made on arrives just before its 'session' event, so it is noted here.
    server.prependListener(secure ? 'secureConnection' : 'connection', (socket: Socket) => (this.arriving = socket));
    server.on('session', (session: Http2Session) => this.opened(session as TrackedSession));
    server.on('stream', (stream: ServerHttp2Stream) => this.streamOpened(stream));
    // A session error (a protocol violation, a socket error) ends that session only.
    server.on('sessionError', (err: NodeJS.ErrnoException) => {
      this.metrics.http2SessionsRefused.inc({ reason: 'protocol' });
      this.logger.debug({ err: err.message, code: err.code ?? null }, 'HTTP/2 session error');
    });
  }

  get open(): number {
    return this.sessions.size;
  }

  private opened(session: TrackedSession): void {
    const state: SessionState = { resets: 0, windowStartedAt: Date.now(), openStreams: 0, sawStream: false, socket: this.arriving };
    this.arriving = undefined;
    session[STATE] = state;
    this.sessions.add(session);
    this.metrics.http2Sessions.inc();
    this.metrics.http2SessionsOpen.set(this.sessions.size);
    session.once('close', () => {
      this.sessions.delete(session);
      this.metrics.http2SessionsOpen.set(this.sessions.size);
    });
    // Without a listener an 'error' would be thrown; the server's 'sessionError' counts it.
    session.on('error', () => undefined);
    session.setTimeout(this.limits.firstRequestTimeoutMs, () => {
      if (state.openStreams > 0) return;
      if (!state.sawStream) this.metrics.http2SessionsRefused.inc({ reason: 'idle' });
      // GOAWAY, then the socket closes once nothing is in flight.
      session.close();
    });
  }

  private streamOpened(stream: ServerHttp2Stream): void {
    const session = stream.session as TrackedSession | undefined;
    const state = session?.[STATE];
    this.metrics.http2Streams.inc();
    if (!session || !state) return;
    if (!state.sawStream) {
      state.sawStream = true;
      session.setTimeout(IDLE_TIMEOUT_MS);
    }
    state.openStreams += 1;
    stream.once('close', () => {
      state.openStreams -= 1;
      // Closed by RST_STREAM before our answer was complete. Read on 'close' rather than
      // 'aborted': a stream reset in the same read as its HEADERS may close without 'aborted'.
      if (stream.rstCode !== constants.NGHTTP2_NO_ERROR && !stream.sentTrailers && !stream.writableFinished) this.reset(session, state);
    });
  }

  private reset(session: TrackedSession, state: SessionState): void {
    this.metrics.http2StreamResets.inc();
    const now = Date.now();
    if (now - state.windowStartedAt > RESET_WINDOW_MS) {
      state.windowStartedAt = now;
      state.resets = 0;
    }
    state.resets += 1;
    if (state.resets <= this.limits.maxResetsPerWindow || session.destroyed) return;
    this.metrics.http2SessionsRefused.inc({ reason: 'rapid_reset' });
    this.logger.warn(
      { client: session.socket?.remoteAddress ?? null, resets: state.resets, windowMs: RESET_WINDOW_MS },
      'HTTP/2 session ended: the client reset streams faster than allowed (rapid reset)',
    );
    // The final GOAWAY carries ENHANCE_YOUR_CALM (RFC 9113 §7), then every stream is dropped.
    session.destroy(undefined, constants.NGHTTP2_ENHANCE_YOUR_CALM);
    // Destroying the session only ends the socket gracefully, which waits on a client that keeps
    // writing; the connection is cut once the GOAWAY had a moment to leave.
    const socket = state.socket;
    if (socket) setTimeout(() => socket.destroy(), 100).unref();
  }

  /** Drain: GOAWAY to every session; streams in flight finish. */
  closeAll(): void {
    for (const session of this.sessions) if (!session.closed) session.close();
  }

  /** After the drain timeout: whatever is left is cut. */
  destroyAll(): void {
    for (const session of this.sessions) session.destroy();
  }
}
