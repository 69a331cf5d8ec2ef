import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ZodError } from 'zod';
import { formatConfigError, parseGatewayConfig, type GatewayConfigInput } from '../../src/config.ts';
import { configFromFlags } from '../../src/cli/start.ts';
import { otlpEnvDefaults } from '../../src/core/otlp-settings.ts';

function configError(input: GatewayConfigInput): string {
  try {
    parseGatewayConfig(input);
  } catch (err) {
    assert.ok(err instanceof ZodError, `expected a ZodError, got ${String(err)}`);
    return formatConfigError(err);
  }
  assert.fail(`expected ${JSON.stringify(input)} to be rejected`);
}

const ENDPOINT = 'http://127.0.0.1:4318/v1/traces';

describe('OTLP flags: accepted', () => {
  const cases: { name: string; input: GatewayConfigInput; otlp: unknown }[] = [
    { name: 'off by default', input: {}, otlp: null },
    { name: 'an endpoint alone: sample 1, no headers, service cgw', input: { otlpEndpoint: ENDPOINT }, otlp: { endpoint: ENDPOINT, sample: 1, headers: {}, serviceName: 'cgw' } },
    { name: 'https, a ratio, headers', input: { otlpEndpoint: 'https://otel.example.com/v1/traces', otlpSample: '0.25', otlpHeaders: 'Authorization=Bearer%20abc, x-tenant=t1' }, otlp: { endpoint: 'https://otel.example.com/v1/traces', sample: 0.25, headers: { authorization: 'Bearer abc', 'x-tenant': 't1' }, serviceName: 'cgw' } },
    { name: 'ratio 0 and a service name', input: { otlpEndpoint: ENDPOINT, otlpSample: '0', otlpServiceName: 'edge' }, otlp: { endpoint: ENDPOINT, sample: 0, headers: {}, serviceName: 'edge' } },
    { name: 'empty header list items are skipped', input: { otlpEndpoint: ENDPOINT, otlpHeaders: ',a=1,,' }, otlp: { endpoint: ENDPOINT, sample: 1, headers: { a: '1' }, serviceName: 'cgw' } },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(parseGatewayConfig(c.input).otlp, c.otlp);
    });
  }

  test('a header named __proto__ is an own property and pollutes nothing', () => {
    const otlp = parseGatewayConfig({ otlpEndpoint: ENDPOINT, otlpHeaders: '__proto__=x,constructor=y' }).otlp;
    assert.ok(otlp);
    assert.equal(Object.getOwnPropertyDescriptor(otlp.headers, '__proto__')?.value, 'x');
    assert.equal(Object.getOwnPropertyDescriptor(otlp.headers, 'constructor')?.value, 'y');
    assert.equal(({} as Record<string, unknown>).x, undefined);
    assert.equal(Object.getPrototypeOf(otlp.headers), Object.prototype);
  });

  test('--log-format: auto by default, json and pretty accepted', () => {
    assert.equal(parseGatewayConfig({}).logFormat, 'auto');
    assert.equal(parseGatewayConfig({ logFormat: 'json' }).logFormat, 'json');
    assert.equal(parseGatewayConfig({ logFormat: 'pretty' }).logFormat, 'pretty');
  });
});

describe('OTLP flags: refused with the flag named', () => {
  const cases: { name: string; input: GatewayConfigInput; error: RegExp }[] = [
    { name: 'not a URL', input: { otlpEndpoint: 'not a url' }, error: /^--otlp-endpoint: expected an http\(s\) URL/ },
    { name: 'another scheme', input: { otlpEndpoint: 'grpc://127.0.0.1:4317' }, error: /^--otlp-endpoint: expected an http\(s\) URL/ },
    { name: 'credentials in the URL', input: { otlpEndpoint: 'http://user:pw@127.0.0.1:4318/v1/traces' }, error: /^--otlp-endpoint: no credentials in the URL/ },
    { name: 'ratio above 1', input: { otlpEndpoint: ENDPOINT, otlpSample: '1.5' }, error: /^--otlp-sample: at most 1/ },
    { name: 'ratio below 0', input: { otlpEndpoint: ENDPOINT, otlpSample: '-0.1' }, error: /^--otlp-sample: at least 0/ },
    { name: 'ratio not a number', input: { otlpEndpoint: ENDPOINT, otlpSample: 'half' }, error: /^--otlp-sample: expected a ratio/ },
    { name: 'sample without endpoint', input: { otlpSample: '0.5' }, error: /^--otlp-endpoint: --otlp-sample and --otlp-headers need --otlp-endpoint/ },
    { name: 'headers without endpoint', input: { otlpHeaders: 'a=1' }, error: /need --otlp-endpoint/ },
    { name: 'a header without =', input: { otlpEndpoint: ENDPOINT, otlpHeaders: 'justaname' }, error: /^--otlp-headers: "justaname" is not name=value/ },
    { name: 'a header name with a space', input: { otlpEndpoint: ENDPOINT, otlpHeaders: 'bad name=1' }, error: /^--otlp-headers: .* is not name=value/ },
    { name: 'a header value with a control character', input: { otlpEndpoint: ENDPOINT, otlpHeaders: 'a=%0d%0aInjected: 1' }, error: /^--otlp-headers: the value of a must be/ },
    { name: 'a broken %-escape', input: { otlpEndpoint: ENDPOINT, otlpHeaders: 'a=%zz' }, error: /broken %-escape/ },
    { name: 'a header the exporter sets', input: { otlpEndpoint: ENDPOINT, otlpHeaders: 'Content-Type=text/plain' }, error: /content-type is set by the exporter/ },
    { name: 'a header twice', input: { otlpEndpoint: ENDPOINT, otlpHeaders: 'a=1,A=2' }, error: /a is given twice/ },
    { name: 'too many headers', input: { otlpEndpoint: ENDPOINT, otlpHeaders: Array.from({ length: 33 }, (_, i) => `h${i}=1`).join(',') }, error: /at most 32 headers/ },
    { name: 'an oversized header value', input: { otlpEndpoint: ENDPOINT, otlpHeaders: `a=${'x'.repeat(5000)}` }, error: /at most 4096/ },
    { name: 'an empty service name', input: { otlpEndpoint: ENDPOINT, otlpServiceName: ' ' }, error: /^--otlp-service-name: a service name cannot be empty/ },
    { name: 'an unknown log format', input: { logFormat: 'xml' as 'json' }, error: /^--log-format/ },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.match(configError(c.input), c.error);
    });
  }
});

describe('otlpEnvDefaults: the OpenTelemetry variables', () => {
  const cases: { name: string; env: NodeJS.ProcessEnv; expected: ReturnType<typeof otlpEnvDefaults> }[] = [
    { name: 'none set', env: {}, expected: {} },
    { name: 'the traces endpoint as is', env: { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://c:4318/custom' }, expected: { otlpEndpoint: 'http://c:4318/custom' } },
    { name: 'the base endpoint gets /v1/traces', env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, expected: { otlpEndpoint: 'http://c:4318/v1/traces' } },
    { name: 'a base endpoint with a trailing slash and a path', env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/otlp/' }, expected: { otlpEndpoint: 'http://c:4318/otlp/v1/traces' } },
    { name: 'the traces endpoint wins over the base', env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://base:4318', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://traces:4318/v1/traces' }, expected: { otlpEndpoint: 'http://traces:4318/v1/traces' } },
    { name: 'headers, the traces variable first', env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_HEADERS: 'a=1', OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'b=2' }, expected: { otlpEndpoint: 'http://c:4318/v1/traces', otlpHeaders: 'b=2' } },
    { name: 'headers without an endpoint are left alone', env: { OTEL_EXPORTER_OTLP_HEADERS: 'a=1' }, expected: {} },
    { name: 'the service name', env: { OTEL_SERVICE_NAME: 'edge' }, expected: { otlpServiceName: 'edge' } },
    { name: 'empty values are unset', env: { OTEL_EXPORTER_OTLP_ENDPOINT: ' ', OTEL_SERVICE_NAME: '' }, expected: {} },
    { name: 'OTEL_SDK_DISABLED=true ignores the endpoints', env: { OTEL_SDK_DISABLED: 'TRUE', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, expected: {} },
  ];
  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(otlpEnvDefaults(c.env), c.expected);
    });
  }

  test('flags win over the variables; a bad variable is refused like the flag', () => {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://from-env:4318', OTEL_SERVICE_NAME: 'env-name' };
    assert.equal(configFromFlags({}, env).otlp?.endpoint, 'http://from-env:4318/v1/traces');
    assert.equal(configFromFlags({}, env).otlp?.serviceName, 'env-name');
    const flagged = configFromFlags({ otlpEndpoint: ENDPOINT, otlpServiceName: 'flag-name' }, env);
    assert.equal(flagged.otlp?.endpoint, ENDPOINT);
    assert.equal(flagged.otlp?.serviceName, 'flag-name');
    assert.deepEqual(configFromFlags({ otlpEndpoint: ENDPOINT }, { OTEL_EXPORTER_OTLP_HEADERS: 'k=v' }).otlp?.headers, { k: 'v' }, 'the headers variable goes with the flag too');
    assert.deepEqual(configFromFlags({ otlpEndpoint: ENDPOINT, otlpHeaders: 'a=1' }, { OTEL_EXPORTER_OTLP_HEADERS: 'k=v' }).otlp?.headers, { a: '1' }, 'the flag wins');
    assert.equal(configFromFlags({}, { OTEL_EXPORTER_OTLP_HEADERS: 'k=v' }).otlp, null, 'a headers variable alone exports nothing and stops nothing');
    assert.throws(() => configFromFlags({}, { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'ftp://x' }), (err: Error & { exitCode?: number }) => /--otlp-endpoint/.test(err.message) && err.exitCode === 2);
  });
});
