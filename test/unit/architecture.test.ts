import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The house map (docs/architecture.md) as a test: which room may import which. Data flows one
 * way; an import pointing up the table fails here with the offending file and line.
 */
const ALLOWED: Record<string, readonly string[]> = {
  core: [],
  // consul/connection.ts is the one resolver of CONSUL_* settings, for the gateway and the CLI alike.
  'config.ts': ['core', 'consul'],
  consul: ['core'],
  policy: ['core'],
  // state checks certificates from KV with tls/ (a leaf room: it imports only core).
  state: ['core', 'policy', 'tls'],
  router: ['core', 'state'],
  balancer: ['core', 'state'],
  resilience: ['core', 'state'],
  filters: ['core', 'policy'],
  // The response cache: RFC 9111 rules, the byte-bounded LRU, coalescing, Redis (L2); no proxy knowledge.
  cache: ['core', 'policy'],
  // Certificates for the edge: checked, indexed by server name, loaded from files; no proxy knowledge.
  tls: ['core'],
  runtime: ['core', 'state', 'router', 'balancer', 'resilience', 'filters', 'cache'],
  proxy: ['core', 'runtime'],
  admin: ['core', 'state', 'runtime'],
  // The control plane's part in rollouts: session locks and KV through consul/, the pure judging in state/.
  rollouts: ['core', 'consul', 'policy', 'state'],
  // The operator's writes and reads through Consul, shared by the CLI and the admin API's controls.
  controls: ['core', 'consul', 'policy', 'state'],
  cli: ['core', 'config.ts', 'consul', 'policy', 'state', 'tls', 'controls', 'gateway.ts', 'cluster'],
  // The two halves and the roots that run them: one process (gateway.ts) or a primary and workers (cluster/).
  'control-plane.ts': ['core', 'config.ts', 'consul', 'policy', 'state', 'admin', 'rollouts', 'controls'],
  'data-plane.ts': ['core', 'config.ts', 'state', 'router', 'balancer', 'resilience', 'filters', 'runtime', 'proxy', 'tls', 'cache'],
  'gateway.ts': ['core', 'config.ts', 'control-plane.ts', 'data-plane.ts'],
  cluster: ['core', 'config.ts', 'state', 'admin', 'control-plane.ts', 'data-plane.ts'],
};

/** `import x from`, `import type { a,\n b } from`, `export * from`, `import './x'`: every relative module a file loads. */
const IMPORT = /^\s*(?:import|export)\s+(?:type\s+)?(?:(?:\{[^}]*\}|\*(?:\s+as\s+\w+)?|\w+(?:\s*,\s*\{[^}]*\})?)\s+from\s+)?['"](\.{1,2}\/[^'"]+)['"]/gm;

const src = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = join(dir, name);
    return statSync(full).isDirectory() ? files(full) : full.endsWith('.ts') ? [full] : [];
  });
}

function roomOf(file: string): string {
  const rel = relative(src, file);
  return rel.includes('/') ? (rel.split('/')[0] ?? rel) : rel;
}

test('every import in src/ follows the house map', () => {
  const violations: string[] = [];
  for (const file of files(src)) {
    const room = roomOf(file);
    const allowed = ALLOWED[room];
    assert.ok(allowed, `${relative(src, file)} is in no room of the house map`);
    const text = readFileSync(file, 'utf8');
    // Whole statements, so an import whose braces span several lines is checked too.
    for (const m of text.matchAll(IMPORT)) {
      const target = roomOf(resolve(dirname(file), m[1] as string));
      const line = text.slice(0, m.index).split('\n').length;
      if (target !== room && !allowed.includes(target)) violations.push(`${relative(src, file)}:${line} (${room}) imports ${target}`);
    }
  }
  assert.deepEqual(violations, []);
});

test('the import scanner sees every form, including imports spread over several lines', () => {
  const cases: { text: string; modules: string[] }[] = [
    { text: "import a from './a.ts';", modules: ['./a.ts'] },
    { text: "import type { A } from '../x/a.ts';", modules: ['../x/a.ts'] },
    { text: "import {\n  a,\n  b,\n} from '../y/b.ts';", modules: ['../y/b.ts'] },
    { text: "export * from './c.ts';\nexport { d } from './d.ts';", modules: ['./c.ts', './d.ts'] },
    { text: "import './side.ts';\nimport e, { f } from './e.ts';", modules: ['./side.ts', './e.ts'] },
    { text: "import { z } from 'zod';\nexport const x = 1;\nconst s = \"from './not-an-import.ts'\";", modules: [] },
  ];
  for (const c of cases) assert.deepEqual([...c.text.matchAll(IMPORT)].map((m) => m[1]), c.modules, c.text);
});
