import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * CLI start-up (docs/performance.md, "CLI start-up"): every command pays for the modules loaded
 * before it runs. src/cli/main.ts loads commander and dependency-free modules up front and each
 * action imports the rest with `import()`. This test follows the static imports (what loads
 * before any code runs; `import type` is erased, `import()` is on demand) from the modules each
 * kind of command starts from, and fails naming the package and the chain that pulls it in.
 */

const src = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** Static `import ... from`, `export ... from` and `import '...'`, not `import type` / `export type`. */
const STATIC = /^\s*(?:import|export)\s+(?!type\s)(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm;

/** Packages reached through static imports from `entries` (src-relative), each with one chain that reaches it. */
function packagesLoaded(entries: readonly string[]): Map<string, string> {
  const found = new Map<string, string>();
  const seen = new Set<string>();
  const visit = (file: string, chain: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(STATIC)) {
      const spec = m[1] as string;
      if (spec.startsWith('.')) {
        const target = resolve(dirname(file), spec);
        visit(target, `${chain} → ${relative(src, target)}`);
      } else if (!spec.startsWith('node:')) {
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : (spec.split('/')[0] ?? spec);
        if (!found.has(name)) found.set(name, `${chain} → ${name}`);
      }
    }
  };
  for (const e of entries) visit(resolve(src, e), e);
  return found;
}

function assertOnly(entries: readonly string[], allowed: readonly string[]): void {
  const extra = [...packagesLoaded(entries)].filter(([name]) => !allowed.includes(name)).map(([, chain]) => chain);
  assert.deepEqual(extra, [], `loaded before the command runs:\n${extra.join('\n')}`);
}

test('cgw --help and flag parsing load commander and nothing else from node_modules', () => {
  assertOnly(['cli/main.ts'], ['commander']);
});

test('inspection commands (status, services, endpoints, routes, policies) load no package at all', () => {
  assertOnly(['cli/inspect.ts', 'cli/admin-client.ts', 'cli/table.ts'], []);
});

test('canary commands load zod (the gateway\'s own schema) and the consul package, nothing else', () => {
  assertOnly(['cli/canary.ts', 'cli/consul-kv.ts', 'consul/connection.ts', 'cli/table.ts'], ['zod', 'consul']);
});

test('the scanner sees runtime imports and skips type-only ones', () => {
  const cases: { text: string; specs: string[] }[] = [
    { text: "import { a } from 'pino';", specs: ['pino'] },
    { text: "import type { A } from 'pino';\nexport type { B } from 'zod';", specs: [] },
    { text: "import {\n  a,\n  type B,\n} from './x.ts';", specs: ['./x.ts'] },
    { text: "import './side.ts';\nexport * from 'yaml';", specs: ['./side.ts', 'yaml'] },
    { text: "const m = await import('ioredis');", specs: [] },
  ];
  for (const c of cases) assert.deepEqual([...c.text.matchAll(STATIC)].map((m) => m[1]), c.specs, c.text);
});
