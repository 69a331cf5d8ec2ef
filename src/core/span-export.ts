import type { Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type ReadableSpan,
  type Span,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { describeError } from './errors.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import type { OtlpSettings } from './otlp-settings.ts';

/**
 * The OpenTelemetry SDK's side of request spans: a tracer provider of its own (never registered
 * globally), parent-based sampling with a ratio for the traces the gateway starts, a batch
 * processor with a bounded queue and the OTLP/HTTP exporter, each wrapped so that what is
 * exported, dropped and failed is counted. Loaded only when `--otlp-endpoint` is set (the data
 * plane imports it dynamically), so a gateway without it never loads the SDK. Exporting happens
 * on the processor's timer, never on the request path; a failing receiver costs spans, not requests.
 */

/** Spans held for export; past it new spans are dropped and counted (the SDK's own count is private). */
const MAX_QUEUE = 2048;
const BATCH = 512;
/** A span reaches the receiver within about this after its request ended. */
const EXPORT_DELAY_MS = 1_000;
/** One POST to the receiver; a slow receiver costs this per batch, and spans queue meanwhile. */
const EXPORT_TIMEOUT_MS = 10_000;
/** Export failures are logged at most once per this interval (with the count since the last line). */
const FAILURE_LOG_INTERVAL_MS = 60_000;
/** Attribute values (paths, host names) are cut at this many characters. */
const MAX_ATTRIBUTE_LENGTH = 2048;
/** ExportResultCode.SUCCESS of @opentelemetry/core (a transitive dependency, not imported for one constant). */
const EXPORT_SUCCESS = 0;

export interface SpanExportOptions {
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** `service.instance.id`: the gateway id; workers of one gateway differ by `process.pid`. */
  readonly instanceId: string;
  readonly version: string;
  /** Override the exporter (tests); default OTLP/HTTP to the settings' endpoint. */
  readonly exporter?: SpanExporter;
  readonly now?: () => number;
}

export class SpanExport {
  readonly tracer: Tracer;
  private readonly provider: BasicTracerProvider;
  private closing: Promise<void> | undefined;

  constructor(settings: OtlpSettings, options: SpanExportOptions) {
    const { metrics, logger } = options;
    const now = options.now ?? Date.now;
    const queue = new QueueBound(MAX_QUEUE, () => metrics.otlpSpansDropped.inc({ reason: 'queue_full' }));
    let failedSinceLog = 0;
    let lastLogAt = -Infinity;
    const exporter = new CountingExporter(
      options.exporter ??
        new OTLPTraceExporter({ url: settings.endpoint, headers: { ...settings.headers }, timeoutMillis: EXPORT_TIMEOUT_MS }),
      {
        taken: (n) => queue.taken(n),
        exported: (n) => metrics.otlpSpansExported.inc(n),
        failed: (n, error) => {
          metrics.otlpExportFailures.inc();
          metrics.otlpSpansDropped.inc({ reason: 'export_failed' }, n);
          failedSinceLog += 1;
          const at = now();
          if (at - lastLogAt < FAILURE_LOG_INTERVAL_MS) return;
          logger.warn({ endpoint: settings.endpoint, failedBatches: failedSinceLog, spans: n, err: error === undefined ? null : describeError(error) }, 'span export to the OTLP receiver failed; requests are not affected (cgw_otlp_export_failures_total)');
          lastLogAt = at;
          failedSinceLog = 0;
        },
      },
    );
    queue.inner = new BatchSpanProcessor(exporter, { maxQueueSize: MAX_QUEUE, maxExportBatchSize: BATCH, scheduledDelayMillis: EXPORT_DELAY_MS, exportTimeoutMillis: EXPORT_TIMEOUT_MS });
    this.provider = new BasicTracerProvider({
      resource: resourceFromAttributes({
        'service.name': settings.serviceName,
        'service.version': options.version,
        'service.instance.id': options.instanceId,
        'process.pid': process.pid,
      }),
      // A client's traceparent decides for its trace (W3C sampled flag); the ratio decides for
      // the traces the gateway starts (TraceIdRatioBased: the same trace id, the same decision).
      sampler: new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.sample) }),
      spanLimits: { attributeValueLengthLimit: MAX_ATTRIBUTE_LENGTH },
      spanProcessors: [queue],
    });
    this.tracer = this.provider.getTracer('cgw', options.version);
  }

  /** Exports what is queued and stops, within `timeoutMs` at most (a receiver that hangs is left behind). */
  close(timeoutMs: number): Promise<void> {
    this.closing ??= (async () => {
      let timer: NodeJS.Timeout | undefined;
      const gaveUp = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
        timer.unref();
      });
      await Promise.race([this.provider.shutdown().catch(() => undefined), gaveUp]);
      clearTimeout(timer);
    })();
    return this.closing;
  }
}

/**
 * In front of the batch processor: counts sampled spans waiting for export and drops (counting)
 * those beyond the bound, so a receiver that is down or slow costs a bounded memory and a figure.
 * The batch processor takes spans off its queue when it hands them to the exporter, which is
 * when `taken` is called.
 */
class QueueBound implements SpanProcessor {
  inner: SpanProcessor | undefined;
  private waiting = 0;

  constructor(
    private readonly max: number,
    private readonly dropped: () => void,
  ) {}

  onStart(_span: Span): void {}

  onEnd(span: ReadableSpan): void {
    // Unsampled spans never reach the exporter (the batch processor skips them too).
    if ((span.spanContext().traceFlags & 1) === 0) return;
    if (this.waiting >= this.max) return this.dropped();
    this.waiting += 1;
    this.inner?.onEnd(span);
  }

  taken(n: number): void {
    this.waiting = Math.max(0, this.waiting - n);
  }

  forceFlush(): Promise<void> {
    return this.inner?.forceFlush() ?? Promise.resolve();
  }

  shutdown(): Promise<void> {
    return this.inner?.shutdown() ?? Promise.resolve();
  }
}

type ExportCallback = Parameters<SpanExporter['export']>[1];

/** The exporter with its outcomes counted: the SDK reports failures only through its diag logger. */
class CountingExporter implements SpanExporter {
  constructor(
    private readonly inner: SpanExporter,
    private readonly on: { taken(n: number): void; exported(n: number): void; failed(n: number, error: Error | undefined): void },
  ) {}

  export(spans: ReadableSpan[], done: ExportCallback): void {
    const n = spans.length;
    this.on.taken(n);
    let reported = false;
    const report: ExportCallback = (result) => {
      if (reported) return;
      reported = true;
      if (result.code === EXPORT_SUCCESS) this.on.exported(n);
      else this.on.failed(n, result.error);
      done(result);
    };
    try {
      this.inner.export(spans, report);
    } catch (err) {
      report({ code: 1, error: err instanceof Error ? err : new Error(String(err)) });
    }
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}
