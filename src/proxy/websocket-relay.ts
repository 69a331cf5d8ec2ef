import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../core/logger.ts';
import { CLOSE_GOING_AWAY, CLOSE_PROTOCOL_ERROR, closeFrame, FrameTracker, StopAt } from './websocket-frames.ts';

/** Why an upgraded connection ended (the `reason` label of cgw_websocket_closes_total). */
export type CloseReason = 'client' | 'upstream' | 'idle' | 'lifetime' | 'drain' | 'protocol_error' | 'error';

/**
 * After the gateway sent its close frames (idle timeout, lifetime), how long both peers get to
 * answer with theirs and close before the sockets are cut. A drain waits its own timeout instead.
 */
export const CLOSE_GRACE_MS = 5_000;

/** Who keeps the relay: told once when it has ended (websocket-sessions.ts). */
export interface RelayOwner {
  readonly logger: Logger;
  closed(relay: WebSocketRelay, reason: CloseReason, seconds: number): void;
}

export interface RelayEnds {
  readonly route: string;
  readonly service: string;
  readonly client: Socket;
  readonly upstream: Socket;
  readonly idleTimeoutMs: number;
  readonly maxLifetimeMs: number;
}

/**
 * One direction of a relay: bytes from one peer go to the other as they arrive, the frame
 * tracker following their headers. When the gateway ends the connection it puts its close frame
 * into this direction at the next frame boundary and then drops what the sender still sends
 * (RFC 6455 §5.5.1: no data frame after a close frame), watching for the sender's own close frame.
 */
class Direction {
  readonly tracker: FrameTracker;
  /** A close frame waiting for the frame in progress to end. */
  private pending: Buffer | null = null;
  /** Our close frame went out: the sender's further frames are dropped. */
  closed = false;
  /** The sender's own close frame went this way: the receiver needs none from the gateway. */
  senderClosed = false;
  /** Bytes relayed and not yet added to the metric. */
  unreported = 0;
  private paused = false;
  private readonly resume = (): void => {
    this.paused = false;
    this.from.resume();
  };

  constructor(
    private readonly relay: WebSocketRelay,
    readonly from: Socket,
    readonly to: Socket,
    readonly sender: 'client' | 'upstream',
  ) {
    this.tracker = new FrameTracker(sender === 'client');
    this.tracker.onCloseFrame = () => relay.closeFrameFrom(this);
  }

  onData(chunk: Buffer): void {
    this.relay.touch();
    const t = this.tracker;
    if (this.closed) {
      t.scan(chunk);
      return;
    }
    if (this.pending === null) {
      const stop = t.scan(chunk);
      if (t.violation !== null) {
        if (stop > 0) this.forward(chunk.subarray(0, stop));
        return this.relay.violation(this);
      }
      return this.forward(chunk);
    }
    const stop = t.scan(chunk, 0, StopAt.FrameEnd);
    if (t.violation !== null) return this.relay.violation(this);
    this.forward(stop === chunk.length ? chunk : chunk.subarray(0, stop));
    if (!t.atBoundary) return;
    this.sendClose();
    if (stop < chunk.length) t.scan(chunk, stop);
  }

  /** Sends `frame` at the next boundary (at once when the direction is between frames). */
  requestClose(frame: Buffer): void {
    if (this.closed) return;
    this.pending = frame;
    if (this.tracker.atBoundary) this.sendClose();
  }

  /** The sender misbehaved or is gone: nothing more goes this way. */
  stop(): void {
    this.closed = true;
    this.pending = null;
  }

  private sendClose(): void {
    const frame = this.pending;
    this.pending = null;
    this.closed = true;
    if (frame !== null && !this.senderClosed && this.to.writable) this.to.write(frame);
    this.relay.endAnswered();
  }

  private forward(chunk: Buffer): void {
    this.unreported += chunk.length;
    if (this.to.write(chunk) || this.paused) return;
    // Backpressure: the slower peer sets the pace, nothing piles up in the gateway.
    this.paused = true;
    this.from.pause();
    this.to.once('drain', this.resume);
  }
}

/**
 * One upgraded connection after the 101: both directions relayed byte for byte, an idle timer and
 * a lifetime, and the gateway's own close (code 1001 to both peers at frame boundaries) for
 * idle, lifetime and drain. Ends when both sockets have closed; the grace timer cuts them if a
 * peer does not close in time.
 */
export class WebSocketRelay {
  private readonly up: Direction;
  private readonly down: Direction;
  private lastActivity = performance.now();
  private readonly startedAt = performance.now();
  private idleTimer: NodeJS.Timeout | undefined;
  private lifetimeTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private graceAt = Infinity;
  /** Why the gateway is ending it, or null while the peers are in charge. */
  private ending: CloseReason | null = null;
  /** The first peer that sent a close frame, ended or failed. */
  private firstOut: CloseReason | null = null;
  private socketsOpen = 2;
  private done = false;
  /** Cut by the grace timer rather than closed by the peers. */
  cut = false;

  constructor(
    readonly ends: RelayEnds,
    private readonly owner: RelayOwner,
  ) {
    const { client, upstream } = ends;
    this.up = new Direction(this, client, upstream, 'client');
    this.down = new Direction(this, upstream, client, 'upstream');
    client.on('data', (chunk: Buffer) => this.up.onData(chunk));
    upstream.on('data', (chunk: Buffer) => this.down.onData(chunk));
    // A peer's FIN goes on to the other (half-close); the other's answer ends the connection.
    client.on('end', () => this.peerEnded('client', upstream));
    upstream.on('end', () => this.peerEnded('upstream', client));
    client.on('error', () => this.failed('client'));
    upstream.on('error', () => this.failed('upstream'));
    client.on('close', () => this.socketClosed('client', upstream));
    upstream.on('close', () => this.socketClosed('upstream', client));
    this.idleTimer = setTimeout(onIdleTimer, ends.idleTimeoutMs, this);
    this.lifetimeTimer = setTimeout(onLifetime, ends.maxLifetimeMs, this);
  }

  /** Bytes each side sent right behind the handshake, relayed before anything else. */
  prime(clientHead: Buffer, upstreamHead: Buffer): void {
    if (upstreamHead.length > 0) this.down.onData(upstreamHead);
    if (clientHead.length > 0) this.up.onData(clientHead);
  }

  touch(): void {
    this.lastActivity = performance.now();
  }

  idleCheck(): void {
    const quiet = performance.now() - this.lastActivity;
    if (quiet >= this.ends.idleTimeoutMs) return this.end('idle', 'idle timeout', CLOSE_GRACE_MS);
    this.idleTimer = setTimeout(onIdleTimer, this.ends.idleTimeoutMs - quiet, this);
  }

  /**
   * The gateway ends the connection: close 1001 to both peers, each at its direction's next frame
   * boundary, then `graceMs` for them to answer and close before the sockets are cut. A later
   * call (a drain during an idle close) can only bring the cut closer.
   */
  end(reason: CloseReason, text: string, graceMs: number): void {
    if (this.done) return;
    if (this.ending === null) {
      this.ending = reason;
      this.down.requestClose(closeFrame(CLOSE_GOING_AWAY, text, false));
      this.up.requestClose(closeFrame(CLOSE_GOING_AWAY, text, true));
    }
    this.cutWithin(graceMs);
  }

  /** Cuts both sockets after `ms`, or sooner when an earlier deadline is set. */
  private cutWithin(ms: number): void {
    const at = performance.now() + ms;
    if (this.graceTimer !== undefined && this.graceAt <= at) return;
    clearTimeout(this.graceTimer);
    this.graceAt = at;
    this.graceTimer = setTimeout(onGraceOver, ms, this);
  }

  /** A peer sent a close frame. */
  closeFrameFrom(direction: Direction): void {
    this.firstOut ??= direction.sender;
    direction.senderClosed = true;
    this.endAnswered();
  }

  /**
   * While the gateway ends the connection: a peer that has sent its close frame and been sent one
   * (the gateway's, or the other peer's) is done, and its socket is ended. RFC 6455 §7.1.1: the
   * server ends the TCP connection first; towards the upstream the gateway is the client, and
   * ending its side is how the upstream learns it may close.
   */
  endAnswered(): void {
    if (this.ending === null) return;
    const { up, down } = this;
    // `up` carries the client's frames, `down` the upstream's.
    if (up.senderClosed && down.closed && up.from.writable) up.from.end();
    if (down.senderClosed && up.closed && down.from.writable) down.from.end();
  }

  violation(direction: Direction): void {
    const { ends } = this;
    this.owner.logger.warn({ route: ends.route, sender: direction.sender, violation: direction.tracker.violation }, 'WebSocket frame the gateway cannot relay; closing the connection');
    if (this.ending === null) this.ending = 'protocol_error';
    direction.stop();
    // The receiver is mid-stream of a frame it will never see the end of: cut. The sender hears why.
    direction.to.destroy();
    const back = direction === this.up ? this.down : this.up;
    back.requestClose(closeFrame(CLOSE_PROTOCOL_ERROR, direction.tracker.violation ?? 'protocol error', direction.sender === 'upstream'));
    direction.from.end();
    this.cutWithin(CLOSE_GRACE_MS);
  }

  private peerEnded(sender: 'client' | 'upstream', other: Socket): void {
    this.firstOut ??= sender;
    if (other.writable) other.end();
  }

  private failed(side: 'client' | 'upstream'): void {
    if (this.ending === null) this.firstOut ??= 'error';
    this.owner.logger.debug({ route: this.ends.route, side }, 'WebSocket connection failed');
    this.destroyBoth();
  }

  private socketClosed(side: 'client' | 'upstream', other: Socket): void {
    this.firstOut ??= side;
    this.socketsOpen -= 1;
    if (this.socketsOpen === 0) return this.finish();
    // The other end learns it at once; its own close (or the timers) ends the relay.
    if (!other.destroyed) other.end();
  }

  graceOver(): void {
    if (this.done) return;
    this.cut = true;
    this.destroyBoth();
  }

  private destroyBoth(): void {
    this.ends.client.destroy();
    this.ends.upstream.destroy();
  }

  /** Bytes relayed since the last call, per direction, for the metric. */
  takeBytes(): { toUpstream: number; toClient: number } {
    const out = { toUpstream: this.up.unreported, toClient: this.down.unreported };
    this.up.unreported = 0;
    this.down.unreported = 0;
    return out;
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.lifetimeTimer);
    clearTimeout(this.graceTimer);
    const reason = this.ending ?? this.firstOut ?? 'error';
    this.owner.closed(this, reason, (performance.now() - this.startedAt) / 1000);
  }
}

function onIdleTimer(relay: WebSocketRelay): void {
  relay.idleCheck();
}
function onLifetime(relay: WebSocketRelay): void {
  relay.end('lifetime', 'max lifetime reached', CLOSE_GRACE_MS);
}
function onGraceOver(relay: WebSocketRelay): void {
  relay.graceOver();
}
