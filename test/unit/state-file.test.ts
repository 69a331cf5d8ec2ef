import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import type { ConsulViews, KvEntry, ServiceInstance } from '../../src/core/types.ts';
import { documentId, type RawDocument } from '../../src/policy/documents.ts';
import { resolvePolicies } from '../../src/policy/resolve.ts';
import { buildSnapshot, type Snapshot } from '../../src/state/snapshot.ts';
import { decodeStateFile, encodeStateFile, MAX_STATE_FILE_BYTES, type StateFileMeta, type StateFileOwner } from '../../src/state/state-file.ts';
import { createLogger } from '../../src/core/logger.ts';
import { createMetrics } from '../../src/core/metrics.ts';
import { UpstreamPools } from '../../src/balancer/upstream-pools.ts';
import { JwtKeyCache } from '../../src/filters/auth.ts';
import { RateLimiterBackend } from '../../src/filters/rate-limit.ts';
import { ResilienceRegistry } from '../../src/resilience/registry.ts';
import { buildRuntime } from '../../src/runtime/runtime.ts';

const PREFIX = 'gateway/';
const OWNER: StateFileOwner = { kvPrefix: PREFIX, datacenter: null };
const META: StateFileMeta = { gatewayVersion: '0.0.0-test', consulAddress: 'http://127.0.0.1:8500', kvPrefix: PREFIX, datacenter: 'dc1', writtenAt: new Date('2026-12-03T09:00:00.000Z') };

function instance(id: string, service: string, port: number, tags: string[] = []): ServiceInstance {
  return { id, service, node: 'node-1', address: '127.0.0.1', port, tags, weights: { passing: 1, warning: 1 }, checks: [{ id: `service:${id}`, status: 'passing', serviceId: id }] };
}

function file(name: string, text: string, kind: 'policy' | 'route' = 'policy'): RawDocument {
  const id = documentId(kind, name);
  return { id, kind, name, origin: { kind: 'file', path: `/etc/cgw/${id}.yaml` }, text };
}

/** Tags with options, canary weights, a fabio-style host route, policies with durations, a static route document. */
function richSnapshot(): Snapshot {
  const kv: KvEntry[] = [{ key: `${PREFIX}canary/web`, value: '{"weights":{"blue":25,"green":75}}', modifyIndex: 7 }];
  const views: ConsulViews = {
    catalog: { web: ['urlprefix-/web strip=/web', 'urlprefix-shop.example.com/', 'blue', 'green'], api: ['urlprefix-/api proto=https tlsskipverify=true'] },
    health: new Map([
      ['web', [instance('web-1', 'web', 21001, ['blue']), instance('web-2', 'web', 21002, ['green'])]],
      ['api', [instance('api-1', 'api', 21003)]],
    ]),
    kv,
  };
  const policies = resolvePolicies(
    [
      file('defaults', JSON.stringify({ appliesTo: 'defaults', timeouts: { request: '30s' }, retries: { attempts: 2 } })),
      file('web', JSON.stringify({ appliesTo: { service: 'web' }, rateLimits: [{ name: 'ip', by: 'ip', limit: 10, window: '1s' }] })),
      file('legacy', 'path: /legacy\nstrip: /legacy\nupstreams:\n  - http://127.0.0.1:9000\n', 'route'),
    ],
    kv,
    PREFIX,
    undefined,
  );
  return buildSnapshot(views, { allowWarning: false, kvPrefix: PREFIX }, undefined, policies);
}

const snapshot = richSnapshot();
const text = encodeStateFile(snapshot, META);

/** The file's text with its snapshot replaced and the checksum made to match: only the structure check can refuse it. */
function withSnapshot(value: unknown): string {
  const envelope = JSON.parse(text) as Record<string, unknown>;
  const snapshotText = JSON.stringify(value);
  envelope.sha256 = createHash('sha256').update(snapshotText).digest('hex');
  envelope.snapshot = value;
  return JSON.stringify(envelope);
}

function refusal(input: string | Buffer, owner: StateFileOwner = OWNER): { reason: string; error: string; replaceable: boolean } {
  const decoded = decodeStateFile(input, owner);
  assert.equal(decoded.ok, false, 'expected the file to be refused');
  if (decoded.ok) throw new Error('unreachable');
  return decoded;
}

describe('state file envelope: round trip', () => {
  test('a rich snapshot comes back equal, with the envelope fields', () => {
    const decoded = decodeStateFile(text, OWNER);
    assert.ok(decoded.ok, decoded.ok ? '' : decoded.error);
    assert.deepEqual(decoded.snapshot, JSON.parse(JSON.stringify(snapshot)));
    assert.equal(decoded.snapshot.version, snapshot.version);
    assert.equal(decoded.envelope.format, 'cgw-state');
    assert.equal(decoded.envelope.formatVersion, 1);
    assert.equal(decoded.envelope.snapshotVersion, snapshot.version);
    assert.equal(decoded.envelope.writtenAt, '2026-12-03T09:00:00.000Z');
    assert.deepEqual(decoded.envelope.consul, { address: 'http://127.0.0.1:8500', datacenter: 'dc1' });
    assert.equal(decoded.envelope.kvPrefix, PREFIX);
    assert.ok(Object.keys(decoded.snapshot.services).length >= 3, 'web, api and the static service');
    assert.ok(decoded.snapshot.services.web?.canary, 'canary weights survive');
  });

  test('the snapshot read back compiles into a runtime that routes', async () => {
    const decoded = decodeStateFile(text, OWNER);
    assert.ok(decoded.ok);
    const logger = createLogger('silent');
    const metrics = createMetrics({ defaultMetrics: false });
    const pools = new UpstreamPools({ connectTimeoutMs: 1000, connectionsPerEndpoint: 1 });
    after(() => pools.closeAll(0));
    const runtime = buildRuntime(decoded.snapshot, undefined, {
      pools,
      metrics,
      pickerKind: 'round_robin',
      keys: new JwtKeyCache(),
      limiter: new RateLimiterBackend({ logger }),
      resilience: new ResilienceRegistry(metrics, logger),
      responseTimeoutMs: 30_000,
      connectTimeoutMs: 1000,
      logger,
    });
    assert.equal(runtime.router.match(undefined, '/web/x')?.service, 'web');
    assert.equal(runtime.router.match('shop.example.com', '/')?.service, 'web');
    assert.equal(runtime.router.match(undefined, '/legacy')?.service, 'static:legacy');
  });

  test('services named like Object.prototype members (constructor, toString) round-trip as plain services', () => {
    const views: ConsulViews = {
      catalog: { constructor: ['urlprefix-/c'], toString: ['urlprefix-/t'] },
      health: new Map([
        ['constructor', [instance('c-1', 'constructor', 21011)]],
        ['toString', [instance('t-1', 'toString', 21012)]],
      ]),
      kv: [],
    };
    const named = buildSnapshot(views, { allowWarning: false, kvPrefix: PREFIX });
    const decoded = decodeStateFile(encodeStateFile(named, META), OWNER);
    assert.ok(decoded.ok, decoded.ok ? '' : decoded.error);
    assert.equal(Object.hasOwn(decoded.snapshot.services, 'constructor'), true);
    assert.equal(decoded.snapshot.services['toString' as string]?.endpoints[0]?.port, 21012);
  });

  test('whitespace added by an editor is fine: the checksum is of the values', () => {
    const pretty = JSON.stringify(JSON.parse(text), null, 2);
    assert.equal(decodeStateFile(pretty, OWNER).ok, true);
  });

  test('bytes and text decode alike; a datacenter is checked only against --dc', () => {
    assert.equal(decodeStateFile(Buffer.from(text), OWNER).ok, true);
    assert.equal(decodeStateFile(text, { kvPrefix: PREFIX, datacenter: 'dc1' }).ok, true);
  });
});

describe('state file envelope: refused whole', () => {
  const envelope = (): Record<string, unknown> => JSON.parse(text) as Record<string, unknown>;
  const cases: { name: string; input: () => string | Buffer; owner?: StateFileOwner; reason: 'corrupt' | 'foreign'; error: RegExp; replaceable: boolean }[] = [
    { name: 'empty', input: () => '', reason: 'corrupt', error: /empty/, replaceable: false },
    { name: 'not JSON', input: () => 'routes: [/web]', reason: 'corrupt', error: /not JSON/, replaceable: false },
    { name: 'truncated', input: () => text.slice(0, Math.floor(text.length / 2)), reason: 'corrupt', error: /not JSON \(truncated\?\)/, replaceable: false },
    { name: 'truncated by one byte', input: () => text.trimEnd().slice(0, -1), reason: 'corrupt', error: /not JSON/, replaceable: false },
    {
      name: 'a value changed (checksum mismatch)',
      input: () => text.replace('"port":21001', '"port":21009'),
      reason: 'corrupt',
      error: /checksum mismatch/,
      replaceable: true,
    },
    { name: 'checksum field changed', input: () => JSON.stringify({ ...envelope(), sha256: '0'.repeat(64) }), reason: 'corrupt', error: /checksum mismatch/, replaceable: true },
    { name: 'checksum missing', input: () => JSON.stringify({ ...envelope(), sha256: undefined }), reason: 'corrupt', error: /envelope is not valid: sha256/, replaceable: true },
    { name: 'unknown envelope field', input: () => JSON.stringify({ ...envelope(), extra: 1 }), reason: 'corrupt', error: /envelope is not valid/, replaceable: true },
    { name: 'writtenAt not a time', input: () => JSON.stringify({ ...envelope(), writtenAt: 'yesterday' }), reason: 'corrupt', error: /writtenAt/, replaceable: true },
    { name: 'a JSON array', input: () => '[1,2,3]', reason: 'foreign', error: /not a cgw state file/, replaceable: false },
    { name: 'a JSON string', input: () => '"cgw-state"', reason: 'foreign', error: /not a cgw state file/, replaceable: false },
    { name: 'another format', input: () => JSON.stringify({ ...envelope(), format: 'fabio-state' }), reason: 'foreign', error: /not a cgw state file/, replaceable: false },
    { name: 'another format version', input: () => JSON.stringify({ ...envelope(), formatVersion: 2 }), reason: 'foreign', error: /format version 2; this gateway reads version 1/, replaceable: true },
    { name: 'format version missing', input: () => JSON.stringify({ ...envelope(), formatVersion: undefined }), reason: 'foreign', error: /format version missing/, replaceable: true },
    { name: 'another KV prefix', input: () => text, owner: { kvPrefix: 'other/', datacenter: null }, reason: 'foreign', error: /KV prefix "gateway\/", this gateway watches "other\/"/, replaceable: false },
    { name: 'another datacenter than --dc', input: () => text, owner: { kvPrefix: PREFIX, datacenter: 'dc2' }, reason: 'foreign', error: /datacenter "dc1".*"dc2"/, replaceable: false },
    {
      name: 'envelope names another snapshot version',
      input: () => JSON.stringify({ ...envelope(), snapshotVersion: 'ffffffffffffffff' }),
      reason: 'corrupt',
      error: /names snapshot ffffffffffffffff/,
      replaceable: true,
    },
    { name: '__proto__ in the envelope', input: () => text.replace('{"format"', '{"__proto__":{"polluted":1},"format"'), reason: 'corrupt', error: /__proto__/, replaceable: false },
    { name: '__proto__ in the snapshot (checksum made to match)', input: () => withSnapshot(JSON.parse(JSON.stringify(snapshot).replace('"services":{', '"services":{"__proto__":{"name":"x"},'))), reason: 'corrupt', error: /__proto__/, replaceable: false },
    { name: '__proto__ spelled with an escape', input: () => text.replace('{"format"', '{"\\u005f_proto__":{},"format"'), reason: 'corrupt', error: /__proto__/, replaceable: false },
    { name: 'structure: a service without endpoints', input: () => withSnapshot({ ...snapshot, services: { ...snapshot.services, web: { ...snapshot.services.web, endpoints: undefined } } }), reason: 'corrupt', error: /snapshot is not valid: services\.web\.endpoints/, replaceable: true },
    { name: 'structure: port out of range', input: () => withSnapshot(JSON.parse(JSON.stringify(snapshot).replace('"port":21001', '"port":70000'))), reason: 'corrupt', error: /port/, replaceable: true },
    { name: 'structure: a route path without /', input: () => withSnapshot({ ...snapshot, routes: snapshot.routes.map((r, i) => (i === 0 ? { ...r, path: 'web' } : r)) }), reason: 'corrupt', error: /routes\.0\.path/, replaceable: true },
    { name: 'structure: a service under another name', input: () => withSnapshot({ ...snapshot, services: { ...snapshot.services, impostor: snapshot.services.web } }), reason: 'corrupt', error: /filed under a name other than its own/, replaceable: true },
    { name: 'structure: constructor as a service (no prototype value)', input: () => withSnapshot({ ...snapshot, services: { ...snapshot.services, constructor: 'x' } }), reason: 'corrupt', error: /services\.constructor/, replaceable: true },
    { name: 'structure: snapshot is null', input: () => withSnapshot(null), reason: 'corrupt', error: /snapshot is not valid/, replaceable: true },
    {
      name: 'nested deeper than the stack (checksum made to match)',
      input: () => {
        const snapshotText = JSON.stringify(snapshot).replace('"problems":[]', `"problems":[${'['.repeat(100_000)}${']'.repeat(100_000)}]`);
        const head = JSON.parse(text) as Record<string, unknown>;
        delete head.snapshot;
        head.sha256 = createHash('sha256').update(snapshotText).digest('hex');
        return `${JSON.stringify(head).slice(0, -1)},"snapshot":${snapshotText}}`;
      },
      reason: 'corrupt',
      error: /nested too deeply/,
      replaceable: false,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const r = refusal(c.input(), c.owner);
      assert.equal(r.reason, c.reason, r.error);
      assert.match(r.error, c.error);
      assert.equal(r.replaceable, c.replaceable, 'whether the writer may replace it');
    });
  }

  test('a file over the size bound is refused before it is parsed', () => {
    const huge = Buffer.alloc(MAX_STATE_FILE_BYTES + 1, 0x20);
    const r = refusal(huge);
    assert.equal(r.reason, 'corrupt');
    assert.match(r.error, /more than the 67108864/);
  });

  test('no prototype was touched by any refused file', () => {
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });
});

describe('--state-file flags', () => {
  test('parsed with the other flags; a bad wait names the flag', async () => {
    const { formatConfigError, parseGatewayConfig } = await import('../../src/config.ts');
    const { ZodError } = await import('zod');
    const config = parseGatewayConfig({ stateFile: '/var/lib/cgw/state.json', stateFileWait: '2s' });
    assert.equal(config.stateFile, '/var/lib/cgw/state.json');
    assert.equal(config.stateFileWait, 2_000);
    assert.equal(parseGatewayConfig({}).stateFile, undefined, 'off by default');
    for (const bad of [{ stateFileWait: 'soon' }, { stateFileWait: '11m' }, { stateFile: '' }]) {
      try {
        parseGatewayConfig(bad);
        assert.fail(`${JSON.stringify(bad)} accepted`);
      } catch (err) {
        assert.ok(err instanceof ZodError);
        assert.match(formatConfigError(err), /^--state-file(-wait)?: /);
      }
    }
  });
});
