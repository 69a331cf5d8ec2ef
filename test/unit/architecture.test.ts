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
  state: ['core', 'policy'],
  router: ['core', 'state'],
  balancer: ['core', 'state'],
  filters: ['core', 'policy'],
  runtime: ['core', 'state', 'router', 'balancer', 'filters'],
  proxy: ['core', 'runtime'],
  admin: ['core', 'state', 'runtime'],
  cli: ['core', 'config.ts', 'consul', 'policy', 'gateway.ts'],
  'gateway.ts': ['core', 'config.ts', 'consul', 'policy', 'state', 'router', 'balancer', 'filters', 'runtime', 'proxy', 'admin'],
};

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
    readFileSync(file, 'utf8')
      .split('\n')
      .forEach((line, i) => {
        const m = /^\s*(?:import|export)\b[^'"]*from\s+['"](\.{1,2}\/[^'"]+)['"]/.exec(line);
        if (!m?.[1]) return;
        const target = roomOf(resolve(dirname(file), m[1]));
        if (target !== room && !allowed.includes(target)) violations.push(`${relative(src, file)}:${i + 1} (${room}) imports ${target}`);
      });
  }
  assert.deepEqual(violations, []);
});
