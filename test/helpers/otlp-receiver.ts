/**
 * A real OTLP/HTTP traces receiver for tests: a node:http server on loopback that takes
 * `POST /v1/traces` with the JSON encoding of ExportTraceServiceRequest (what
 * @opentelemetry/exporter-trace-otlp-http sends in Node; https://opentelemetry.io/docs/specs/otlp/#otlphttp)
 * and keeps every span it decoded, flattened.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { freePort } from './ports.ts';

export type AttributeValue = string | number | boolean | null;

export interface ReceivedSpan {
  readonly traceId: string;
  readonly spanId: string;
  /** '' for a root span. */
  readonly parentSpanId: string;
  readonly name: string;
  /** OTLP SpanKind: 2 is SERVER. */
  readonly kind: number;
  /** OTLP status code: 0 unset, 1 ok, 2 error. */
  readonly statusCode: number;
  readonly attributes: Readonly<Record<string, AttributeValue>>;
  readonly resource: Readonly<Record<string, AttributeValue>>;
}

export interface OtlpReceiver {
  readonly port: number;
  /** "http://127.0.0.1:PORT/v1/traces" */
  readonly endpoint: string;
  readonly spans: ReceivedSpan[];
  /** Every POST seen (also those answered with an error status), with its headers. */
  readonly posts: { readonly headers: IncomingHttpHeaders; readonly contentType: string }[];
  /** Answer exports with this status from now on (200 accepts; 400 refuses; 0 never answers). */
  setStatus(status: number): void;
  close(): Promise<void>;
}

const MAX_BODY = 16 * 1024 * 1024;

interface OtlpAnyValue {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
}
interface OtlpKeyValue {
  key: string;
  value?: OtlpAnyValue;
}

function flatten(list: OtlpKeyValue[] | undefined): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = Object.create(null) as Record<string, AttributeValue>;
  for (const { key, value } of list ?? []) {
    if (value?.stringValue !== undefined) out[key] = value.stringValue;
    else if (value?.intValue !== undefined) out[key] = Number(value.intValue);
    else if (value?.doubleValue !== undefined) out[key] = value.doubleValue;
    else if (value?.boolValue !== undefined) out[key] = value.boolValue;
    else out[key] = null;
  }
  return out;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const port = await freePort();
  const spans: ReceivedSpan[] = [];
  const posts: OtlpReceiver['posts'][number][] = [];
  let status = 200;
  const server = createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      res.writeHead(404).end();
      return;
    }
    const contentType = String(req.headers['content-type'] ?? '');
    posts.push({ headers: req.headers, contentType });
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) req.destroy();
      else chunks.push(chunk);
    });
    req.on('end', () => {
      const answer = status;
      if (answer === 0) return; // a receiver that hangs: the exporter's timeout ends the POST
      if (answer === 200 && contentType.startsWith('application/json')) {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          resourceSpans?: { resource?: { attributes?: OtlpKeyValue[] }; scopeSpans?: { spans?: { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number; status?: { code?: number }; attributes?: OtlpKeyValue[] }[] }[] }[];
        };
        for (const rs of body.resourceSpans ?? []) {
          const resource = flatten(rs.resource?.attributes);
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              spans.push({ traceId: s.traceId, spanId: s.spanId, parentSpanId: s.parentSpanId ?? '', name: s.name, kind: s.kind, statusCode: s.status?.code ?? 0, attributes: flatten(s.attributes), resource });
            }
          }
        }
      }
      res.writeHead(answer, { 'content-type': 'application/json' }).end(answer === 200 ? '{}' : '{"code":3,"message":"refused by the test"}');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port }, () => resolve());
  });
  return {
    port,
    endpoint: `http://127.0.0.1:${port}/v1/traces`,
    spans,
    posts,
    setStatus(next) {
      status = next;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
