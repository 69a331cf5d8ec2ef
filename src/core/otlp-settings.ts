import { z } from 'zod';
import { HTTP_TOKEN } from './http-fields.ts';

/**
 * The OTLP/HTTP trace export settings (`--otlp-endpoint`, `--otlp-sample`, `--otlp-headers`,
 * `--otlp-service-name`) and the OpenTelemetry environment variables that stand in for them
 * (https://opentelemetry.io/docs/specs/otel/protocol/exporter/ and
 * https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/). Flags win
 * over the variables, as for the CONSUL_* ones. Only parsing here: the SDK is loaded by the data
 * plane, and only when an endpoint is set.
 */

/** The OTLP/HTTP path for traces, appended to OTEL_EXPORTER_OTLP_ENDPOINT (not to the traces variable). */
const TRACES_PATH = 'v1/traces';
/** Generous for vendor keys and tenant ids; a list longer than this is a mistake, not a configuration. */
const MAX_HEADERS = 32;
const MAX_HEADER_VALUE = 4096;
/** Fields the exporter sets itself; a user value would break the request. */
const RESERVED_HEADERS = new Set(['host', 'content-type', 'content-length', 'content-encoding', 'transfer-encoding', 'connection', 'te', 'upgrade', 'keep-alive']);

export const otlpEndpointField = z
  .string()
  .trim()
  .pipe(z.url({ protocol: /^https?$/, error: 'expected an http(s) URL of an OTLP/HTTP traces receiver, e.g. http://127.0.0.1:4318/v1/traces' }))
  // zod runs this also when the URL check failed: a text URL cannot parse is left to that check's message.
  .refine((text) => {
    const url = URL.parse(text);
    return url === null || (url.username === '' && url.password === '');
  }, 'no credentials in the URL (they would show in logs): send them with --otlp-headers, e.g. authorization=Basic%20...');

/** Share of the traces the gateway starts that are recorded; a traceparent's sampled flag decides for the others. */
export const otlpSampleField = z.coerce
  .number({ error: 'expected a ratio between 0 and 1, e.g. 0.1' })
  .min(0, 'at least 0')
  .max(1, 'at most 1');

/**
 * `name=value,name=value`, as OTEL_EXPORTER_OTLP_HEADERS (the W3C Baggage list format: values
 * percent-encoded). Names are HTTP tokens, values visible ASCII and spaces; kept as own properties
 * of a fresh object, so a name such as `__proto__` is a header like any other.
 */
export const otlpHeadersField = z.string().transform((text, ctx) => {
  const headers: Record<string, string> = {};
  const items = text.split(',').map((item) => item.trim()).filter((item) => item !== '');
  if (items.length > MAX_HEADERS) {
    ctx.addIssue({ code: 'custom', message: `at most ${MAX_HEADERS} headers` });
    return z.NEVER;
  }
  for (const item of items) {
    const eq = item.indexOf('=');
    const name = (eq === -1 ? item : item.slice(0, eq)).trim().toLowerCase();
    if (eq === -1 || !HTTP_TOKEN.test(name)) {
      ctx.addIssue({ code: 'custom', message: `"${item.slice(0, 40)}" is not name=value with an HTTP token as name` });
      return z.NEVER;
    }
    if (RESERVED_HEADERS.has(name)) {
      ctx.addIssue({ code: 'custom', message: `${name} is set by the exporter itself` });
      return z.NEVER;
    }
    let value: string;
    try {
      value = decodeURIComponent(item.slice(eq + 1).trim());
    } catch {
      ctx.addIssue({ code: 'custom', message: `the value of ${name} has a broken %-escape` });
      return z.NEVER;
    }
    if (value.length > MAX_HEADER_VALUE || !/^[\x20-\x7e]*$/.test(value)) {
      ctx.addIssue({ code: 'custom', message: `the value of ${name} must be at most ${MAX_HEADER_VALUE} visible ASCII characters` });
      return z.NEVER;
    }
    if (Object.hasOwn(headers, name)) {
      ctx.addIssue({ code: 'custom', message: `${name} is given twice` });
      return z.NEVER;
    }
    Object.defineProperty(headers, name, { value, enumerable: true, writable: true, configurable: true });
  }
  return headers;
});

/** OTEL_SERVICE_NAME: the `service.name` resource attribute of every span. */
export const otlpServiceNameField = z
  .string()
  .trim()
  .min(1, 'a service name cannot be empty')
  .max(255, 'at most 255 characters')
  .regex(/^[\x20-\x7e]+$/, 'visible ASCII');

export interface OtlpEnvDefaults {
  otlpEndpoint?: string;
  otlpHeaders?: string;
  otlpServiceName?: string;
}

/**
 * What the OpenTelemetry variables ask for, as flag values: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as
 * is, else OTEL_EXPORTER_OTLP_ENDPOINT with `/v1/traces` appended (the spec's rule for the
 * signal-less variable); the traces headers variable over the general one, taken when there is an
 * endpoint (from the variables, or `--otlp-endpoint` when `endpointFlag`), so a headers variable
 * alone does not stop a gateway that exports nothing; none of them when OTEL_SDK_DISABLED=true.
 * Empty values count as unset, as the SDK reads them.
 */
export function otlpEnvDefaults(env: NodeJS.ProcessEnv, endpointFlag = false): OtlpEnvDefaults {
  const read = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value === undefined || value === '' ? undefined : value;
  };
  const out: OtlpEnvDefaults = {};
  const service = read('OTEL_SERVICE_NAME');
  if (service !== undefined) out.otlpServiceName = service;
  if (read('OTEL_SDK_DISABLED')?.toLowerCase() === 'true') return out;
  const traces = read('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  const base = read('OTEL_EXPORTER_OTLP_ENDPOINT');
  if (traces !== undefined) out.otlpEndpoint = traces;
  else if (base !== undefined) out.otlpEndpoint = base.endsWith('/') ? `${base}${TRACES_PATH}` : `${base}/${TRACES_PATH}`;
  const headers = read('OTEL_EXPORTER_OTLP_TRACES_HEADERS') ?? read('OTEL_EXPORTER_OTLP_HEADERS');
  if (headers !== undefined && (out.otlpEndpoint !== undefined || endpointFlag)) out.otlpHeaders = headers;
  return out;
}

/** What the data plane needs to export spans; null in the configuration when export is off. */
export interface OtlpSettings {
  readonly endpoint: string;
  readonly sample: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly serviceName: string;
}
