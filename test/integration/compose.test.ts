/** compose/docker-compose.yml is valid and declares the demo stack (no Docker engine needed). */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { repoRoot } from '../helpers/consul.ts';

const FILE = 'compose/docker-compose.yml';

function compose(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; missing: boolean }> {
  return new Promise((resolve) => {
    execFile('docker-compose', ['-f', FILE, ...args], { cwd: repoRoot, timeout: 30_000, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: unknown }) | null;
      resolve({
        code: e === null ? 0 : typeof e.code === 'number' ? e.code : null,
        stdout,
        stderr,
        missing: e?.code === 'ENOENT',
      });
    });
  });
}

test('docker-compose config validates and lists the demo services', async () => {
  const quiet = await compose(['config', '-q']);
  assert.equal(quiet.missing, false, 'docker-compose is not installed: run scripts/setup.sh (as root) or apt-get install docker-compose');
  assert.equal(quiet.code, 0, quiet.stderr);

  const names = await compose(['config', '--services']);
  assert.equal(names.code, 0, names.stderr);
  const services = names.stdout.split('\n').map((s) => s.trim()).filter(Boolean).sort();
  assert.deepEqual(services, ['api', 'cgw', 'consul', 'redis', 'web-v1', 'web-v2']);

  // The fully resolved config: service keys sit two spaces deep under `services:`.
  const full = await compose(['config']);
  assert.equal(full.code, 0, full.stderr);
  const block = full.stdout.split(/^services:\n/m)[1]?.split(/^\S/m)[0] ?? '';
  const keys = [...block.matchAll(/^ {2}([\w.-]+):\s*$/gm)].map((m) => m[1]).sort();
  assert.deepEqual(keys, ['api', 'cgw', 'consul', 'redis', 'web-v1', 'web-v2']);
  assert.match(full.stdout, /image: hashicorp\/consul:1\.8\.7/);
  // Published ports stay on loopback.
  for (const port of ['8080', '9901', '8500']) assert.match(full.stdout, new RegExp(`127\\.0\\.0\\.1:${port}:${port}`));
  assert.doesNotMatch(full.stdout, /- ['"]?0\.0\.0\.0:\d+:\d+/);
});
