/** scripts/demo-service.ts, compiled: registers itself with tags and a TTL check, deregisters on SIGTERM. */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import { assertBuilt, DEMO_SERVICE } from '../helpers/build.ts';
import { startConsul, repoRoot, type ConsulAgent } from '../helpers/consul.ts';
import { collectLines, exitOf, terminate, track } from '../helpers/process.ts';
import { waitFor } from '../helpers/wait.ts';

let consul: ConsulAgent;

before(async () => {
  consul = await startConsul();
});
after(async () => {
  await consul?.destroy();
});

function run(args: string[], env: Record<string, string> = {}) {
  assertBuilt();
  const child = spawn(process.execPath, [DEMO_SERVICE, ...args], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  const logs: string[] = [];
  collectLines(child.stdout, logs);
  collectLines(child.stderr, logs, '[err] ');
  return { child, logs };
}

interface Entry {
  Service: { ID: string; Port: number; Address: string; Tags: string[] };
  Checks: Array<{ CheckID: string; Status: string }>;
}

test('registers, serves, passes its TTL check and deregisters on SIGTERM', async () => {
  const { child, logs } = run(
    ['--name', 'web', '--id', 'web-9', '--port', '0', '--tags', 'urlprefix-/web, v2', '--color', 'green', '--address', '127.0.0.1'],
    { CONSUL_HTTP_ADDR: consul.addr.replace('http://', '') },
  );
  try {
    const entry = await waitFor(async () => {
      const r = await consul.api('GET', '/v1/health/service/web');
      return (JSON.parse(r.text) as Entry[]).find((e) => e.Service.ID === 'web-9');
    }, { timeoutMs: 15_000, message: `web-9 registered\n${logs.join('\n')}` });
    assert.deepEqual(entry.Service.Tags, ['urlprefix-/web', 'v2']);
    assert.equal(entry.Service.Address, '127.0.0.1');
    assert.equal(entry.Checks.find((c) => c.CheckID === 'service:web-9')?.Status, 'passing');

    const res = await fetch(`http://127.0.0.1:${entry.Service.Port}/hello?x=1`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.service, 'web');
    assert.equal(body.id, 'web-9');
    assert.equal(body.version, 'v2');
    assert.equal(body.color, 'green');
    assert.equal(body.path, '/hello?x=1');
    assert.equal(typeof body.time, 'string');

    assert.equal(await terminate(child, 'SIGTERM'), 0, logs.join('\n'));
    const left = JSON.parse((await consul.api('GET', '/v1/health/service/web')).text) as Entry[];
    assert.equal(left.find((e) => e.Service.ID === 'web-9'), undefined, 'deregistered before exiting');
  } finally {
    await terminate(child, 'SIGKILL');
  }
});

test('rejects bad arguments with a clear message', async () => {
  for (const [args, re] of [
    [['--port', '0'], /--name is required/],
    [['--name', 'web', '--port', 'abc'], /--port must be/],
    [['--name', 'web', '--bogus'], /Unknown option '--bogus'/],
  ] as const) {
    const { child, logs } = run([...args], { CONSUL_HTTP_ADDR: consul.addr });
    assert.equal(await exitOf(child), 2);
    assert.match(logs.join('\n'), re);
  }
});
