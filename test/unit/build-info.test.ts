/**
 * `cgw version` / `--version`: the commit from a packaged build file, else from the checkout's
 * .git (detached HEAD, a loose ref, packed-refs), and nothing rather than garbage when those
 * files are missing, odd or hostile.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { buildInfo, versionLine } from '../../src/core/build-info.ts';
import { CGW_VERSION } from '../../src/core/fleet.ts';
import { repoRoot } from '../helpers/consul.ts';

const A = 'a'.repeat(40);
const B = 'b'.repeat(40);
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'cgw-build-'));
  dirs.push(root);
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

const cases: { name: string; files: Record<string, string>; commit: string | null }[] = [
  { name: 'a packaged build file wins', files: { 'dist/build-info.json': JSON.stringify({ commit: A }), '.git/HEAD': `${B}\n` }, commit: A },
  { name: 'a detached HEAD', files: { '.git/HEAD': `${B}\n` }, commit: B },
  { name: 'a branch with a loose ref', files: { '.git/HEAD': 'ref: refs/heads/main\n', '.git/refs/heads/main': `${A}\n` }, commit: A },
  { name: 'a branch in packed-refs', files: { '.git/HEAD': 'ref: refs/heads/main\n', '.git/packed-refs': `# pack-refs with: peeled\n${B} refs/heads/other\n${A} refs/heads/main\n` }, commit: A },
  { name: 'no .git and no build file', files: {}, commit: null },
  { name: 'a build file that is not JSON falls back to .git', files: { 'dist/build-info.json': '{', '.git/HEAD': `${B}\n` }, commit: B },
  { name: 'a commit that is not a hash', files: { 'dist/build-info.json': JSON.stringify({ commit: '$(rm -rf /)' }) }, commit: null },
  { name: 'a ref climbing out of .git', files: { '.git/HEAD': 'ref: refs/../../etc/passwd\n' }, commit: null },
  { name: 'a prototype name in the build file', files: { 'dist/build-info.json': '{"__proto__":{"commit":"' + A + '"}}' }, commit: null },
];
for (const c of cases) {
  test(c.name, () => {
    const info = buildInfo(tree(c.files));
    assert.deepEqual(info, { version: CGW_VERSION, commit: c.commit });
  });
}

test('the line shows the release and a short commit', () => {
  assert.equal(versionLine({ version: '1.2.3', commit: A }), `cgw 1.2.3 (commit ${'a'.repeat(12)})`);
  assert.equal(versionLine({ version: '1.2.3', commit: null }), 'cgw 1.2.3');
});

test("cgw --version and cgw version name this checkout's commit", () => {
  const head = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' }).stdout.trim();
  for (const args of [['--version'], ['-V'], ['version']]) {
    const r = spawnSync(process.execPath, [join(repoRoot, 'bin', 'cgw'), ...args], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), `cgw ${CGW_VERSION}${head ? ` (commit ${head.slice(0, 12)})` : ''}`);
  }
});
