/**
 * `cgw canary set` arguments, the tag check against the catalog, the check-and-set paths with their
 * exit codes, and the plan check of `cgw consumer add|rotate`, against an in-memory Consul.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CliError } from '../../src/cli/admin-client.ts';
import { checkWeightTags, clearCanary, getCanary, setCanary } from '../../src/cli/canary.ts';
import { addConsumer, checkPlan, definedPlans, rotateConsumer, type AdminReader } from '../../src/cli/consumer.ts';
import type { ServiceLookup } from '../../src/cli/consul-kv.ts';
import { MemoryConsul } from '../helpers/memory-consul.ts';
import { parseCanaryArgs } from '../../src/policy/canary.ts';

describe('parseCanaryArgs: every malformed argument gets an accurate message', () => {
  const valid: { args: string[]; weights: Record<string, number> }[] = [
    { args: ['v1=90', 'v2=10'], weights: { v1: 90, v2: 10 } },
    { args: ['V1=90', 'v1=10'], weights: { V1: 90, v1: 10 } },
    { args: ['v1=100', 'v2=0'], weights: { v1: 100, v2: 0 } },
    { args: ['a=33.3', 'b=33.3', 'c=33.4'], weights: { a: 33.3, b: 33.3, c: 33.4 } },
    { args: ['urlprefix-/web=100'], weights: { 'urlprefix-/web': 100 } },
  ];
  for (const { args, weights } of valid) {
    test(`valid: ${args.join(' ')}`, () => assert.deepEqual(parseCanaryArgs(args), { ok: true, value: { weights } }));
  }

  const invalid: { args: string[]; error: string | RegExp }[] = [
    { args: ['v2=-10', 'v1=110'], error: '"v2=-10": the weight must be between 0 and 100' },
    { args: ['v1=90', 'v2=-10'], error: '"v2=-10": the weight must be between 0 and 100' },
    { args: ['v1=101'], error: '"v1=101": the weight must be between 0 and 100' },
    { args: ['v1=100.5'], error: '"v1=100.5": the weight must be between 0 and 100' },
    { args: ['v1=Infinity'], error: '"v1=Infinity": the weight must be between 0 and 100' },
    { args: ['v2'], error: '"v2" is not tag=weight (e.g. v2=10)' },
    { args: ['=10'], error: '"=10" is not tag=weight: the tag before "=" is missing' },
    { args: ['v2='], error: '"v2=" is not tag=weight: the weight after "=" is missing' },
    { args: ['v2=abc'], error: '"v2=abc": "abc" is not a number (a weight is 0-100, e.g. 10 or 12.5)' },
    { args: ['v2=NaN'], error: /"v2=NaN": "NaN" is not a number/ },
    { args: ['v2=90=10'], error: /"v2=90=10": "90=10" is not a number/ },
    { args: ['v2=1e2'], error: '"v2=1e2": write the weight as a plain decimal number between 0 and 100, e.g. 10 or 12.5 (not "1e2")' },
    { args: ['v2=+10', 'v1=90'], error: /"v2=\+10": write the weight as a plain decimal number/ },
    { args: ['v2=0x10', 'v1=84'], error: /"v2=0x10": write the weight as a plain decimal number/ },
    { args: ['v2=.5', 'v1=99.5'], error: /"v2=\.5": write the weight as a plain decimal number/ },
    { args: ['v2=10%', 'v1=90'], error: '"v2=10%": write the weight without "%" (weights are percentages already: v2=10)' },
    { args: ['v2=-10%'], error: '"v2=-10%": the weight must be between 0 and 100, written without "%"' },
    { args: ['v1=50', 'v1=50'], error: 'tag "v1" given twice ("v1=50" and "v1=50"); tags are case-sensitive, each may appear once' },
    { args: ['v1=90', 'v2=5'], error: 'weights must sum to 100, not 95 (v1=90 v2=5)' },
    { args: ['v1=90', 'v2=20'], error: 'weights must sum to 100, not 110 (v1=90 v2=20)' },
    { args: ['v1=0'], error: 'weights must sum to 100, not 0 (v1=0)' },
    { args: ['v 1=100'], error: '"v 1=100": tag must not contain spaces, "=" or ","' },
    { args: ['v1,v2=100'], error: '"v1,v2=100": tag must not contain spaces, "=" or ","' },
    { args: [`${'t'.repeat(129)}=100`], error: /tag is longer than 128 characters/ },
    { args: [], error: /^at least one tag is required/ },
  ];
  for (const { args, error } of invalid) {
    test(`invalid: ${args.join(' ') || '(none)'}`, () => {
      const parsed = parseCanaryArgs(args);
      assert.equal(parsed.ok, false);
      if (!parsed.ok) {
        if (typeof error === 'string') assert.equal(parsed.error, error);
        else assert.match(parsed.error, error);
        assert.doesNotMatch(parsed.error, /"-\d+" .*is not a number/, 'a negative weight is a number out of range');
      }
    });
  }
});

describe('checkWeightTags: weights against the tags instances carry', () => {
  const web: ServiceLookup = { found: true, instances: 3, tags: ['urlprefix-/web', 'v1', 'v2'] };
  const cases: { name: string; weights: Record<string, number>; lookup: ServiceLookup; problem: string | null; notes?: string[] }[] = [
    { name: 'every tag carried', weights: { v1: 90, v2: 10 }, lookup: web, problem: null },
    {
      name: 'a tag differing in case',
      weights: { V1: 90, v2: 10 },
      lookup: web,
      problem: 'no instance of web carries tag V1 (weight 90; tags are case-sensitive: did you mean v1?); tags on its 3 instances: v1, v2',
    },
    { name: 'a tag nobody carries', weights: { v3: 100 }, lookup: web, problem: 'no instance of web carries tag v3 (weight 100); tags on its 3 instances: v1, v2' },
    {
      name: 'two missing tags',
      weights: { v3: 50, v4: 50 },
      lookup: web,
      problem: 'no instance of web carries tags v3 (weight 50), v4 (weight 50); tags on its 3 instances: v1, v2',
    },
    {
      name: 'weight 0 on a missing tag is allowed, with a note',
      weights: { v1: 100, v3: 0 },
      lookup: web,
      problem: null,
      notes: ['no instance of web carries tag v3 (weight 0); allowed at weight 0, which sends it nothing'],
    },
    {
      name: 'only route tags',
      weights: { v1: 100 },
      lookup: { found: true, instances: 1, tags: ['urlprefix-/x'] },
      problem: 'no instance of web carries tag v1 (weight 100); tags on its 1 instance: none besides urlprefix- routes',
    },
    { name: 'an unknown service', weights: { v1: 100 }, lookup: { found: false, aclsEnabled: false }, problem: "Consul's catalog has no instance of service web, whatever its health" },
    {
      name: 'an unknown service with ACLs on',
      weights: { v1: 100 },
      lookup: { found: false, aclsEnabled: true },
      problem: "Consul's catalog has no instance of service web, whatever its health (or the ACL token may not read it: it needs service:read)",
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const check = checkWeightTags('web', c.weights, c.lookup);
      assert.equal(check.problem, c.problem);
      assert.deepEqual(check.notes, c.notes ?? []);
    });
  }
});

const KEY = 'gateway/canary/web';
const failsWith = (code: number, message: RegExp) => (err: unknown) => {
  assert.ok(err instanceof CliError, String(err));
  assert.equal(err.exitCode, code, err.message);
  assert.match(err.message, message);
  return true;
};

describe('cgw canary set/get/clear against the catalog and KV', () => {
  const consul = (): MemoryConsul => new MemoryConsul({ web: [['urlprefix-/web', 'v1'], ['urlprefix-/web', 'v1'], ['urlprefix-/web', 'v2']] });

  test('refusals exit 2 and write nothing; --force writes and says what it overrode', async () => {
    const c = consul();
    await assert.rejects(setCanary(c, 'gateway/', 'web', ['V1=90', 'v2=10']), failsWith(2, /^no instance of web carries tag V1 .*tags on its 3 instances: v1, v2\. Nothing written; --force/));
    await assert.rejects(setCanary(c, 'gateway/', 'web', ['v3=100']), failsWith(2, /carries tag v3 \(weight 100\)/));
    await assert.rejects(setCanary(c, 'gateway/', 'nosuchsvc', ['v1=100']), failsWith(2, /^Consul's catalog has no instance of service nosuchsvc/));
    await assert.rejects(setCanary(c, 'gateway/', 'web', ['v2=-10', 'v1=110']), failsWith(2, /^invalid canary weights: "v2=-10": the weight must be between 0 and 100$/));
    await assert.rejects(setCanary(c, 'gateway/', 'bad name', ['v1=100']), failsWith(2, /is not a valid service name/));
    assert.deepEqual(c.writes, []);

    const forced = await setCanary(c, 'gateway/', 'web', ['V1=90', 'v2=10'], { force: true });
    assert.deepEqual(forced.weights, { V1: 90, v2: 10 });
    assert.equal(forced.forced.length, 1);
    assert.match(forced.forced[0] ?? '', /did you mean v1/);
    assert.equal(forced.modifyIndex, c.items.get(KEY)?.modifyIndex);
    const unknown = await setCanary(c, 'gateway/', 'nosuchsvc', ['v1=100'], { force: true });
    assert.equal(unknown.key, 'gateway/canary/nosuchsvc');
  });

  test('--cas 0 on an existing key, a stale --cas, a deleted key and a lost race exit 3 and write nothing', async () => {
    const c = consul();
    c.put(KEY, '{"weights":{"v1":100}}');
    const at = c.items.get(KEY)?.modifyIndex ?? 0;
    await assert.rejects(
      setCanary(c, 'gateway/', 'web', ['v1=80', 'v2=20'], { cas: 0 }),
      failsWith(3, new RegExp(`^--cas 0 writes only when the key does not exist, and ${KEY} exists at ModifyIndex ${at}; nothing written$`)),
    );
    await assert.rejects(
      setCanary(c, 'gateway/', 'web', ['v1=80', 'v2=20'], { cas: at - 1 }),
      failsWith(3, new RegExp(`^${KEY} is at ModifyIndex ${at}, not ${at - 1} \\(--cas ${at - 1}\\): someone changed it since; nothing written$`)),
    );
    c.beforeWrite = () => c.put(KEY, '{"weights":{"v2":100}}');
    await assert.rejects(setCanary(c, 'gateway/', 'web', ['v1=80', 'v2=20']), failsWith(3, /was changed by someone else while writing \(check-and-set on ModifyIndex \d+ lost\); nothing written/));
    c.beforeWrite = undefined;
    assert.deepEqual(c.writes, []);

    c.items.delete(KEY);
    await assert.rejects(setCanary(c, 'gateway/', 'web', ['v1=80', 'v2=20'], { cas: at }), failsWith(3, new RegExp(`^${KEY} does not exist, so it is not at ModifyIndex ${at}`)));
    const created = await setCanary(c, 'gateway/', 'web', ['v1=80', 'v2=20'], { cas: 0 });
    assert.equal(created.modifyIndex, c.items.get(KEY)?.modifyIndex);
    const next = await setCanary(c, 'gateway/', 'web', ['v1=70', 'v2=30'], { cas: created.modifyIndex });
    assert.deepEqual(JSON.parse(c.items.get(KEY)?.value ?? ''), { weights: { v1: 70, v2: 30 } });
    assert.equal(next.modifyIndex, c.items.get(KEY)?.modifyIndex);
  });

  test('get flags weighted tags nobody carries and unknown services; clear deletes with cas', async () => {
    const c = consul();
    c.put(KEY, '{"weights":{"v1":90,"v3":10}}');
    const got = await getCanary(c, 'gateway/', 'web');
    assert.deepEqual(got.record?.missingTags, ['v3']);
    assert.match(got.notes[0] ?? '', /carries tag v3 \(weight 10\)/);
    const none = await getCanary(c, 'gateway/', 'nosuchsvc');
    assert.equal(none.record, undefined);
    assert.equal(none.serviceKnown, false);

    c.beforeWrite = () => c.put(KEY, '{"weights":{"v1":100}}');
    await assert.rejects(clearCanary(c, 'gateway/', 'web'), failsWith(3, /changed by someone else while deleting/));
    c.beforeWrite = undefined;
    assert.deepEqual(await clearCanary(c, 'gateway/', 'web'), { key: KEY, deleted: true, modifyIndex: c.index });
    assert.deepEqual(await clearCanary(c, 'gateway/', 'web'), { key: KEY, deleted: false, modifyIndex: null });
  });
});

describe('consumer plans', () => {
  const PLANS = 'appliesTo: defaults\nrateLimits:\n  - {name: pc, by: consumer, limit: 5, window: 1m, plans: {gold: {limit: 50, window: 1m}}}\n';
  const snapshot = (plans: string[]) => ({
    snapshot: {
      policies: {
        documents: [
          {
            id: 'policies/file-plans',
            origin: { kind: 'file', path: '/etc/cgw/file-plans.yaml' },
            parsed: { kind: 'policy', doc: { appliesTo: 'defaults', rateLimits: [{ name: 'x', by: 'consumer', plans: Object.fromEntries(plans.map((p) => [p, { limit: 1, window: 60000 }])) }] } },
          },
          { id: 'routes/r', origin: { kind: 'file', path: '/etc/cgw/routes/r.yaml' }, parsed: { kind: 'route', doc: { path: '/r' } } },
        ],
      },
    },
    appliedAt: 0,
  });
  const admin = (body: unknown): AdminReader => ({ address: 'http://127.0.0.1:9901', read: async () => body });
  const down: AdminReader = {
    address: 'http://127.0.0.1:9901',
    read: async () => {
      throw new CliError('cannot reach the gateway admin API at http://127.0.0.1:9901: connection refused');
    },
  };

  test('plans come from KV documents (the gateway\'s parser) and the documents in force at the gateway', async () => {
    const c = new MemoryConsul();
    c.put('gateway/policies/plans', PLANS);
    c.put('gateway/policies/broken', 'appliesTo: defaults\nrateLimits: [{name: x, by: ip, limit: 1, window: 1m, plans: {silver: {limit: 1, window: 1m}}}]\n');
    c.put('gateway/routes/r', 'path: /r\nservice: r\n');
    const catalog = await definedPlans(c, 'gateway/', admin(snapshot(['platinum'])));
    assert.deepEqual(Object.fromEntries(catalog.plans), { gold: ['kv:gateway/policies/plans'], platinum: ['file:/etc/cgw/file-plans.yaml'] });
    assert.equal(catalog.gatewayUnchecked, null);
    const unready = await definedPlans(c, 'gateway/', admin(null));
    assert.match(unready.gatewayUnchecked ?? '', /has no snapshot in force yet/);
    const notCgw = await definedPlans(c, 'gateway/', admin({ hello: 'world' }));
    assert.match(notCgw.gatewayUnchecked ?? '', /is not a cgw snapshot/);
  });

  test('an undefined plan exits 2 listing the plans that exist, unless --force', async () => {
    const c = new MemoryConsul();
    c.put('gateway/policies/plans', PLANS);
    await assert.rejects(
      checkPlan(c, 'gateway/', 'bronze', { admin: admin(snapshot(['platinum'])) }),
      failsWith(2, /^plan "bronze" is defined by no policy: .*plans that exist: gold \(kv:gateway\/policies\/plans\); platinum \(file:\/etc\/cgw\/file-plans\.yaml\)\. Nothing written; --force/),
    );
    await assert.rejects(
      checkPlan(c, 'gateway/', 'bronze', { admin: down }),
      failsWith(2, /^plan "bronze" is defined by no policy document in KV \(gateway\/policies\/\), and file policies \(--policies\) could not be checked: cannot reach .*connection refused; plans that exist: gold .*--force writes the consumer anyway$/),
    );
    assert.equal(await checkPlan(c, 'gateway/', 'gold', { admin: down }), null, 'defined in KV: the gateway is not needed');
    assert.equal(await checkPlan(c, 'gateway/', 'platinum', { admin: admin(snapshot(['platinum'])) }), null);
    assert.match((await checkPlan(c, 'gateway/', 'bronze', { admin: down, force: true })) ?? '', /\(written anyway: --force\)$/);
  });

  test('add and rotate --plan check the plan; add of an existing consumer exits 1; a lost create exits 3', async () => {
    const c = new MemoryConsul();
    c.put('gateway/policies/plans', PLANS);
    await assert.rejects(addConsumer(c, 'gateway/', 'acme', { plan: 'bronze' }, { admin: down }), failsWith(2, /plan "bronze"/));
    assert.equal(c.items.has('gateway/consumers/acme'), false);
    const forced = await addConsumer(c, 'gateway/', 'acme', { plan: 'bronze' }, { admin: down, force: true });
    assert.equal(forced.plan, 'bronze');
    assert.equal(forced.warnings.length, 1);
    await assert.rejects(addConsumer(c, 'gateway/', 'acme', { plan: 'gold' }, { admin: down }), failsWith(1, /^consumer acme already exists/));

    await assert.rejects(rotateConsumer(c, 'gateway/', 'acme', { plan: 'silver' }, { admin: down }), failsWith(2, /plan "silver"/));
    await assert.rejects(rotateConsumer(c, 'gateway/', 'acme', { plan: 'Not A Plan' }, { admin: down }), failsWith(2, /^invalid consumer: --plan: /));
    const rotated = await rotateConsumer(c, 'gateway/', 'acme', { plan: 'gold' }, { admin: down });
    assert.equal(rotated.plan, 'gold');
    assert.equal((JSON.parse(c.items.get('gateway/consumers/acme')?.value ?? '{}') as { plan?: string }).plan, 'gold');

    c.beforeWrite = () => c.put('gateway/consumers/late', JSON.stringify({ keyHash: `sha256:${'b'.repeat(64)}` }));
    await assert.rejects(addConsumer(c, 'gateway/', 'late', {}), failsWith(3, /^consumer late was created by someone else while adding/));
  });
});
