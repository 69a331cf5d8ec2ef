import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { SpanExport } from '../../src/core/span-export.ts';
import { RequestTracer } from '../../src/proxy/request-spans.ts';
import { waitFor } from '../helpers/wait.ts';

const SETTINGS = { endpoint: 'http://127.0.0.1:1/v1/traces', sample: 1, headers: {}, serviceName: 'cgw' };
type Done = Parameters<SpanExporter['export']>[1];

function fakeExporter(answer: (spans: ReadableSpan[], done: Done) => void): SpanExporter & { batches: ReadableSpan[][] } {
  const batches: ReadableSpan[][] = [];
  return {
    batches,
    export(spans, done) {
      batches.push(spans);
      answer(spans, done);
    },
    shutdown: () => Promise.resolve(),
  };
}

function setup(exporter: SpanExporter, sample = 1, now?: () => number) {
  const metrics = createMetrics({ defaultMetrics: false });
  const lines: string[] = [];
  const logger = createLogger('warn', { write: (l: string) => void lines.push(l) });
  const spans = new SpanExport({ ...SETTINGS, sample }, { metrics, logger, instanceId: 'gw-1', version: '0.0.0', exporter, ...(now ? { now } : {}) });
  return { metrics, lines, spans, tracer: new RequestTracer(spans.tracer) };
}

async function count(metrics: ReturnType<typeof createMetrics>, name: string, labels: Record<string, string> = {}): Promise<number> {
  const json = await metrics.registry.getMetricsAsJSON();
  const metric = json.find((m) => m.name === name);
  return (metric?.values ?? []).filter((v) => Object.entries(labels).every(([k, want]) => v.labels[k] === want)).reduce((sum, v) => sum + v.value, 0);
}

function request(headers: Record<string, string> = {}): IncomingMessage {
  return { method: 'GET', url: '/x', httpVersion: '1.1', headers } as unknown as IncomingMessage;
}

function endSpans(tracer: RequestTracer, n: number): void {
  // end() reads the exchange; an exchange that never matched a route is enough here.
  const ex = { req: request(), route: undefined, target: undefined, endpoint: undefined, identity: null, errorCode: null, grpcStatus: null, encrypted: false, clientIp: '127.0.0.1', requestId: 'r', retries: 0 };
  for (let i = 0; i < n; i++) tracer.start(request()).end(ex as never, 200);
}

describe('RequestTracer.start: the context sent upstream', () => {
  const PARENT = '00f067aa0ba902b7';
  const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
  const cases: { name: string; sample: number; traceparent?: string; expect: RegExp }[] = [
    { name: 'no traceparent, ratio 1: a new sampled trace', sample: 1, expect: /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/ },
    { name: 'no traceparent, ratio 0: a new trace, not sampled', sample: 0, expect: /^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/ },
    { name: 'a sampled parent, ratio 0: the parent decides', sample: 0, traceparent: `00-${TRACE}-${PARENT}-01`, expect: new RegExp(`^00-${TRACE}-(?!${PARENT})[0-9a-f]{16}-01$`) },
    { name: 'an unsampled parent, ratio 1: the parent decides', sample: 1, traceparent: `00-${TRACE}-${PARENT}-00`, expect: new RegExp(`^00-${TRACE}-(?!${PARENT})[0-9a-f]{16}-00$`) },
    { name: 'a garbage traceparent starts a trace', sample: 1, traceparent: `00-${TRACE.toUpperCase()}-${PARENT}-01`, expect: new RegExp(`^00-(?!${TRACE})[0-9a-f]{32}-[0-9a-f]{16}-01$`) },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const { tracer } = setup(fakeExporter((_s, done) => done({ code: 0 })), c.sample);
      const started = tracer.start(request(c.traceparent === undefined ? {} : { traceparent: c.traceparent, tracestate: 'v=1' }));
      assert.match(started.trace.traceparent, c.expect);
      assert.equal(started.trace.traceId, started.trace.traceparent.slice(3, 35));
      assert.equal(started.trace.tracestate, c.traceparent === undefined || c.name.includes('garbage') ? undefined : 'v=1');
    });
  }
});

describe('SpanExport: what the exporter does is counted, never felt', () => {
  test('accepted batches count their spans; close() exports what is still queued', async () => {
    const exporter = fakeExporter((_s, done) => done({ code: 0 }));
    const { metrics, spans, tracer } = setup(exporter);
    endSpans(tracer, 5);
    await spans.close(5_000);
    assert.equal(exporter.batches.flat().length, 5);
    assert.equal(await count(metrics, 'cgw_otlp_spans_exported_total'), 5);
    assert.equal(await count(metrics, 'cgw_otlp_export_failures_total'), 0);
  });

  test('unsampled spans never reach the exporter', async () => {
    const exporter = fakeExporter((_s, done) => done({ code: 0 }));
    const { spans, tracer } = setup(exporter, 0);
    endSpans(tracer, 20);
    await spans.close(5_000);
    assert.equal(exporter.batches.length, 0);
  });

  test('failed batches are counted with their spans, and logged once per interval', async () => {
    const exporter = fakeExporter((_s, done) => done({ code: 1, error: new Error('connect ECONNREFUSED') }));
    const { metrics, lines, spans, tracer } = setup(exporter, 1, () => 0);
    // Three batches of at most 512: three failures, one log line.
    endSpans(tracer, 1_500);
    await spans.close(5_000).catch(() => undefined);
    assert.equal(exporter.batches.length, 3);
    assert.equal(await count(metrics, 'cgw_otlp_export_failures_total'), 3);
    assert.equal(await count(metrics, 'cgw_otlp_spans_dropped_total', { reason: 'export_failed' }), 1_500);
    assert.equal(lines.filter((l) => l.includes('span export to the OTLP receiver failed')).length, 1);
    assert.match(lines[0] ?? '', /ECONNREFUSED/);
  });

  test('a receiver that never answers: the queue stays bounded and the rest is dropped and counted', async () => {
    const exporter = fakeExporter(() => undefined);
    const { metrics, spans, tracer } = setup(exporter);
    endSpans(tracer, 3_000);
    await waitFor(() => exporter.batches.length >= 1, { timeoutMs: 10_000, message: 'the first batch went out' });
    const dropped = await count(metrics, 'cgw_otlp_spans_dropped_total', { reason: 'queue_full' });
    const inFlight = exporter.batches.flat().length;
    // 2048 wait, one batch is with the exporter, the rest is dropped.
    assert.ok(dropped >= 3_000 - 2_048 - inFlight && dropped > 0, `dropped ${dropped}, with the exporter ${inFlight}`);
    await spans.close(200);
  });
});
