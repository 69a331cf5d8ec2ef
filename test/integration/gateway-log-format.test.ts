/**
 * --log-format: pretty writes lines for people (pino-pretty, one line each, redaction kept, the
 * last lines out before the process exits, in workers too), json writes JSON, and auto without a
 * terminal (as here: stdout is a pipe) writes JSON.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startConsul, type ConsulAgent } from '../helpers/consul.ts';
import { startGateway, waitFor } from '../helpers/gateway.ts';
import { startUpstream, type Upstream } from '../helpers/upstream.ts';

let consul: ConsulAgent;
let web: Upstream;

before(async () => {
  consul = await startConsul();
  web = await startUpstream('web');
  await consul.register({ id: 'web-1', name: 'web', port: web.port, tags: ['urlprefix-/web'] });
});

after(async () => {
  await web?.close();
  await consul?.stop();
});

function isJson(line: string): boolean {
  try {
    return typeof JSON.parse(line) === 'object';
  } catch {
    return false;
  }
}

for (const workers of ['1', '2']) {
  test(`--log-format pretty (--workers ${workers}): human lines, access lines led by method, path and status, and the last line before exit`, async () => {
    const gw = await startGateway({ consul: consul.addr, args: ['--log-level', 'info', '--log-format', 'pretty', '--workers', workers] });
    let stopped = false;
    try {
      await waitFor(async () => ((await fetch(`${gw.url}/web/pretty`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'web routed' });
      await waitFor(() => gw.stdout.some((l) => / INFO: access GET \/web\/pretty 200 [\d.]+ms /.test(l)), { timeoutMs: 10_000, message: 'a pretty access line' });
      assert.equal(await gw.kill('SIGTERM'), 0);
      stopped = true;
      assert.ok(gw.stdout.length > 0);
      assert.deepEqual(gw.stdout.filter(isJson), [], 'no JSON line');
      assert.ok(gw.stdout.some((l) => /^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] INFO: gateway started/.test(l)), 'the start line, with a readable time');
      assert.ok(gw.stdout.some((l) => l.includes('INFO: gateway stopped')), 'the last line is written before the process exits');
      assert.ok(!gw.stdout.some((l) => l.includes('\u001b[')), 'no colours when stdout is not a terminal');
    } finally {
      if (!stopped) await gw.kill();
    }
  });
}

test('--log-format json, and auto without a terminal: one JSON object per line', async () => {
  for (const format of ['json', 'auto']) {
    const gw = await startGateway({ consul: consul.addr, args: ['--log-level', 'info', '--log-format', format] });
    try {
      await waitFor(async () => ((await fetch(`${gw.url}/web/json`)).status === 200 ? true : undefined), { timeoutMs: 20_000, message: 'web routed' });
      await waitFor(() => gw.stdout.some((l) => l.includes('"path":"/web/json"')), { timeoutMs: 10_000, message: 'the access line' });
      assert.ok(gw.stdout.every(isJson), `${format}: every line is JSON`);
      assert.ok(gw.stdout.some((l) => (JSON.parse(l) as { msg?: string }).msg === 'gateway started'));
    } finally {
      await gw.kill();
    }
  }
});
