import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KvEntry, Problem } from '../../src/core/types.ts';
import { generateApiKey } from '../../src/policy/consumers.ts';
import { documentId, documentOfFile, documentOfKvKey, kvKeyOfDocument, parseDocumentText, readPolicyDir, type RawDocument } from '../../src/policy/documents.ts';
import { DEFAULT_DISCOVERY, DEFAULT_OUTLIER, DEFAULT_RETRIES, DEFAULT_WEBSOCKET, indexPolicies, routePolicy, servicePolicy } from '../../src/policy/effective.ts';
import { resolvePolicies, type DocumentInForce, type PolicySet } from '../../src/policy/resolve.ts';

const PREFIX = 'gateway/';

function file(name: string, text: string | null, kind: 'policy' | 'route' = 'policy'): RawDocument {
  const id = documentId(kind, name);
  return { id, kind, name, origin: { kind: 'file', path: `/etc/cgw/${id}.yaml` }, text };
}
const kv = (key: string, value: string | null, modifyIndex = 1): KvEntry => ({ key: `${PREFIX}${key}`, value, modifyIndex });
const json = (value: unknown): string => JSON.stringify(value);

function doc(set: PolicySet, id: string): DocumentInForce | undefined {
  return set.documents.find((d) => d.id === id);
}
function problemsOf(set: PolicySet, subject: string): Problem[] {
  return set.problems.filter((p) => p.subject === subject || p.subject === `${PREFIX}${subject}`);
}
/** The `timeouts.connect` of a policy in force: a cheap way to tell versions apart. */
function connectOf(set: PolicySet, id: string): number | undefined {
  const d = doc(set, id);
  return d?.parsed.kind === 'policy' ? d.parsed.doc.timeouts?.connect : undefined;
}

const SERVICE_A = (connect: string) => json({ appliesTo: { service: 'a' }, timeouts: { connect } });
const SERVICE_A_YAML = (connect: string) => `appliesTo:\n  service: a\ntimeouts:\n  connect: ${connect}\n`;
const INVALID = json({ appliesTo: { service: 'a' }, timeouts: { connect: 'soon' } });

describe('parseDocumentText', () => {
  test('JSON and YAML with the same content parse to the same document', () => {
    const fromJson = parseDocumentText(SERVICE_A('1s'), 'policy');
    const fromYaml = parseDocumentText(`# a comment\n${SERVICE_A_YAML('1s')}`, 'policy');
    assert.ok(fromJson.ok && fromYaml.ok);
    assert.deepEqual(fromJson.value, fromYaml.value);
    assert.deepEqual(fromJson.value, { kind: 'policy', doc: { appliesTo: { service: 'a' }, timeouts: { connect: 1000 } } });
  });

  test('a route document', () => {
    const parsed = parseDocumentText('path: /legacy\nupstreams: [http://127.0.0.1:9000]\n', 'route');
    assert.deepEqual(parsed, { ok: true, value: { kind: 'route', doc: { path: '/legacy', upstreams: [{ url: 'http://127.0.0.1:9000', weight: 1 }] } } });
  });

  test('the kind decides the schema: a route document is not a policy', () => {
    const parsed = parseDocumentText('path: /legacy\nservice: billing\n', 'policy');
    assert.equal(parsed.ok, false);
    if (!parsed.ok) assert.match(parsed.error, /appliesTo/);
  });

  const rejected: { name: string; text: string | null; error: string | RegExp }[] = [
    { name: 'null (KV key without value)', text: null, error: 'document is empty' },
    { name: 'empty', text: '', error: 'document is empty' },
    { name: 'whitespace', text: ' \n\t\n', error: 'document is empty' },
    { name: 'only a comment', text: '# nothing here\n', error: 'document must be an object' },
    { name: 'a list', text: '- appliesTo: defaults\n', error: 'document must be an object' },
    { name: 'a JSON array', text: '[]', error: 'document must be an object' },
    { name: 'a number', text: '42', error: 'document must be an object' },
    { name: 'a string', text: 'appliesTo', error: 'document must be an object' },
    { name: 'YAML alias (billion laughs)', text: 'a: &x [1, 2]\nappliesTo: defaults\nb: *x\n', error: /^not valid JSON or YAML.*[Aa]lias/ },
    { name: 'truncated JSON names line and column', text: '{\n  "appliesTo": "defaults",\n  "timeouts": {\n', error: /^not valid JSON or YAML \(line \d+, column \d+\): / },
    { name: 'YAML syntax error names its line', text: 'appliesTo: defaults\ntimeouts:\n  connect: [1s\nretries: {}\n', error: /^not valid JSON or YAML \(line 4, column 1\): / },
    { name: 'duplicate key names its line', text: 'appliesTo: defaults\ndescription: a\ndescription: b\n', error: /^not valid JSON or YAML \(line 3, column 1\): .*unique/ },
    { name: 'schema error has the field path', text: 'appliesTo: defaults\nrateLimits:\n  - {name: a, by: ip, limit: 1, window: soon}\n', error: 'rateLimits.0.window: not a duration: "soon" (use e.g. 500ms, 30s, 5m)' },
    { name: 'larger than 512 KiB', text: `appliesTo: defaults\ndescription: ${'x'.repeat(600 * 1024)}\n`, error: /larger than 524288 bytes/ },
  ];
  for (const { name, text, error } of rejected) {
    test(`rejected: ${name}`, () => {
      const parsed = parseDocumentText(text, 'policy');
      assert.equal(parsed.ok, false);
      if (!parsed.ok) {
        if (typeof error === 'string') assert.equal(parsed.error, error);
        else assert.match(parsed.error, error);
      }
    });
  }
});

describe('documentOfKvKey / kvKeyOfDocument', () => {
  const cases: { key: string; expect: ReturnType<typeof documentOfKvKey> }[] = [
    { key: 'gateway/policies/defaults', expect: { kind: 'policy', name: 'defaults' } },
    { key: 'gateway/routes/legacy-billing', expect: { kind: 'route', name: 'legacy-billing' } },
    { key: 'gateway/policies/', expect: undefined },
    { key: 'gateway/policies/a/b', expect: undefined },
    { key: 'gateway/canary/web', expect: undefined },
    { key: 'gateway/consumers/acme', expect: undefined },
    { key: 'other/policies/defaults', expect: undefined },
    { key: 'gateway/policiesx/a', expect: undefined },
  ];
  for (const { key, expect } of cases) {
    test(`${key} → ${expect ? `${expect.kind} ${expect.name}` : 'not a document'}`, () => {
      assert.deepEqual(documentOfKvKey(key, PREFIX), expect);
    });
  }
  test('kvKeyOfDocument is the inverse', () => {
    assert.equal(kvKeyOfDocument('policy', 'defaults', PREFIX), 'gateway/policies/defaults');
    assert.equal(kvKeyOfDocument('route', 'inventory', PREFIX), 'gateway/routes/inventory');
    assert.deepEqual(documentOfKvKey(kvKeyOfDocument('route', 'inventory', PREFIX), PREFIX), { kind: 'route', name: 'inventory' });
  });
});

describe('documentOfFile', () => {
  const root = '/etc/cgw/policies';
  const cases: { rel: string; expect: ReturnType<typeof documentOfFile> | RegExp }[] = [
    { rel: 'defaults.yaml', expect: { kind: 'policy', name: 'defaults' } },
    { rel: 'api-jwt.yml', expect: { kind: 'policy', name: 'api-jwt' } },
    { rel: 'partner.keys.JSON', expect: { kind: 'policy', name: 'partner.keys' } },
    { rel: 'routes/legacy.yaml', expect: { kind: 'route', name: 'legacy' } },
    { rel: 'notes.txt', expect: /^notes\.txt: not a \.json, \.yaml or \.yml file$/ },
    { rel: '.hidden.yaml', expect: /^\.hidden\.yaml: document names are letters, digits/ },
    { rel: 'with space.yaml', expect: /^with space\.yaml: document names are/ },
    { rel: 'other/a.yaml', expect: /^other\/a\.yaml: policy files live in the directory itself or in routes\/$/ },
    { rel: 'routes/deep/a.yaml', expect: /^routes\/deep\/a\.yaml: policy files live/ },
  ];
  for (const { rel, expect } of cases) {
    test(rel, () => {
      const got = documentOfFile(root, join(root, rel));
      if (expect instanceof RegExp) {
        assert.ok('error' in got, `expected an error, got ${JSON.stringify(got)}`);
        assert.match(got.error, expect);
      } else {
        assert.deepEqual(got, expect);
      }
    });
  }
});

describe('readPolicyDir', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cgw-policies-'));
    mkdirSync(join(dir, 'routes', 'nested'), { recursive: true });
    mkdirSync(join(dir, 'archive'));
    writeFileSync(join(dir, 'defaults.yaml'), 'appliesTo: defaults\n');
    writeFileSync(join(dir, 'svc.json'), SERVICE_A('1s'));
    writeFileSync(join(dir, 'svc.yaml'), SERVICE_A_YAML('2s'));
    writeFileSync(join(dir, 'bad name.yaml'), 'appliesTo: defaults\n');
    writeFileSync(join(dir, 'README.md'), '# not a document\n');
    writeFileSync(join(dir, 'broken.yaml'), 'appliesTo: [\n');
    writeFileSync(join(dir, 'routes', 'legacy.yaml'), 'path: /legacy\nupstreams: [http://127.0.0.1:9000]\n');
    writeFileSync(join(dir, 'routes', 'notes.txt'), 'x');
    writeFileSync(join(dir, 'routes', 'nested', 'deep.yaml'), 'path: /deep\nservice: deep\n');
    writeFileSync(join(dir, 'archive', 'old.yaml'), 'appliesTo: defaults\n');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('documents at the top and in routes/, with their file origin; text read verbatim', () => {
    const { documents } = readPolicyDir(dir);
    assert.deepEqual(
      documents.map((d) => [d.id, d.kind, d.name]).sort(),
      [
        ['policies/broken', 'policy', 'broken'],
        ['policies/defaults', 'policy', 'defaults'],
        ['policies/svc', 'policy', 'svc'],
        ['routes/legacy', 'route', 'legacy'],
      ],
    );
    const defaults = documents.find((d) => d.id === 'policies/defaults');
    assert.deepEqual(defaults?.origin, { kind: 'file', path: join(dir, 'defaults.yaml') });
    assert.equal(defaults?.text, 'appliesTo: defaults\n');
  });

  test('a bad name and two files with one id are reported; other files and directories are ignored', () => {
    const { errors } = readPolicyDir(dir);
    assert.deepEqual(
      errors.map((e) => [e.path, e.error]),
      [
        [join(dir, 'bad name.yaml'), 'bad name.yaml: document names are letters, digits, _ . - (up to 128)'],
        [join(dir, 'svc.yaml'), `same document id policies/svc as ${join(dir, 'svc.json')}; ignored`],
      ],
    );
  });

  test('a syntax error is not a read error: it surfaces when resolved', () => {
    const set = resolvePolicies(readPolicyDir(dir).documents, [], PREFIX, undefined);
    assert.equal(doc(set, 'policies/broken'), undefined);
    assert.deepEqual(
      set.problems.map((p) => [p.subject, p.keptLastGood]),
      [['policies/broken', false]],
    );
    assert.match(set.problems[0]?.message ?? '', new RegExp(`^file ${join(dir, 'broken.yaml').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} rejected: not valid JSON or YAML \\(line \\d+`));
  });
});

describe('resolvePolicies: which version is in force', () => {
  test('valid files only: every document in force, no problems', () => {
    const set = resolvePolicies([file('defaults', 'appliesTo: defaults\n'), file('a', SERVICE_A('1s')), file('r', 'path: /r\nservice: r\n', 'route')], [], PREFIX, undefined);
    assert.deepEqual(set.documents.map((d) => d.id), ['policies/a', 'policies/defaults', 'routes/r']);
    assert.deepEqual(set.problems, []);
  });

  test('a KV document wins over the file with the same id', () => {
    const set = resolvePolicies([file('a', SERVICE_A('1s'))], [kv('policies/a', SERVICE_A('2s'), 7)], PREFIX, undefined);
    assert.equal(connectOf(set, 'policies/a'), 2000);
    assert.deepEqual(doc(set, 'policies/a')?.origin, { kind: 'kv', key: 'gateway/policies/a', modifyIndex: 7 });
    assert.deepEqual(set.status, [
      {
        id: 'policies/a',
        kind: 'policy',
        name: 'a',
        inForce: { origin: { kind: 'kv', key: 'gateway/policies/a', modifyIndex: 7 }, version: doc(set, 'policies/a')?.version },
        rejected: null,
        overriddenFile: '/etc/cgw/policies/a.yaml',
      },
    ]);
  });

  test('an invalid KV version keeps the version in force before it', () => {
    const files = [file('a', SERVICE_A('1s'))];
    const v1 = resolvePolicies(files, [kv('policies/a', SERVICE_A('2s'), 7)], PREFIX, undefined);
    const v2 = resolvePolicies(files, [kv('policies/a', INVALID, 8)], PREFIX, v1);
    assert.equal(connectOf(v2, 'policies/a'), 2000, 'the previous KV version, not the file');
    assert.deepEqual(doc(v2, 'policies/a'), doc(v1, 'policies/a'));
    assert.deepEqual(problemsOf(v2, 'policies/a'), [
      {
        kind: 'policy',
        subject: 'policies/a',
        message: 'KV gateway/policies/a (ModifyIndex 8) rejected: timeouts.connect: not a duration: "soon" (use e.g. 500ms, 30s, 5m)',
        keptLastGood: true,
      },
    ]);
    const status = v2.status.find((s) => s.id === 'policies/a');
    assert.deepEqual(status?.inForce?.origin, { kind: 'kv', key: 'gateway/policies/a', modifyIndex: 7 });
    assert.deepEqual(status?.rejected, { origin: { kind: 'kv', key: 'gateway/policies/a', modifyIndex: 8 }, error: 'timeouts.connect: not a duration: "soon" (use e.g. 500ms, 30s, 5m)' });
  });

  test('the kept version survives several bad writes in a row', () => {
    const v1 = resolvePolicies([], [kv('policies/a', SERVICE_A('2s'), 7)], PREFIX, undefined);
    const v2 = resolvePolicies([], [kv('policies/a', INVALID, 8)], PREFIX, v1);
    const v3 = resolvePolicies([], [kv('policies/a', 'appliesTo: [', 9)], PREFIX, v2);
    assert.equal(connectOf(v3, 'policies/a'), 2000);
    assert.equal(problemsOf(v3, 'policies/a')[0]?.keptLastGood, true);
    const v4 = resolvePolicies([], [kv('policies/a', SERVICE_A('3s'), 10)], PREFIX, v3);
    assert.equal(connectOf(v4, 'policies/a'), 3000, 'a valid write takes over again');
    assert.deepEqual(v4.problems, []);
  });

  test('first sight of an invalid KV document falls back to the file it overrides', () => {
    const set = resolvePolicies([file('a', SERVICE_A('1s'))], [kv('policies/a', INVALID, 8)], PREFIX, undefined);
    assert.equal(connectOf(set, 'policies/a'), 1000);
    assert.deepEqual(doc(set, 'policies/a')?.origin, { kind: 'file', path: '/etc/cgw/policies/a.yaml' });
    assert.equal(problemsOf(set, 'policies/a')[0]?.keptLastGood, true);
    assert.equal(set.status[0]?.overriddenFile, '/etc/cgw/policies/a.yaml');
  });

  test('first sight of an invalid KV document without a file: nothing in force, keptLastGood false', () => {
    const set = resolvePolicies([], [kv('policies/a', INVALID, 8)], PREFIX, undefined);
    assert.equal(doc(set, 'policies/a'), undefined);
    assert.equal(problemsOf(set, 'policies/a')[0]?.keptLastGood, false);
    assert.deepEqual(set.status, [{ id: 'policies/a', kind: 'policy', name: 'a', inForce: null, rejected: { origin: { kind: 'kv', key: 'gateway/policies/a', modifyIndex: 8 }, error: 'timeouts.connect: not a duration: "soon" (use e.g. 500ms, 30s, 5m)' }, overriddenFile: null }]);
  });

  test('an invalid file is rejected; a valid KV document of the same id still applies', () => {
    const set = resolvePolicies([file('a', INVALID)], [kv('policies/a', SERVICE_A('2s'), 3)], PREFIX, undefined);
    assert.equal(connectOf(set, 'policies/a'), 2000);
    assert.deepEqual(set.problems, []);
  });

  test('deleting the KV document goes back to the file', () => {
    const files = [file('a', SERVICE_A('1s'))];
    const v1 = resolvePolicies(files, [kv('policies/a', SERVICE_A('2s'), 7)], PREFIX, undefined);
    const v2 = resolvePolicies(files, [], PREFIX, v1);
    assert.equal(connectOf(v2, 'policies/a'), 1000);
    assert.deepEqual(v2.status[0]?.inForce?.origin, { kind: 'file', path: '/etc/cgw/policies/a.yaml' });
    assert.equal(v2.status[0]?.overriddenFile, null);
  });

  test('deleting a KV document without a file removes it', () => {
    const v1 = resolvePolicies([], [kv('policies/a', SERVICE_A('2s'), 7)], PREFIX, undefined);
    const v2 = resolvePolicies([], [], PREFIX, v1);
    assert.deepEqual(v2.documents, []);
    assert.deepEqual(v2.status, []);
  });

  test('one bad document does not affect another', () => {
    const files = [file('a', SERVICE_A('1s')), file('b', json({ appliesTo: { service: 'b' }, timeouts: { connect: '1s' } }))];
    const v1 = resolvePolicies(files, [], PREFIX, undefined);
    const v2 = resolvePolicies(files, [kv('policies/a', INVALID, 4), kv('policies/b', json({ appliesTo: { service: 'b' }, timeouts: { connect: '5s' } }), 5)], PREFIX, v1);
    assert.equal(connectOf(v2, 'policies/a'), 1000);
    assert.equal(connectOf(v2, 'policies/b'), 5000);
    assert.deepEqual(v2.problems.map((p) => p.subject), ['policies/a']);
  });

  test('the version is a hash of the parsed document: formatting and JSON/YAML do not change it', () => {
    const a = resolvePolicies([file('a', SERVICE_A('1s'))], [], PREFIX, undefined);
    const b = resolvePolicies([file('a', `# reformatted\n${SERVICE_A_YAML('1000ms')}`)], [], PREFIX, undefined);
    const c = resolvePolicies([file('a', SERVICE_A('2s'))], [], PREFIX, undefined);
    assert.equal(doc(a, 'policies/a')?.version, doc(b, 'policies/a')?.version);
    assert.notEqual(doc(a, 'policies/a')?.version, doc(c, 'policies/a')?.version);
  });

  test('two policies for the same target: the first id wins, the other is a problem', () => {
    const set = resolvePolicies(
      [file('a-first', SERVICE_A('1s')), file('b-second', SERVICE_A('2s')), file('d1', 'appliesTo: defaults\n'), file('d2', 'appliesTo: defaults\n')],
      [],
      PREFIX,
      undefined,
    );
    assert.deepEqual(set.documents.map((d) => d.id), ['policies/a-first', 'policies/d1']);
    assert.deepEqual(set.problems, [
      { kind: 'policy', subject: 'policies/b-second', message: 'service a already has policy policies/a-first (first by name wins); this document is not applied' },
      { kind: 'policy', subject: 'policies/d2', message: 'defaults already has policy policies/d1 (first by name wins); this document is not applied' },
    ]);
  });

  test('route policies conflict per route id; route documents never conflict with policies', () => {
    const set = resolvePolicies(
      [file('r1', json({ appliesTo: { route: '/x' } })), file('r2', json({ appliesTo: { route: '/x' } })), file('r3', json({ appliesTo: { route: 'h.example/x' } })), file('x', 'path: /x\nservice: x\n', 'route')],
      [],
      PREFIX,
      undefined,
    );
    assert.deepEqual(set.documents.map((d) => d.id), ['policies/r1', 'policies/r3', 'routes/x']);
    assert.deepEqual(set.problems.map((p) => p.subject), ['policies/r2']);
  });

  test('a KV value under another folder is not a document', () => {
    const set = resolvePolicies([], [kv('canary/web', '{"weights":{"v1":100}}'), kv('policies/', null), kv('policies/a/b', SERVICE_A('1s'))], PREFIX, undefined);
    assert.deepEqual(set, { documents: [], status: [], consumers: {}, problems: [], held: [], kvResets: 0, vanished: [] });
  });
});

describe('resolvePolicies: consumers', () => {
  const acme = generateApiKey('acme');
  const RECORD = json({ keyHash: acme.keyHash, plan: 'gold', scopes: ['orders:read'] });

  test('a valid record is in force with its ModifyIndex', () => {
    const set = resolvePolicies([], [kv('consumers/acme', RECORD, 12)], PREFIX, undefined);
    assert.deepEqual(set.consumers, { acme: { id: 'acme', modifyIndex: 12, record: { keyHash: acme.keyHash, plan: 'gold', scopes: ['orders:read'] } } });
    assert.deepEqual(set.problems, []);
  });

  test('an invalid record keeps the previous one and records a problem', () => {
    const v1 = resolvePolicies([], [kv('consumers/acme', RECORD, 12)], PREFIX, undefined);
    const v2 = resolvePolicies([], [kv('consumers/acme', json({ keyHash: 'md5:abc' }), 13)], PREFIX, v1);
    assert.deepEqual(v2.consumers.acme, v1.consumers.acme);
    assert.deepEqual(v2.problems, [
      { kind: 'consumer', subject: 'gateway/consumers/acme', message: 'invalid consumer record at ModifyIndex 13: keyHash: keyHash is sha256:<64 hex digits>', keptLastGood: true },
    ]);
  });

  const invalid: { name: string; value: string | null; error: RegExp }[] = [
    { name: 'empty', value: null, error: /: value is empty$/ },
    { name: 'not JSON (YAML is not accepted for consumers)', value: `keyHash: ${acme.keyHash}\n`, error: /: not JSON \(consumer records are written by/ },
    { name: 'unknown field', value: json({ keyHash: acme.keyHash, key: 'secret' }), error: /: Unrecognized key: "key"$/ },
  ];
  for (const { name, value, error } of invalid) {
    test(`an invalid record seen first is not in force: ${name}`, () => {
      const set = resolvePolicies([], [kv('consumers/acme', value, 3)], PREFIX, undefined);
      assert.deepEqual(set.consumers, {});
      assert.equal(set.problems.length, 1);
      assert.equal(set.problems[0]?.keptLastGood, false);
      assert.match(set.problems[0]?.message ?? '', error);
    });
  }

  for (const key of ['consumers/Acme', 'consumers/a/b', 'consumers/-x']) {
    test(`a bad consumer id is ignored and reported: ${key}`, () => {
      const set = resolvePolicies([], [kv(key, RECORD), kv('consumers/acme', RECORD)], PREFIX, undefined);
      assert.deepEqual(Object.keys(set.consumers), ['acme']);
      assert.deepEqual(set.problems, [{ kind: 'consumer', subject: `${PREFIX}${key}`, message: 'consumer ids are 1-64 lower-case letters, digits and -; key ignored' }]);
    });
  }

  test('deleting a consumer removes it', () => {
    const v1 = resolvePolicies([], [kv('consumers/acme', RECORD, 12)], PREFIX, undefined);
    assert.deepEqual(resolvePolicies([], [], PREFIX, v1).consumers, {});
  });

  // A "folder" made in the Consul UI is a key ending in / with no value (Consul docs, KV store:
  // keys ending in / are shown as folders). It holds no consumer and should not be a problem.
  test('the consumers/ folder key itself is not a problem', () => {
    const set = resolvePolicies([], [kv('consumers/', null), kv('consumers/acme', RECORD)], PREFIX, undefined);
    assert.deepEqual(set.problems, []);
  });
});

describe('effective policies: inheritance route → service → defaults', () => {
  const DEFAULTS = {
    appliesTo: 'defaults',
    timeouts: { connect: '1s', request: '30s' },
    retries: { attempts: 2 },
    auth: { methods: ['apiKey'] },
    limits: { maxBodyBytes: 1000 },
    outlierDetection: { consecutiveFailures: 9 },
    circuitBreaker: { minRequests: 50 },
  };
  const SERVICE = {
    appliesTo: { service: 'payments' },
    timeouts: { connect: '2s' },
    rateLimits: [{ name: 'svc', by: 'ip', limit: 5, window: '1s' }],
    discovery: { mode: 'poll', interval: '10s' },
  };
  const ROUTE = { appliesTo: { route: '/pay' }, auth: { methods: [] }, authorize: { scopes: ['pay'] } };
  const set = resolvePolicies([file('defaults', json(DEFAULTS)), file('payments', json(SERVICE)), file('pay-route', json(ROUTE))], [], PREFIX, undefined);
  const index = indexPolicies(set);

  test('indexPolicies sorts documents by target', () => {
    assert.equal(index.defaults?.id, 'policies/defaults');
    assert.deepEqual([...index.services.keys()], ['payments']);
    assert.deepEqual([...index.routes.keys()], ['/pay']);
  });

  test('a route with its own document: each section from the most specific document, named in sources', () => {
    const p = routePolicy(index, 'payments', '/pay');
    assert.deepEqual(p.auth?.methods, [], 'route: public, although defaults require an API key');
    assert.deepEqual(p.authorize, { scopes: ['pay'], claims: {} });
    assert.deepEqual(p.rateLimits.map((r) => r.name), ['svc']);
    assert.deepEqual(p.timeouts, { connect: 2000 }, 'taken whole from the service: request from defaults is NOT merged in');
    assert.equal(p.retries.attempts, 2);
    assert.deepEqual(p.limits, { maxBodyBytes: 1000 });
    assert.deepEqual(p.sources, {
      auth: 'policies/pay-route',
      authorize: 'policies/pay-route',
      rateLimits: 'policies/payments',
      timeouts: 'policies/payments',
      retries: 'policies/defaults',
      limits: 'policies/defaults',
    });
  });

  test('another route of the same service: service, then defaults', () => {
    const p = routePolicy(index, 'payments', '/payments');
    assert.deepEqual(p.auth?.methods, ['apiKey']);
    assert.equal(p.authorize, null);
    assert.deepEqual(p.sources, { auth: 'policies/defaults', rateLimits: 'policies/payments', timeouts: 'policies/payments', retries: 'policies/defaults', limits: 'policies/defaults' });
  });

  test('a route of another service: defaults only', () => {
    const p = routePolicy(index, 'web', '/web');
    assert.deepEqual(p.timeouts, { connect: 1000, request: 30_000 });
    assert.deepEqual(p.rateLimits, []);
    assert.equal(p.sources.timeouts, 'policies/defaults');
  });

  test('a route policy is keyed by the route id, host included', () => {
    const hosted = indexPolicies(resolvePolicies([file('h', json({ appliesTo: { route: 'shop.example.com/pay' }, timeouts: { request: '3s' } }))], [], PREFIX, undefined));
    assert.deepEqual(routePolicy(hosted, 'payments', 'shop.example.com/pay').timeouts, { request: 3000 });
    assert.deepEqual(routePolicy(hosted, 'payments', '/pay').timeouts, {});
  });

  test('no documents: built-in defaults, empty sources', () => {
    const empty = indexPolicies(resolvePolicies([], [], PREFIX, undefined));
    assert.deepEqual(routePolicy(empty, 'web', '/web'), { auth: null, authorize: null, rateLimits: [], timeouts: {}, retries: DEFAULT_RETRIES, limits: {}, hsts: null, redirectHttps: false, websocket: DEFAULT_WEBSOCKET, mirror: null, cache: null, sources: {} });
    const svc = servicePolicy(empty, 'web');
    assert.deepEqual(svc.outlierDetection, DEFAULT_OUTLIER);
    assert.equal(svc.circuitBreaker, null);
    assert.deepEqual(svc.discovery, DEFAULT_DISCOVERY);
    assert.deepEqual(svc.sources, {});
  });

  test('built-in defaults: one immediate retry of connect failures and resets, outlier detection on, watch', () => {
    assert.equal(DEFAULT_RETRIES.attempts, 1);
    assert.deepEqual(DEFAULT_RETRIES.on, ['connect-failure', 'reset']);
    assert.deepEqual(DEFAULT_RETRIES.backoff, { base: 0, max: 0 });
    assert.equal(DEFAULT_RETRIES.maxBodyBytes, 0);
    assert.equal(DEFAULT_RETRIES.nonIdempotent, false);
    assert.equal(DEFAULT_OUTLIER.enabled, true);
    assert.equal(DEFAULT_OUTLIER.consecutiveFailures, 5);
    assert.deepEqual(DEFAULT_DISCOVERY, { mode: 'watch', interval: 30_000 });
  });

  test('service policy: service sections, then defaults', () => {
    const p = servicePolicy(index, 'payments');
    assert.equal(p.outlierDetection.consecutiveFailures, 9);
    assert.equal(p.circuitBreaker?.minRequests, 50);
    assert.deepEqual(p.discovery, { mode: 'poll', interval: 10_000 });
    assert.equal(p.sources.outlierDetection, 'policies/defaults');
    assert.equal(p.sources.circuitBreaker, 'policies/defaults');
    assert.equal(p.sources.discovery, 'policies/payments');
    assert.deepEqual(servicePolicy(index, 'web').discovery, DEFAULT_DISCOVERY);
  });

  test('a circuit breaker with enabled: false is null, and it switches off the one in defaults', () => {
    const withOff = indexPolicies(resolvePolicies([file('defaults', json(DEFAULTS)), file('web', json({ appliesTo: { service: 'web' }, circuitBreaker: { enabled: false } }))], [], PREFIX, undefined));
    const p = servicePolicy(withOff, 'web');
    assert.equal(p.circuitBreaker, null);
    assert.equal(p.sources.circuitBreaker, 'policies/web');
    assert.equal(servicePolicy(withOff, 'other').circuitBreaker?.minRequests, 50);
  });

  test('outlier detection with enabled: false is kept as a disabled section', () => {
    const off = indexPolicies(resolvePolicies([file('web', json({ appliesTo: { service: 'web' }, outlierDetection: { enabled: false } }))], [], PREFIX, undefined));
    assert.equal(servicePolicy(off, 'web').outlierDetection.enabled, false);
  });

  test('a rejected document contributes nothing: its sections come from the next document', () => {
    const v = resolvePolicies([file('defaults', json(DEFAULTS)), file('payments', json({ ...SERVICE, timeouts: { connect: 'soon' } }))], [], PREFIX, undefined);
    const p = routePolicy(indexPolicies(v), 'payments', '/payments');
    assert.deepEqual(p.timeouts, { connect: 1000, request: 30_000 });
    assert.deepEqual(p.rateLimits, []);
  });
});

test('a consumer value that is not JSON is reported without quoting it (it may be a pasted key)', () => {
  const pasted = `cgw_acme_${'ab'.repeat(32)}`;
  const set = resolvePolicies([], [{ key: 'gateway/consumers/acme', value: pasted, modifyIndex: 4 }], 'gateway/', undefined);
  assert.equal(set.problems.length, 1);
  assert.ok(!(set.problems[0]?.message ?? '').includes('cgw_acme'), set.problems[0]?.message);
});

describe('resolvePolicies: a rejected document with no good version holds its target', () => {
  const P = 'gateway/';
  const entry = (name: string, value: string, modifyIndex = 1) => ({ key: `${P}policies/${name}`, value, modifyIndex });

  test('a readable appliesTo is held, and the problem says the routes answer 503', () => {
    const set = resolvePolicies([], [entry('pay', 'appliesTo: {service: payments}\nauth: {methods: [jwt]}\n')], P, undefined);
    assert.deepEqual(set.held, [{ document: 'policies/pay', target: { service: 'payments' } }]);
    assert.match(set.problems[0]?.message ?? '', /routes of service "payments" answer 503/);
  });

  test('route targets are normalised like route ids; defaults hold every route', () => {
    const set = resolvePolicies([], [entry('r', '{"appliesTo": {"route": "/api/"}, "limits": 5}'), entry('d', '{"appliesTo": "defaults", "bogus": 1}')], P, undefined);
    assert.deepEqual(set.held, [
      { document: 'policies/d', target: 'defaults' },
      { document: 'policies/r', target: { route: '/api' } },
    ]);
  });

  test('nothing is held while a good version is in force, or when the target cannot be read', () => {
    const good = resolvePolicies([], [entry('pay', '{"appliesTo": {"service": "payments"}, "limits": {"maxBodyBytes": 1}}', 1)], P, undefined);
    const broken = resolvePolicies([], [entry('pay', '{"appliesTo": {"service": "payments"}, "limits": 5}', 2)], P, good);
    assert.deepEqual(broken.held, []);
    assert.equal(broken.documents.length, 1);
    assert.deepEqual(resolvePolicies([], [entry('x', 'not: [valid')], P, undefined).held, []);
  });

  test('a document seen before is not parsed again: the in-force object is reused as is', () => {
    const first = resolvePolicies([], [entry('pay', '{"appliesTo": {"service": "payments"}, "limits": {"maxBodyBytes": 1}}', 7)], P, undefined);
    const again = resolvePolicies([], [entry('pay', '{"appliesTo": {"service": "payments"}, "limits": {"maxBodyBytes": 1}}', 7)], P, first);
    assert.equal(again.documents[0], first.documents[0]);
    const changed = resolvePolicies([], [entry('pay', '{"appliesTo": {"service": "payments"}, "limits": {"maxBodyBytes": 2}}', 8)], P, again);
    assert.notEqual(changed.documents[0], first.documents[0]);
  });
});

describe('resolvePolicies: documents that vanish when Consul loses its KV data', () => {
  const PROTECT = 'appliesTo: {service: admin}\nauth: {methods: [apiKey], apiKey: {header: x-api-key}}\n';
  const known = resolvePolicies([], [kv('policies/admin', PROTECT, 7), kv('policies/other', SERVICE_A('1s'), 8)], PREFIX, undefined, [], 0);
  const cases: { name: string; kv: KvEntry[]; resets: number; inForce: string[]; kept: string[] }[] = [
    { name: 'deleted while the index moves forward: gone', kv: [kv('policies/other', SERVICE_A('1s'), 8)], resets: 0, inForce: ['policies/other'], kept: [] },
    { name: 'the whole prefix emptied by an index reset: both kept', kv: [], resets: 1, inForce: ['policies/admin', 'policies/other'], kept: ['policies/admin', 'policies/other'] },
    { name: 'one written again after the reset: that one is the KV version, the other kept', kv: [kv('policies/other', SERVICE_A('2s'), 3)], resets: 1, inForce: ['policies/admin', 'policies/other'], kept: ['policies/admin'] },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const after = resolvePolicies([], c.kv, PREFIX, known, [], c.resets);
      assert.deepEqual(after.documents.map((d) => d.id).sort(), c.inForce);
      assert.deepEqual([...after.vanished].sort(), c.kept);
      for (const id of c.kept) assert.ok(after.problems.some((p) => p.subject === id && p.keptLastGood && /vanished when Consul's KV index went backwards/.test(p.message)));
    });
  }

  test('a kept document stays kept in later builds without another reset, until its key is written', () => {
    const lost = resolvePolicies([], [], PREFIX, known, [], 1);
    const later = resolvePolicies([], [kv('canary/web', '{}', 20)], PREFIX, lost, [], 1);
    assert.deepEqual(later.documents.map((d) => d.id).sort(), ['policies/admin', 'policies/other']);
    const rewritten = resolvePolicies([], [kv('policies/admin', PROTECT, 21)], PREFIX, later, [], 1);
    assert.deepEqual(rewritten.vanished, ['policies/other']);
    assert.equal(rewritten.documents.find((d) => d.id === 'policies/admin')?.origin.kind, 'kv');
  });
});
