import { randomBytes } from 'node:crypto';

/**
 * Where one direction of a relayed WebSocket stands between frames (RFC 6455 §5.2). Only frame
 * headers are read: FIN, opcode, MASK and the payload length; payloads are skipped by count, never
 * unmasked or copied. The relay needs this to put a close frame into a direction at a frame
 * boundary (never inside a frame) when it ends a connection (drain, idle timeout, lifetime).
 *
 * Hand-written rather than the `ws` package: `ws` is a full endpoint, it would decode (unmask,
 * and with permessage-deflate inflate) every frame and encode it again on the other side, costing
 * a copy of every byte and the extension negotiation the two peers own. The gateway needs
 * nothing but the boundaries, which the headers give.
 */

/** What a peer sent that the gateway cannot relay: it ends the connection (close code 1002). */
export type FrameViolation =
  | 'unmasked_client_frame'
  | 'masked_server_frame'
  | 'reserved_opcode'
  | 'fragmented_control_frame'
  | 'control_frame_too_long'
  | 'length_too_large';

export const OPCODE_CLOSE = 0x8;

/** Where `scan` stops besides the end of the range. */
export const StopAt = {
  /** Scan the whole range. */
  Never: 0,
  /** Just after the first frame that ends in the range (its last payload byte, or its header when empty). */
  FrameEnd: 1,
  /** Just after the first complete header in the range. */
  Header: 2,
} as const;
export type StopAt = (typeof StopAt)[keyof typeof StopAt];

/** A header is at most 2 + 8 (length) + 4 (masking key) bytes. */
const MAX_HEADER = 14;

export class FrameTracker {
  /** Header bytes of the frame being read, gathered across chunks (at most 14 bytes). */
  private readonly header = Buffer.alloc(MAX_HEADER);
  private have = 0;
  /** Header bytes this frame's header has in all; known once the second byte is read. */
  private need = 2;
  private payloadLeft = 0;
  /** Opcode of the last complete header. */
  opcode = -1;
  /** FIN bit of the last complete header. */
  fin = true;
  violation: FrameViolation | null = null;
  /** Complete frame headers read so far. */
  frames = 0;
  /** Called when a close frame's header has been read. */
  onCloseFrame: (() => void) | null = null;

  /** @param fromClient frames a client sends must be masked, a server's must not (RFC 6455 §5.1). */
  constructor(private readonly fromClient: boolean) {}

  /** Between two frames: nothing of a header pending and the payload done. */
  get atBoundary(): boolean {
    return this.have === 0 && this.payloadLeft === 0 && this.violation === null;
  }

  /**
   * Follows the frames in `chunk[from, chunk.length)` and returns the offset it stopped at: the end
   * of the chunk, the point `stopAt` asks for, or, on a violation, the offset of the bad header's
   * first byte in this chunk (0 when it began in an earlier chunk).
   */
  scan(chunk: Buffer, from = 0, stopAt: StopAt = StopAt.Never): number {
    let i = from;
    const end = chunk.length;
    while (i < end) {
      if (this.violation !== null) return i;
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, end - i);
        this.payloadLeft -= take;
        i += take;
        if (this.payloadLeft === 0 && stopAt === StopAt.FrameEnd) return i;
        continue;
      }
      const headerStart = i - this.have;
      // Collect the header: on the common path it is whole in this chunk and read in place.
      while (this.have < this.need && i < end) {
        this.header[this.have++] = chunk[i++] as number;
        if (this.have === 2) this.need = headerLength(this.header);
      }
      if (this.have < this.need) return i;
      this.readHeader();
      if (this.violation !== null) return Math.max(0, headerStart);
      if (stopAt === StopAt.Header) return i;
      if (this.payloadLeft === 0 && stopAt === StopAt.FrameEnd) return i;
    }
    return i;
  }

  private readHeader(): void {
    const h = this.header;
    const b0 = h[0] as number;
    const b1 = h[1] as number;
    const opcode = b0 & 0x0f;
    const fin = (b0 & 0x80) !== 0;
    const masked = (b1 & 0x80) !== 0;
    const len7 = b1 & 0x7f;
    let length: number;
    if (len7 === 126) length = h.readUInt16BE(2);
    else if (len7 === 127) {
      const high = h.readUInt32BE(2);
      // §5.2: the most significant bit must be 0; beyond 2^53 a count in a number is not exact.
      if (high > 0x1fffff) return this.refuse('length_too_large');
      length = high * 0x1_0000_0000 + h.readUInt32BE(6);
    } else length = len7;
    if (masked !== this.fromClient) return this.refuse(this.fromClient ? 'unmasked_client_frame' : 'masked_server_frame');
    // §5.2: 0x3-0x7 and 0xB-0xF are reserved.
    if ((opcode >= 0x3 && opcode <= 0x7) || opcode >= 0xb) return this.refuse('reserved_opcode');
    if (opcode >= 0x8) {
      // §5.5: control frames are never fragmented and carry at most 125 bytes.
      if (!fin) return this.refuse('fragmented_control_frame');
      if (length > 125) return this.refuse('control_frame_too_long');
    }
    this.opcode = opcode;
    this.fin = fin;
    this.payloadLeft = length;
    this.have = 0;
    this.need = 2;
    this.frames += 1;
    if (opcode === OPCODE_CLOSE) this.onCloseFrame?.();
  }

  private refuse(violation: FrameViolation): void {
    this.violation = violation;
  }
}

/** Header size from its first two bytes: extended length and masking key included. */
function headerLength(h: Buffer): number {
  const b1 = h[1] as number;
  const len7 = b1 & 0x7f;
  return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + ((b1 & 0x80) !== 0 ? 4 : 0);
}

/** Close codes the gateway sends (RFC 6455 §7.4.1). */
export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_PROTOCOL_ERROR = 1002;

/**
 * A close frame with a status code and a short reason (RFC 6455 §5.5.1). Frames towards an
 * upstream are masked as a client's must be (§5.3: a fresh random key per frame).
 */
export function closeFrame(code: number, reason: string, masked: boolean): Buffer {
  const text = Buffer.from(reason, 'utf8').subarray(0, 123);
  const payload = Buffer.allocUnsafe(2 + text.length);
  payload.writeUInt16BE(code, 0);
  text.copy(payload, 2);
  const frame = Buffer.allocUnsafe(2 + (masked ? 4 : 0) + payload.length);
  frame[0] = 0x80 | OPCODE_CLOSE;
  frame[1] = (masked ? 0x80 : 0) | payload.length;
  if (!masked) {
    payload.copy(frame, 2);
    return frame;
  }
  const key = randomBytes(4);
  key.copy(frame, 2);
  for (let i = 0; i < payload.length; i++) frame[6 + i] = (payload[i] as number) ^ (key[i & 3] as number);
  return frame;
}
