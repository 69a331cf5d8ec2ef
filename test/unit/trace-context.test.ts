/** W3C traceparent from clients: valid ones pass on (tracestate with them), anything else starts a new trace. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseTraceparent, traceContextOf } from '../../src/proxy/trace-context.ts';
import { upstreamRequestHeaders } from '../../src/proxy/headers.ts';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';
const VALID = `00-${TRACE}-${PARENT}-01`;

const cases: [string, boolean][] = [
  [VALID, true],
  [` ${VALID} `, true],
  [`01-${TRACE}-${PARENT}-01-future-fields`, true],
  [`00-${TRACE}-${PARENT}-01-extra`, false],
  [`ff-${TRACE}-${PARENT}-01`, false],
  [`00-${'0'.repeat(32)}-${PARENT}-01`, false],
  [`00-${TRACE}-${'0'.repeat(16)}-01`, false],
  [`00-${TRACE.toUpperCase()}-${PARENT}-01`, false],
  [`00-${TRACE}-${PARENT}`, false],
  ['', false],
  ['__proto__', false],
  [`00-${TRACE}-${PARENT}-0z`, false],
  ['x'.repeat(10_000), false],
];
for (const [value, valid] of cases) {
  test(`traceparent ${JSON.stringify(value.slice(0, 40))}: ${valid ? 'valid' : 'invalid'}`, () => assert.equal(parseTraceparent(value) !== null, valid));
}

test('a valid traceparent and its tracestate are passed on; a later version goes on as 00', () => {
  assert.deepEqual(traceContextOf({ traceparent: VALID, tracestate: 'vendor=abc' }), { traceId: TRACE, traceparent: VALID, tracestate: 'vendor=abc' });
  assert.equal(traceContextOf({ traceparent: `01-${TRACE}-${PARENT}-01-x` }).traceparent, VALID);
});

test('without a valid traceparent a new trace starts, unsampled, and the tracestate is dropped', () => {
  const t = traceContextOf({ traceparent: 'garbage', tracestate: 'vendor=abc' });
  assert.match(t.traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/);
  assert.equal(t.traceparent.slice(3, 35), t.traceId);
  assert.equal(t.tracestate, undefined);
  assert.notEqual(traceContextOf({}).traceId, traceContextOf({}).traceId);
});

test('an oversized or non-ASCII tracestate is dropped, the trace kept', () => {
  assert.equal(traceContextOf({ traceparent: VALID, tracestate: 'a'.repeat(513) }).tracestate, undefined);
  assert.equal(traceContextOf({ traceparent: VALID, tracestate: 'k=v\u00e9' }).tracestate, undefined);
});

test('the upstream gets the context, never the client\'s tracestate without its traceparent', () => {
  const trace = traceContextOf({ tracestate: 'forged=1' });
  const out = upstreamRequestHeaders({ host: 'x', tracestate: 'forged=1' }, { requestId: 'r', clientIp: '127.0.0.1', proto: 'http', trace });
  assert.equal(out.traceparent, trace.traceparent);
  assert.equal(out.tracestate, undefined);
});
