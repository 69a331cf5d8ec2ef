import type { IncomingMessage } from 'node:http';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Span, type Tracer } from '@opentelemetry/api';
import type { Logger } from '../core/logger.ts';
import type { Metrics } from '../core/metrics.ts';
import type { OtlpSettings } from '../core/otlp-settings.ts';
import { SpanExport } from '../core/span-export.ts';
import { acceptableTracestate, parseTraceparent, type TraceContext } from './trace-context.ts';
import type { Exchange } from './pipeline.ts';

/**
 * One SERVER span per request (OpenTelemetry HTTP semantic conventions,
 * https://opentelemetry.io/docs/specs/semconv/http/http-spans/), for `--otlp-endpoint`. The span
 * continues the client's W3C trace (its trace id, the client's span as parent) or starts one, and
 * the traceparent sent upstream names this span as the parent, with the sampled flag the gateway
 * decided: the upstream's spans hang under the gateway's. There is no separate CLIENT span per
 * upstream attempt: attempts, the endpoint and the retry count are attributes of the one span.
 * This module (and through it the SDK) is imported only when export is on; the pipeline sees only
 * the types, and checks `ctx.tracer === null` once per request.
 */
export class RequestTracer {
  constructor(private readonly tracer: Tracer) {}

  /** At the request's arrival: the span (started now) and the trace context to send upstream. */
  start(req: IncomingMessage): RequestSpan {
    const incoming = typeof req.headers.traceparent === 'string' ? parseTraceparent(req.headers.traceparent) : null;
    const parent =
      incoming === null
        ? ROOT_CONTEXT
        : trace.setSpanContext(ROOT_CONTEXT, { traceId: incoming.traceId, spanId: incoming.parentId, traceFlags: Number.parseInt(incoming.flags, 16) & 1, isRemote: true });
    const span = this.tracer.startSpan(req.method ?? 'HTTP', { kind: SpanKind.SERVER }, parent);
    const { traceId, spanId, traceFlags } = span.spanContext();
    return new RequestSpan(span, {
      traceId,
      traceparent: `00-${traceId}-${spanId}-${(traceFlags & 1) === 1 ? '01' : '00'}`,
      tracestate: incoming === null ? undefined : acceptableTracestate(req.headers.tracestate),
    });
  }
}

export class RequestSpan {
  constructor(
    private readonly span: Span,
    /** What goes upstream: this span as the parent, the sampling decision in the flags. */
    readonly trace: TraceContext,
  ) {}

  /** Once, when the exchange finished (answered, cut, or the client gone: 499). */
  end(ex: Exchange, status: number): void {
    const span = this.span;
    // Not sampled: nothing is recorded, so nothing is worth collecting.
    if (!span.isRecording()) return;
    const { req, route, target, endpoint, identity } = ex;
    const method = req.method ?? 'HTTP';
    const attributes: Attributes = {
      'http.request.method': method,
      'url.path': target?.path ?? pathOnly(req.url),
      'url.scheme': ex.encrypted ? 'https' : 'http',
      'network.protocol.version': req.httpVersion === '2.0' ? '2' : req.httpVersion,
      'http.response.status_code': status,
      'client.address': ex.clientIp,
      'cgw.request_id': ex.requestId,
      'cgw.upstream.attempts': endpoint === undefined ? 0 : ex.retries + 1,
    };
    if (target?.host !== undefined) setServerAddress(attributes, target.host);
    if (route !== undefined) {
      attributes['cgw.route'] = route.id;
      attributes['cgw.service'] = route.service;
      span.updateName(`${method} ${route.id}`);
    }
    if (endpoint !== undefined) attributes['cgw.endpoint'] = endpoint.key;
    if (ex.errorCode !== null) attributes['cgw.error.code'] = ex.errorCode;
    // Identifiers only: never a credential (the key or token itself is not on the exchange).
    if (identity !== null) {
      attributes['cgw.auth.method'] = identity.method;
      attributes['cgw.subject'] = identity.subject;
      if (identity.consumer !== null) attributes['cgw.consumer'] = identity.consumer;
    }
    if (ex.grpcStatus !== null && /^\d{1,2}$/.test(ex.grpcStatus)) attributes['rpc.grpc.status_code'] = Number(ex.grpcStatus);
    span.setAttributes(attributes);
    // Semantic conventions: a server span is an error for 5xx only (4xx is the client's).
    if (status >= 500) {
      span.setAttribute('error.type', ex.errorCode ?? String(status));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  }
}

/** The Host the client named, as semantic conventions split it: server.address and server.port. */
function setServerAddress(attributes: Attributes, host: string): void {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*)(?::(\d{1,5}))?$/.exec(host);
  if (m === null) {
    attributes['server.address'] = host;
    return;
  }
  attributes['server.address'] = (m[1] as string).replace(/^\[|\]$/g, '');
  if (m[2] !== undefined) attributes['server.port'] = Number(m[2]);
}

function pathOnly(url: string | undefined): string {
  if (url === undefined) return '';
  const q = url.indexOf('?');
  return q === -1 ? url : url.slice(0, q);
}

export interface RequestTracing {
  readonly tracer: RequestTracer;
  /** Exports the spans still queued and stops, within `timeoutMs`. */
  close(timeoutMs: number): Promise<void>;
}

/** The data plane's entry (a dynamic import): the SDK started for this process, and its tracer. */
export function startRequestTracing(settings: OtlpSettings, options: { metrics: Metrics; logger: Logger; instanceId: string; version: string }): RequestTracing {
  const exporter = new SpanExport(settings, options);
  options.logger.info({ endpoint: settings.endpoint, sample: settings.sample, serviceName: settings.serviceName }, 'exporting request spans over OTLP/HTTP');
  return { tracer: new RequestTracer(exporter.tracer), close: (timeoutMs) => exporter.close(timeoutMs) };
}
