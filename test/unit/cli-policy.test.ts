/**
 * `cgw policy push` and `cgw consumer` logic against an in-memory KV: the check-and-set paths a
 * real Consul cannot be made to race on demand, and the flag-level messages of consumer records.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CliError } from '../../src/cli/admin-client.ts';
import { addConsumer, buildConsumerRecord, listConsumers, revokeConsumer, rotateConsumer } from '../../src/cli/consumer.ts';
import { consulKv, normalizeKvPrefix, type KvItem, type KvStore } from '../../src/cli/consul-kv.ts';
import { pushPolicies, PushRaceError, PushValidationError } from '../../src/cli/policy.ts';
import { resolveConsulConnection } from '../../src/consul/connection.ts';
import { hashApiKey } from '../../src/policy/consumers.ts';
import { freePort } from '../helpers/ports.ts';

/** A Consul-like KV: one global index, ModifyIndex per key, cas semantics of the KV endpoint. */
class MemoryKv implements KvStore {
  readonly items = new Map<string, KvItem>();
  index = 10;
  /** Runs before each write or delete: lets a test change a key "concurrently". */
  beforeWrite: ((key: string) => void) | undefined;
  readonly writes: string[] = [];

  put(key: string, value: string): void {
    this.items.set(key, { key, value, modifyIndex: ++this.index });
  }
  async list(prefix: string): Promise<KvItem[]> {
    return [...this.items.values()].filter((i) => i.key.startsWith(prefix)).sort((a, b) => a.key.localeCompare(b.key));
  }
  async get(key: string): Promise<KvItem | undefined> {
    return this.items.get(key);
  }
  async set(key: string, value: string, cas: number): Promise<boolean> {
    this.beforeWrite?.(key);
    if ((this.items.get(key)?.modifyIndex ?? 0) !== cas) return false;
    this.put(key, value);
    this.writes.push(`set ${key}`);
    return true;
  }
  async del(key: string, cas: number): Promise<boolean> {
    this.beforeWrite?.(key);
    if ((this.items.get(key)?.modifyIndex ?? 0) !== cas) return false;
    this.items.delete(key);
    this.writes.push(`del ${key}`);
    return true;
  }
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cgw-push-unit-'));
  await mkdir(join(dir, 'routes'));
  await writeFile(join(dir, 'a.yaml'), 'appliesTo: defaults\n');
  await writeFile(join(dir, 'b.yaml'), 'appliesTo: {service: b}\nretries: {attempts: 1}\n');
  await writeFile(join(dir, 'routes', 'r.yaml'), 'path: /r\nservice: r\n');
});
after(() => rm(dir, { recursive: true, force: true }));

describe('pushPolicies', () => {
  test('creates with cas=0, skips identical text, updates with the read index, prunes with cas', async () => {
    const kv = new MemoryKv();
    kv.put('gw/policies/b', 'old');
    kv.put('gw/routes/r', 'path: /r\nservice: r\n');
    kv.put('gw/policies/gone', 'appliesTo: {service: gone}\n');
    kv.put('gw/policies/', ''); // a folder key is not a document
    kv.put('gw/canary/web', '{}'); // not ours
    const seen: string[] = [];
    const out = await pushPolicies(kv, dir, { kvPrefix: 'gw', prune: true, onResult: (r) => seen.push(`${r.action} ${r.key} cas=${r.cas}`) });
    assert.deepEqual(seen, ['created gw/policies/a cas=0', 'updated gw/policies/b cas=11', 'unchanged gw/routes/r cas=12', 'deleted gw/policies/gone cas=13']);
    assert.deepEqual(out.results.map((r) => r.action), ['created', 'updated', 'unchanged', 'deleted']);
    assert.equal(kv.items.get('gw/policies/b')?.value, 'appliesTo: {service: b}\nretries: {attempts: 1}\n');
    assert.ok(kv.items.has('gw/policies/'));
    assert.ok(kv.items.has('gw/canary/web'));
  });

  test('--dry-run reports the same actions and writes nothing; without --prune extras are listed', async () => {
    const kv = new MemoryKv();
    kv.put('gw/policies/gone', 'x');
    const dry = await pushPolicies(kv, dir, { kvPrefix: 'gw/', dryRun: true, prune: true });
    assert.deepEqual(dry.results.map((r) => `${r.action} ${r.key}`), ['created gw/policies/a', 'created gw/policies/b', 'created gw/routes/r', 'deleted gw/policies/gone']);
    assert.deepEqual(kv.writes, []);
    const kept = await pushPolicies(kv, dir, { kvPrefix: 'gw/' });
    assert.deepEqual(kept.extra, ['gw/policies/gone']);
    assert.ok(kv.items.has('gw/policies/gone'));
  });

  test('a lost check-and-set stops the push with exit 3, naming the key and what was already written', async () => {
    const kv = new MemoryKv();
    kv.put('gw/policies/b', 'old');
    kv.beforeWrite = (key) => {
      if (key === 'gw/policies/b') kv.put('gw/policies/b', 'someone else'); // an operator wrote in between
    };
    await assert.rejects(
      pushPolicies(kv, dir, { kvPrefix: 'gw/' }),
      (err: unknown) => {
        assert.ok(err instanceof PushRaceError);
        assert.equal(err.exitCode, 3);
        assert.match(err.message, /^gw\/policies\/b was changed by someone else during the push \(check-and-set on ModifyIndex 11 lost\); not updated\./);
        assert.match(err.message, /The 1 key already written stays: gw\/policies\/a\./);
        assert.match(err.message, /The other 1 were not pushed\./);
        assert.deepEqual(err.done.map((r) => r.key), ['gw/policies/a']);
        return true;
      },
    );
    assert.equal(kv.items.get('gw/policies/b')?.value, 'someone else', 'the other writer wins');
    assert.equal(kv.items.has('gw/routes/r'), false, 'nothing after the lost key is written');
  });

  test('an invalid document: exit 2 and nothing written; a file instead of a directory: exit 2', async () => {
    const bad = await mkdtemp(join(tmpdir(), 'cgw-push-bad-'));
    await writeFile(join(bad, 'ok.yaml'), 'appliesTo: defaults\n');
    await writeFile(join(bad, 'bad.yaml'), 'appliesTo: {service: x}\nretries: {attempts: 9}\n');
    const kv = new MemoryKv();
    await assert.rejects(pushPolicies(kv, bad, { kvPrefix: 'gw/' }), (err: unknown) => {
      assert.ok(err instanceof PushValidationError);
      assert.equal(err.exitCode, 2);
      assert.equal(err.message, '1 of 2 documents invalid; nothing was written');
      return true;
    });
    assert.deepEqual(kv.writes, []);
    await assert.rejects(pushPolicies(kv, join(bad, 'ok.yaml'), { kvPrefix: 'gw/' }), (err: unknown) => err instanceof CliError && err.exitCode === 2);
    await rm(bad, { recursive: true, force: true });
  });

  test('Consul unreachable: exit 1 naming the address', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    await assert.rejects(pushPolicies(consulKv(resolveConsulConnection({ address: dead }, {})), dir, { kvPrefix: 'gw/' }), (err: unknown) => {
      assert.ok(err instanceof CliError);
      assert.equal(err.exitCode, 1);
      assert.equal(err.message, `cannot reach Consul at ${dead}: connection refused (is a Consul agent listening there?)`);
      return true;
    });
  });

  test('an IPv6 address is reached as an address, never looked up as a name (a server that is not Consul is named so)', async () => {
    const srv = createServer((_req, res) => {
      res.writeHead(404);
      res.end();
    });
    const listening = await new Promise<boolean>((resolve) => {
      srv.once('error', () => resolve(false));
      srv.listen(0, '::1', () => resolve(true));
    });
    // Without an IPv6 loopback the port is still one nothing listens on: the request must fail
    // as a connection to [::1], not as a name lookup of "[::1]" (the bug this guards).
    const port = listening ? (srv.address() as AddressInfo).port : await freePort();
    try {
      await assert.rejects(consulKv(resolveConsulConnection({ address: `[::1]:${port}` }, {})).get('gw/x'), (err: unknown) => {
        assert.ok(err instanceof CliError);
        assert.doesNotMatch(err.message, /ENOTFOUND|getaddrinfo/);
        if (listening) assert.equal(err.message, `http://[::1]:${port} is not a Consul agent: GET /v1/status/leader answered 404 Not Found`);
        else assert.match(err.message, new RegExp(`^cannot reach Consul at http://\\[::1\\]:${port}: `));
        return true;
      });
    } finally {
      if (listening) await new Promise<void>((resolve) => srv.close(() => resolve()));
    }
  });

  test('--kv-prefix is normalised and checked', () => {
    assert.equal(normalizeKvPrefix('gateway'), 'gateway/');
    assert.equal(normalizeKvPrefix(''), '');
    assert.throws(() => normalizeKvPrefix('a b'), (err: unknown) => err instanceof CliError && err.exitCode === 2);
  });
});

describe('consumers', () => {
  const hash = `sha256:${'a'.repeat(64)}`;
  const invalid = (fn: () => unknown, message: RegExp): void =>
    assert.throws(fn, (err: unknown) => err instanceof CliError && err.exitCode === 2 && message.test(err.message));

  test('record errors name the flag', () => {
    invalid(() => buildConsumerRecord(hash, { plan: 'Gold Plan' }), /^invalid consumer: --plan: plan names are lower-case/);
    invalid(() => buildConsumerRecord(hash, { scopes: ['has space'] }), /--scopes: scopes are printable characters/);
    invalid(() => buildConsumerRecord(hash, { limit: 5, window: '500ms' }), /--window: must be between 1s and 24h/);
    invalid(() => buildConsumerRecord(hash, { limit: 5 }), /^--limit needs --window/);
    invalid(() => buildConsumerRecord(hash, { window: '1m' }), /^--window needs --limit/);
    invalid(() => buildConsumerRecord(hash, { burst: 5 }), /^--burst needs --limit/);
    invalid(() => buildConsumerRecord(hash, { description: 'x'.repeat(501) }), /--description: /);
    assert.deepEqual(buildConsumerRecord(hash, { plan: 'gold', scopes: ['a'], limit: 10, window: '1m', burst: 3 }, new Date(0)), {
      keyHash: hash,
      plan: 'gold',
      scopes: ['a'],
      limits: { limit: 10, window: '1m', burst: 3 },
      createdAt: '1970-01-01T00:00:00.000Z',
    });
  });

  test('add creates only (cas=0), stores only the hash; rotate keeps the record; revoke deletes', async () => {
    const kv = new MemoryKv();
    kv.put('gw/policies/plans', 'appliesTo: defaults\nrateLimits:\n  - {name: pc, by: consumer, limit: 5, window: 1m, plans: {gold: {limit: 50, window: 1m}}}\n');
    const issued = await addConsumer(kv, 'gw/', 'acme', { plan: 'gold', scopes: ['a'] });
    assert.match(issued.key, /^cgw_acme_[0-9a-f]{64}$/);
    const stored = kv.items.get('gw/consumers/acme')?.value ?? '';
    assert.equal((JSON.parse(stored) as { keyHash: string }).keyHash, hashApiKey(issued.key));
    assert.ok(!stored.includes(issued.key.slice(-64)));
    // An existing consumer is a failure (exit 1), not a lost race (exit 3); nothing is written.
    const writes = kv.writes.length;
    await assert.rejects(addConsumer(kv, 'gw/', 'acme', {}), (err: unknown) => err instanceof CliError && err.exitCode === 1 && /^consumer acme already exists \(gw\/consumers\/acme, ModifyIndex \d+\); nothing written/.test(err.message));
    assert.equal(kv.writes.length, writes);
    await assert.rejects(addConsumer(kv, 'gw/', 'Acme', {}), (err: unknown) => err instanceof CliError && err.exitCode === 2);

    const rotated = await rotateConsumer(kv, 'gw/', 'acme');
    assert.notEqual(rotated.key, issued.key);
    const after = JSON.parse(kv.items.get('gw/consumers/acme')?.value ?? '') as Record<string, unknown>;
    assert.deepEqual([after.keyHash, after.plan, after.scopes], [hashApiKey(rotated.key), 'gold', ['a']]);

    await revokeConsumer(kv, 'gw/', 'acme');
    assert.equal(kv.items.has('gw/consumers/acme'), false);
    for (const op of [rotateConsumer, revokeConsumer]) {
      await assert.rejects(op(kv, 'gw/', 'acme'), (err: unknown) => err instanceof CliError && err.exitCode === 1 && err.message === 'no consumer acme (gw/consumers/acme does not exist)');
    }
  });

  test('rotate and revoke lose a race with exit 3 and write nothing', async () => {
    const kv = new MemoryKv();
    await addConsumer(kv, 'gw/', 'acme', {});
    const current = kv.items.get('gw/consumers/acme')?.value ?? '';
    kv.beforeWrite = () => kv.put('gw/consumers/acme', current);
    await assert.rejects(rotateConsumer(kv, 'gw/', 'acme'), (err: unknown) => err instanceof CliError && err.exitCode === 3 && /the old key still works/.test(err.message));
    await assert.rejects(revokeConsumer(kv, 'gw/', 'acme'), (err: unknown) => err instanceof CliError && err.exitCode === 3 && /nothing deleted/.test(err.message));
    assert.ok(kv.items.has('gw/consumers/acme'));
  });

  test('the list never carries hashes and flags invalid records and ids', async () => {
    const kv = new MemoryKv();
    await addConsumer(kv, 'gw/', 'acme', { limit: 5, window: '1m' });
    kv.put('gw/consumers/', '');
    kv.put('gw/consumers/broken', 'not json');
    kv.put('gw/consumers/Bad_Id', JSON.stringify({ keyHash: hash }));
    const list = await listConsumers(kv, 'gw');
    assert.deepEqual(list.map((c) => [c.id, c.invalid === null]), [['Bad_Id', false], ['acme', true], ['broken', false]]);
    assert.deepEqual(list[1]?.limits, { limit: 5, window: '1m' });
    assert.doesNotMatch(JSON.stringify(list), /sha256|keyHash/);
  });
});
