import { createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { createSecureServer, createServer as createHttp2Server, type Http2SecureServer, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { SecureContext, TLSSocket } from 'node:tls';
import type { TlsClientAuthMode, TlsMinVersion } from '../core/choices.ts';
import { randomUUID } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Logger } from '../core/logger.ts';
import { listenOn } from '../core/net.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Runtime } from '../runtime/runtime.ts';
import { RolloutTaps, type RouteTally } from '../runtime/rollout-taps.ts';
import { sendError } from './errors.ts';
import { isHttp2Request, refusalOfParserError, writeRawRefusal, type HeadLimits } from './client-errors.ts';
import { ListenerLimits } from './listener-limits.ts';
import { Exchange, type PipelineContext } from './pipeline.ts';
import type { RequestTracer } from './request-spans.ts';
import { MirrorGate } from './mirror.ts';
import { AccessLog } from './access-log.ts';
import { behindEarlierAnswer, startUpgrade, upgradeResponse } from './upgrade.ts';
import { WebSocketSessions } from './websocket-sessions.ts';
import { DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_RESETS_PER_WINDOW, Http2Sessions, http2ServerOptions } from './http2-sessions.ts';
import { sniffHttp2Preface } from './h2c-sniff.ts';

export interface ProxyOptions {
  readonly runtime: () => Runtime | undefined;
  /** What the services under rollout count; absent: nothing is counted. */
  readonly rollouts?: RolloutTaps;
  /** Every route's counts (guarded changes compare them before and after); absent: not counted. */
  readonly routeTallies?: RouteTally;
  /** One info line per request (`--no-access-log` turns it off). */
  readonly accessLog: boolean;
  /** Share of answers below 400 that get an access line (default 1: all). */
  readonly accessLogSample?: number;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Largest request head accepted at all; per-route limits can only be lower. */
  readonly maxHeaderSize?: number;
  /** More header fields than this are refused (431). */
  readonly maxHeaderCount?: number;
  /** Client connections open at once; more are closed at once and counted. */
  readonly maxConnections?: number;
  /** A request head must arrive within this (408). */
  readonly clientHeaderTimeoutMs?: number;
  /** Longest pause between two pieces of a request body (408). */
  readonly clientBodyTimeoutMs?: number;
  /** Bodies up to this size are read completely before an upstream is picked. */
  readonly requestBufferSize?: number;
  /** Prior-knowledge HTTP/2 (h2c) on the plain listener, beside HTTP/1.1 (`--h2c`). */
  readonly h2c?: boolean;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of HTTP/2 sessions (`--http2-max-concurrent-streams`). */
  readonly http2MaxConcurrentStreams?: number;
  /** Shadow (mirror) requests in flight at once (`--mirror-max-in-flight`); more are not sent. */
  readonly mirrorMaxInFlight?: number;
}

const DEFAULT_HEADER_TIMEOUT_MS = 10_000;
const DEFAULT_BODY_TIMEOUT_MS = 30_000;
const DEFAULT_BUFFER_BYTES = 65_536;
const DEFAULT_MIRROR_MAX_IN_FLIGHT = 100;

/** Where a response's in-flight bookkeeping is found by the shared 'close' listener. */
const LISTENER = Symbol('cgw.listener');
type TrackedResponse = ServerResponse & { [LISTENER]?: ProxyListener | null };

/**
 * The listener: sockets, limits on connections and heads, answers to heads Node refuses, the
 * count of requests in flight and the drain. Each request becomes an Exchange (pipeline.ts).
 */
export class ProxyListener {
  readonly server: Server;
  /** The plain listener and any TLS ones. */
  private readonly servers: Server[] = [];
  private readonly serverOptions: ServerOptions;
  private inflight = 0;
  private idleWaiters: (() => void)[] = [];
  private readonly head: HeadLimits;
  /** Counters for answers given before a route is known (route and service labels ""). */
  private readonly unrouted = new Map<number, { inc(): void }>();
  /** Connection cap and per-endpoint saturation, for metrics and `cgw status`. */
  readonly limits: ListenerLimits;
  private readonly ctx: PipelineContext;
  /** Upgraded (WebSocket) connections: counted, shown, closed with 1001 on drain. */
  readonly websockets: WebSocketSessions;
  /** Sockets of upgrade requests not yet answered or switched: no server tracks them any more. */
  private readonly handshakes = new Set<Socket>();
  /** HTTP/2 sessions of every listener (h2 on TLS, h2c on the plain one). */
  readonly http2: Http2Sessions;
  private readonly http2Options: ReturnType<typeof http2ServerOptions>;
  /** Sockets of the TLS listeners, which node:http2's server does not let us close (closeConnections). */
  private readonly tlsSockets = new Set<TLSSocket>();

  constructor(private readonly options: ProxyOptions) {
    const headerTimeoutMs = options.clientHeaderTimeoutMs ?? DEFAULT_HEADER_TIMEOUT_MS;
    this.head = { maxHeaderCount: options.maxHeaderCount ?? 200, maxHeaderSize: options.maxHeaderSize ?? 16_384, headerTimeoutMs };
    this.serverOptions = {
      keepAliveTimeout: 5_000,
      maxHeaderSize: options.maxHeaderSize,
      headersTimeout: headerTimeoutMs,
      // A missing Host is refused by checkHead with our JSON 400, not by Node with a bare one.
      requireHostHeader: false,
      // Bodies are timed by their idleness (--client-body-timeout) and the route's request
      // timeout; Node's whole-request timer would cut legitimate long uploads.
      requestTimeout: 0,
      // Node checks head timeouts on this period; its 30 s default answered after 40-90 s.
      connectionsCheckingInterval: Math.min(1_000, Math.max(100, Math.floor(headerTimeoutMs / 4))),
    };
    this.server = this.configure(createServer(this.serverOptions, (req, res) => this.onRequest(req, res, false)));
    this.limits = new ListenerLimits(options.maxConnections, options.metrics, options.logger);
    this.limits.watch(this.server);
    this.websockets = new WebSocketSessions(options.metrics, options.logger);
    const http2Limits = {
      maxConcurrentStreams: options.http2MaxConcurrentStreams ?? DEFAULT_MAX_CONCURRENT_STREAMS,
      maxHeaderListSize: this.head.maxHeaderSize,
      // Pseudo-headers (:method, :scheme, :authority, :path) come on top of the fields; one more
      // than the limit, so a request over it is seen and refused with 431 rather than reset.
      maxHeaderListPairs: this.head.maxHeaderCount + 5,
      firstRequestTimeoutMs: headerTimeoutMs,
      maxResetsPerWindow: DEFAULT_MAX_RESETS_PER_WINDOW,
    };
    this.http2 = new Http2Sessions(http2Limits, options.metrics, options.logger);
    this.http2Options = http2ServerOptions(http2Limits);
    if (options.h2c) this.addH2c();
    this.ctx = {
      runtime: options.runtime,
      rollouts: options.rollouts ?? new RolloutTaps(),
      routeTallies: options.routeTallies ?? null,
      head: this.head,
      bodyTimeoutMs: options.clientBodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS,
      bufferBytes: options.requestBufferSize ?? DEFAULT_BUFFER_BYTES,
      accessLog: options.accessLog ? new AccessLog(options.logger) : null,
      accessLogSample: options.accessLogSample ?? 1,
      logger: options.logger,
      metrics: options.metrics,
      limits: this.limits,
      draining: false,
      httpsPort: null,
      countUnrouted: (status) => this.countUnrouted(status),
      mirrors: new MirrorGate(options.mirrorMaxInFlight ?? DEFAULT_MIRROR_MAX_IN_FLIGHT, options.metrics.mirrorInFlight),
      tracer: null,
    };
  }

  /** The same request handling on every listener of this proxy, plain or TLS. */
  private configure<S extends Server | Http2SecureServer>(listening: S): S {
    // The TLS listener is node:http2's, whose HTTP/1.1 side is http's and takes the same settings.
    const server = listening as Server;
    // One more than the limit, so a head over it is seen (and refused) rather than cut.
    server.maxHeadersCount = this.head.maxHeaderCount + 1;
    // Without this listener Node answers `Expect: 100-continue` itself, before authentication.
    server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res, true));
    // Other expectations: Node would answer a bare 417 before routing and authentication. The
    // header is never forwarded, so the request is served like any other.
    server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => this.onRequest(req, res, false));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket));
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head));
    this.servers.push(server);
    return listening;
  }

  /**
   * Prior-knowledge h2c on the plain listener: a connection that opens with the HTTP/2 preface
   * goes to an HTTP/2 server (never listening itself), any other to the HTTP/1.1 server as before,
   * so both share the port. The `Upgrade: h2c` dance (RFC 7540 §3.2) is not offered: RFC 9113
   * deprecates it and gRPC clients use prior knowledge.
   */
  private addH2c(): void {
    const h2 = createHttp2Server(this.http2Options);
    this.watchHttp2(h2, false);
    // (The TLS listener gets this from configure(), for both of its protocols.)
    h2.on('checkContinue', (req, res) => this.onRequest(req as unknown as IncomingMessage, res as unknown as ServerResponse, true));
    sniffHttp2Preface(this.server, h2, this.head.headerTimeoutMs);
  }

  private watchHttp2(server: Http2Server | Http2SecureServer, secure: boolean): void {
    this.http2.watch(server, secure);
    server.on('request', (req, res) => this.onRequest(req as unknown as IncomingMessage, res as unknown as ServerResponse, false));
  }

  /**
   * An HTTPS listener serving the same routes: the certificate for each handshake comes from the
   * store (SNI), so a certificate that changes serves the next handshake and open connections go
   * on. A failed handshake never reaches the request path; it is counted.
   */
  addTls(
    certificates: { contextFor(serverName: string | undefined): SecureContext | undefined },
    minVersion: TlsMinVersion,
    clientAuth: { readonly mode: TlsClientAuthMode; readonly ca?: string } = { mode: 'none' },
  ): Http2SecureServer {
    const asks = clientAuth.mode !== 'none';
    // One port for both: ALPN picks h2 or http/1.1 (RFC 7301); a client that offers no ALPN
    // speaks HTTP/1.1 (allowHTTP1). The HTTP/1.1 side is Node's http server, configured below as
    // the plain listener is.
    const server = createSecureServer({
      ...this.http2Options,
      allowHTTP1: true,
      ALPNProtocols: ['h2', 'http/1.1'],
      minVersion,
      // request: the certificate is asked for and verified, and a route's policy decides what an
      // absent or unverified one means; require: OpenSSL ends the handshake without a verified one.
      ...(asks ? { requestCert: true, rejectUnauthorized: clientAuth.mode === 'require', ...(clientAuth.ca === undefined ? {} : { ca: clientAuth.ca }) } : {}),
      // Node's default of 120 s would let a client that opens connections and never finishes a
      // handshake hold them for two minutes each: the same bound as for a request head.
      handshakeTimeout: this.head.headerTimeoutMs,
      SNICallback: (serverName, done) => done(null, certificates.contextFor(serverName)),
    });
    // createSecureServer does not take the HTTP/1.1 options; its HTTP/1.1 side reads them from
    // the server object, and the head-timeout check is set up when it starts listening.
    const http1 = server as unknown as Record<string, unknown>;
    for (const [name, value] of Object.entries(this.serverOptions)) http1[name] = value;
    this.watchHttp2(server, true);
    // https.Server hands handshake errors to 'clientError', whose handler answers HTTP: on a
    // socket still in its handshake that answer is never written and the socket stays open. A
    // failed handshake has nothing to answer: count it and close.
    server.removeAllListeners('tlsClientError');
    server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      this.options.metrics.tlsHandshakeErrors.inc();
      if (asks && isClientCertificateRefusal(err, socket)) this.options.metrics.tlsClientCertificates.inc({ result: 'refused' });
      this.options.logger.debug({ err: err.message, code: err.code ?? null, clientCertificate: (socket as Partial<TLSSocket>).authorizationError ?? null }, 'TLS handshake failed');
      socket.destroy();
    });
    if (asks) {
      server.on('secureConnection', (socket: TLSSocket) => {
        const result = socket.authorized ? 'verified' : hasPeerCertificate(socket) ? 'unverified' : 'absent';
        this.options.metrics.tlsClientCertificates.inc({ result });
      });
    }
    server.on('secureConnection', (socket: TLSSocket) => {
      this.tlsSockets.add(socket);
      socket.once('close', () => this.tlsSockets.delete(socket));
    });
    // A client that negotiated neither protocol (ALPN with only unknown names) is closed.
    server.on('unknownProtocol', (socket: Socket) => socket.destroy());
    this.limits.watch(server as unknown as Server);
    return this.configure(server);
  }

  private onRequest(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): void {
    // (For HTTP/2, req and res are node:http2's compatibility objects: the pipeline uses only
    // what they share with http's, and asks isHttp2Request where they differ.)
    const http2 = isHttp2Request(req);
    // A stream the client reset before we got to it (rapid reset) costs no exchange at all.
    if (http2) {
      const stream = (res as unknown as { stream: ServerHttp2Stream }).stream;
      if (stream.destroyed || stream.closed || stream.session?.destroyed !== false) return;
    }
    this.inflight += 1;
    (res as TrackedResponse)[LISTENER] = this;
    res.once('close', onRequestClosed);
    // HTTP/2 streams end on their own; only HTTP/1.1's pipelined answers need the socket's close.
    if (!http2) closeWithSocket(req.socket, res);
    const exchange = new Exchange(this.ctx, req, res, expectsContinue);
    try {
      exchange.start();
    } catch (err) {
      exchange.fail(err);
    }
  }

  /** `Upgrade:` requests (upgrade.ts); counted in flight until answered or switched. */
  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    this.tlsSockets.delete(socket as TLSSocket);
    if (behindEarlierAnswer(socket, () => this.onUpgrade(req, socket, head))) return;
    const res = upgradeResponse(req, socket);
    this.inflight += 1;
    (res as TrackedResponse)[LISTENER] = this;
    res.once('close', onRequestClosed);
    this.handshakes.add(socket);
    res.once('close', () => this.handshakes.delete(socket));
    try {
      startUpgrade(this.ctx, this.websockets, req, res, head);
    } catch (err) {
      this.ctx.metrics.internalErrors.inc({ component: 'proxy' });
      this.ctx.logger.error({ err }, 'unexpected error in upgrade handling');
      socket.destroy();
    }
  }

  /** Called once per request, when its response closed (finished, or the connection went). */
  requestClosed(): void {
    this.inflight -= 1;
    if (this.inflight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
  }


  /**
   * Heads Node's parser refuses (malformed, too large, too slow): Node would answer a bare 400 or
   * 431 (or nothing); answer with our JSON error instead, so every refusal looks the same.
   */
  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const refusal = refusalOfParserError(err, this.head);
    if (!refusal || !socket.writable) {
      socket.destroy();
      return;
    }
    // Answers on one connection go out in request order: ours must not overtake or cut into an
    // answer still owed to an earlier request.
    const inProgress = (socket as Socket & { _httpMessage?: (ServerResponse & { req?: IncomingMessage }) | null })._httpMessage;
    if (inProgress && !inProgress.writableFinished) {
      if (!inProgress.headersSent && inProgress.req && !inProgress.req.complete) {
        // The request whose body failed to parse is the one in progress: it gets the answer (its
        // handler sees a broken body, writes nothing, and counts what was sent).
        sendError(inProgress, refusal.code, String(inProgress.getHeader('x-request-id') ?? randomUUID()), refusal.message, { close: true });
        return;
      }
      const retry = (): void => {
        setImmediate(() => this.onClientError(err, socket));
      };
      inProgress.once('finish', retry);
      inProgress.once('close', () => {
        inProgress.off('finish', retry);
        if (!socket.destroyed) retry();
      });
      return;
    }
    if (refusal.code === 'headers_too_large') this.options.metrics.requestLimitRejections.inc({ route: '', kind: 'headers' });
    this.options.logger.warn({ client: socket.remoteAddress ?? null, code: err.code ?? null }, `request refused before parsing completed: ${refusal.message}`);
    this.countUnrouted(writeRawRefusal(socket, refusal));
  }

  private countUnrouted(status: number): void {
    let child = this.unrouted.get(status);
    if (!child) {
      child = this.options.metrics.requests.labels({ route: '', service: '', code: String(status) });
      this.unrouted.set(status, child);
    }
    child.inc();
  }

  get requestsInFlight(): number {
    return this.inflight;
  }

  /** Request spans (--otlp-endpoint), set once the SDK is loaded, before the listener serves. */
  set tracer(tracer: RequestTracer | null) {
    this.ctx.tracer = tracer;
  }

  /** The port redirect-https sends plain-HTTP clients to: the first --listen-tls listener's, or null. */
  set httpsPort(port: number | null) {
    this.ctx.httpsPort = port;
  }

  listen(host: string, port: number, server: Server | Http2SecureServer = this.server): Promise<number> {
    return listenOn(server as Server, host, port);
  }

  /**
   * Closes the HTTP/1.1 connections that are idle (keep-alive between requests), or all of them.
   * node:http2's secure server (h2 and HTTP/1.1 on one port) has neither of http's
   * closeIdleConnections/closeAllConnections: its TLS sockets are tracked here, and one is idle
   * when it speaks HTTP/1.1 and no response is in progress on it. Upgraded (WebSocket) sockets
   * left the set at their upgrade: their drain closes them with a close frame.
   */
  private closeConnections(which: 'idle' | 'all'): void {
    for (const server of this.servers) {
      if (typeof server.closeAllConnections !== 'function') continue;
      if (which === 'all') server.closeAllConnections();
      else server.closeIdleConnections();
    }
    for (const socket of this.tlsSockets) {
      if (which === 'all') socket.destroy();
      else if (socket.alpnProtocol !== 'h2' && !(socket as TLSSocket & { _httpMessage?: unknown })._httpMessage) socket.end();
    }
  }

  /**
   * Stops accepting, lets requests in flight finish (closing keep-alive connections as they go
   * idle) and resolves when none is left or `timeoutMs` has passed; then cuts what remains.
   */
  async drain(timeoutMs: number): Promise<{ unfinished: number }> {
    this.ctx.draining = true;
    // Upgraded connections get their close frames now and the same timeout to close.
    const websocketsCut = this.websockets.drain(timeoutMs);
    const closed = Promise.all(this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
    this.closeConnections('idle');
    // HTTP/2: GOAWAY, so clients open no new stream here; streams in flight finish.
    this.http2.closeAll();
    if (this.inflight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.idleWaiters.push(resolve)),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timer);
    }
    const unfinished = this.inflight;
    this.closeConnections('all');
    for (const socket of this.handshakes) socket.destroy();
    this.http2.destroyAll();
    const cut = await websocketsCut;
    await closed;
    return { unfinished: unfinished + cut };
  }
}

/** One listener for every request: finds its listener through the response, no closure per request. */
function onRequestClosed(this: TrackedResponse): void {
  leavePending(this);
  const listener = this[LISTENER];
  if (!listener) return;
  this[LISTENER] = null;
  listener.requestClosed();
}

/** Responses not yet finished, per connection, so one 'close' listener serves them all. */
const pendingBySocket = new WeakMap<Socket, Set<ServerResponse>>();
/** The set a response is in, so its own 'close' takes it out without a closure per request. */
const PENDING = Symbol('cgw.pending');
type PendingResponse = ServerResponse & { [PENDING]?: Set<ServerResponse> };

/**
 * Node emits no 'close' on a response queued behind another (pipelining) when the connection
 * closes. Everything that waits for a request to end listens for it (the in-flight count, client
 * gone, relay), so without this such a request would count against its endpoint for ever.
 */
function closeWithSocket(socket: Socket, res: ServerResponse): void {
  let pending = pendingBySocket.get(socket);
  if (!pending) {
    const set = new Set<ServerResponse>();
    pending = set;
    pendingBySocket.set(socket, set);
    socket.once('close', () => {
      for (const r of [...set]) if (!r.writableFinished) r.emit('close');
      set.clear();
    });
  }
  pending.add(res);
  (res as PendingResponse)[PENDING] = pending;
}

/** Called from the response's own 'close' (onRequestClosed). */
function leavePending(res: PendingResponse): void {
  res[PENDING]?.delete(res);
}

/**
 * A handshake ended over the client certificate (`require`): OpenSSL's error when none was sent;
 * for one that does not verify (expired, another CA, self-signed) Node itself closes the socket
 * once the handshake is done, leaving the reason in `authorizationError` and a plain reset as the
 * error.
 */
function isClientCertificateRefusal(err: NodeJS.ErrnoException, socket: Socket): boolean {
  if (err.code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return true;
  const reason = (socket as Partial<TLSSocket>).authorizationError;
  return reason !== undefined && reason !== null;
}

function hasPeerCertificate(socket: TLSSocket): boolean {
  const cert = socket.getPeerCertificate();
  return cert !== null && typeof cert === 'object' && Object.keys(cert).length > 0;
}
