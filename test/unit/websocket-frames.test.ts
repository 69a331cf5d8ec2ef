/**
 * The frame-boundary tracker: every length encoding, masked and unmasked, headers split across
 * chunks at every byte, control frames, and the headers it refuses. Frames are built here by hand
 * (RFC 6455 §5.2) so the tests do not depend on the code under test.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { closeFrame, FrameTracker, StopAt, type FrameViolation } from '../../src/proxy/websocket-frames.ts';

function frame(opts: { opcode?: number; fin?: boolean; masked: boolean; length: number; encoding?: 'short' | '16' | '64' }): Buffer {
  const { opcode = 0x2, fin = true, masked, length } = opts;
  const encoding = opts.encoding ?? (length < 126 ? 'short' : length < 65_536 ? '16' : '64');
  const ext = encoding === 'short' ? 0 : encoding === '16' ? 2 : 8;
  const head = Buffer.alloc(2 + ext + (masked ? 4 : 0));
  head[0] = (fin ? 0x80 : 0) | opcode;
  head[1] = (masked ? 0x80 : 0) | (encoding === 'short' ? length : encoding === '16' ? 126 : 127);
  if (encoding === '16') head.writeUInt16BE(length, 2);
  if (encoding === '64') head.writeBigUInt64BE(BigInt(length), 2);
  if (masked) head.set([1, 2, 3, 4], 2 + ext);
  return Buffer.concat([head, Buffer.alloc(length, 0x61)]);
}

const lengths: { name: string; length: number; encoding?: 'short' | '16' | '64' }[] = [
  { name: 'empty', length: 0 },
  { name: '7-bit, 125', length: 125 },
  { name: '16-bit, 126', length: 126 },
  { name: '16-bit, 65535', length: 65_535 },
  { name: '64-bit, 65536', length: 65_536 },
  { name: '64-bit encoding of a small length', length: 5, encoding: '64' },
];

for (const { name, length, encoding } of lengths) {
  for (const masked of [true, false]) {
    test(`${name}, ${masked ? 'masked (from a client)' : 'unmasked (from a server)'}: one frame, then between frames`, () => {
      const bytes = frame({ masked, length, encoding });
      const t = new FrameTracker(masked);
      assert.equal(t.scan(bytes), bytes.length);
      assert.equal(t.atBoundary, true);
      assert.equal(t.frames, 1);
      assert.equal(t.violation, null);
    });
  }
}

test('a header split at every byte across two chunks is read the same', () => {
  const bytes = Buffer.concat([frame({ masked: true, length: 70_000 }), frame({ masked: true, length: 3, opcode: 0x1 })]);
  for (let cut = 1; cut < 16; cut++) {
    const t = new FrameTracker(true);
    t.scan(bytes.subarray(0, cut));
    assert.equal(t.atBoundary, false, `cut ${cut}: inside the first frame`);
    t.scan(bytes.subarray(cut));
    assert.equal(t.atBoundary, true, `cut ${cut}`);
    assert.equal(t.frames, 2, `cut ${cut}`);
    assert.equal(t.opcode, 0x1);
  }
});

test('one byte at a time: the boundary is seen exactly after each frame', () => {
  const frames = [frame({ masked: false, length: 0 }), frame({ masked: false, length: 130 }), frame({ masked: false, length: 2, opcode: 0x9 })];
  const bytes = Buffer.concat(frames);
  const ends = new Set<number>();
  let at = 0;
  for (const f of frames) ends.add((at += f.length));
  const t = new FrameTracker(false);
  for (let i = 0; i < bytes.length; i++) {
    t.scan(bytes.subarray(i, i + 1));
    assert.equal(t.atBoundary, ends.has(i + 1), `after byte ${i + 1}`);
  }
});

test('stopping at the end of the frame in progress, and after a header', () => {
  const first = frame({ masked: true, length: 10 });
  const second = frame({ masked: true, length: 4 });
  const bytes = Buffer.concat([first, second]);
  const t = new FrameTracker(true);
  t.scan(bytes.subarray(0, 5));
  assert.equal(t.scan(bytes, 5, StopAt.FrameEnd), first.length);
  assert.equal(t.atBoundary, true);
  assert.equal(t.scan(bytes, first.length, StopAt.Header), first.length + 6);
  assert.equal(t.atBoundary, false);
  assert.equal(t.scan(bytes, first.length + 6), bytes.length);
  assert.equal(t.atBoundary, true);
});

test('fragments of a message are frames of their own: a boundary between them (§5.4)', () => {
  const t = new FrameTracker(true);
  t.scan(frame({ masked: true, length: 3, opcode: 0x1, fin: false }));
  assert.equal(t.atBoundary, true);
  assert.equal(t.fin, false);
  t.scan(frame({ masked: true, length: 2, opcode: 0x9 })); // a ping between fragments
  t.scan(frame({ masked: true, length: 3, opcode: 0x0, fin: true }));
  assert.deepEqual([t.atBoundary, t.frames, t.opcode, t.fin], [true, 3, 0x0, true]);
});

test('a close frame header is reported once it is read, also when split', () => {
  const close = closeFrame(1000, 'bye', true);
  let seen = 0;
  const t = new FrameTracker(true);
  t.onCloseFrame = () => (seen += 1);
  t.scan(close.subarray(0, 1));
  assert.equal(seen, 0);
  t.scan(close.subarray(1));
  assert.equal(seen, 1);
  assert.equal(t.atBoundary, true);
});

const refused: { name: string; bytes: Buffer; fromClient: boolean; violation: FrameViolation }[] = [
  { name: 'an unmasked frame from a client', bytes: frame({ masked: false, length: 1 }), fromClient: true, violation: 'unmasked_client_frame' },
  { name: 'a masked frame from a server', bytes: frame({ masked: true, length: 1 }), fromClient: false, violation: 'masked_server_frame' },
  { name: 'a reserved data opcode', bytes: frame({ masked: true, length: 0, opcode: 0x3 }), fromClient: true, violation: 'reserved_opcode' },
  { name: 'a reserved control opcode', bytes: frame({ masked: true, length: 0, opcode: 0xb }), fromClient: true, violation: 'reserved_opcode' },
  { name: 'a fragmented ping', bytes: frame({ masked: true, length: 1, opcode: 0x9, fin: false }), fromClient: true, violation: 'fragmented_control_frame' },
  { name: 'a close frame of 126 bytes', bytes: frame({ masked: true, length: 126, opcode: 0x8 }), fromClient: true, violation: 'control_frame_too_long' },
  {
    name: 'a 64-bit length with the top bit set',
    bytes: Buffer.from([0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]),
    fromClient: true,
    violation: 'length_too_large',
  },
  {
    name: 'a 64-bit length beyond 2^53',
    bytes: Buffer.from([0x82, 0xff, 0x00, 0x40, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]),
    fromClient: true,
    violation: 'length_too_large',
  },
];

for (const c of refused) {
  test(`refused: ${c.name}; the offset of its header is returned`, () => {
    const ok = frame({ masked: c.fromClient, length: 2 });
    const t = new FrameTracker(c.fromClient);
    const stop = t.scan(Buffer.concat([ok, c.bytes]));
    assert.equal(t.violation, c.violation);
    assert.equal(stop, ok.length);
    assert.equal(t.atBoundary, false);
  });
}

test('a huge frame (2^53 - 1 bytes announced) is followed without allocating: never at a boundary', () => {
  const head = Buffer.from([0x82, 0xff, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
  const t = new FrameTracker(true);
  t.scan(head);
  t.scan(Buffer.alloc(1 << 16));
  assert.equal(t.violation, null);
  assert.equal(t.atBoundary, false);
});

test('close frames: code and reason, masked towards an upstream with the key applied', () => {
  const plain = closeFrame(1001, 'gateway shutting down', false);
  assert.equal(plain[0], 0x88);
  assert.equal(plain[1], 2 + 21);
  assert.equal(plain.readUInt16BE(2), 1001);
  assert.equal(plain.subarray(4).toString(), 'gateway shutting down');
  const masked = closeFrame(1001, 'gateway shutting down', true);
  assert.equal(masked[1], 0x80 | 23);
  const key = masked.subarray(2, 6);
  const payload = Buffer.from(masked.subarray(6).map((b, i) => b ^ (key[i & 3] as number)));
  assert.equal(payload.readUInt16BE(0), 1001);
  assert.equal(payload.subarray(2).toString(), 'gateway shutting down');
  const t = new FrameTracker(true);
  t.scan(masked);
  assert.deepEqual([t.atBoundary, t.opcode, t.violation], [true, 0x8, null]);
  assert.ok(closeFrame(1001, 'x'.repeat(500), false).length <= 2 + 125, 'a control frame payload stays within 125 bytes');
});
