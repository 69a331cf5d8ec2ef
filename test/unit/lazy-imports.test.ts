/**
 * Optional heavy modules stay off the start path: without --otlp-endpoint the OpenTelemetry SDK is
 * never loaded, and without a pretty log format pino-pretty is not either. Checked on the static
 * import graph from `cgw start`: every module reachable through `import ... from` (not `import
 * type`, not a dynamic `import()`) is followed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const src = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** Static value imports and re-exports: `import type` and `export type` load nothing at run time. */
const STATIC_IMPORT = /^\s*(?:import|export)\s+(?!type\s)(?:(?:\{[^}]*\}|\*(?:\s+as\s+\w+)?|\w+(?:\s*,\s*\{[^}]*\})?)\s+from\s+)?['"]([^'"]+)['"]/gm;

function staticGraph(entry: string): { files: Set<string>; packages: Map<string, string> } {
  const files = new Set<string>();
  const packages = new Map<string, string>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (files.has(file)) continue;
    files.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(STATIC_IMPORT)) {
      const spec = m[1] as string;
      if (spec.startsWith('.')) queue.push(resolve(dirname(file), spec));
      else if (!packages.has(spec)) packages.set(spec, file.slice(src.length + 1));
    }
  }
  return { files, packages };
}

test('cgw start loads neither the OpenTelemetry SDK nor pino-pretty until asked to', () => {
  const { files, packages } = staticGraph(resolve(src, 'cli/start.ts'));
  assert.ok(files.has(resolve(src, 'proxy/pipeline.ts')), 'the walk reaches the request path');
  const heavy = [...packages].filter(([name]) => name.startsWith('@opentelemetry/') || name === 'pino-pretty');
  assert.deepEqual(heavy, [], `loaded statically: ${heavy.map(([name, by]) => `${name} (by ${by})`).join(', ')}`);
  assert.ok(!files.has(resolve(src, 'proxy/request-spans.ts')), 'request-spans.ts is imported only dynamically');
  assert.ok(!files.has(resolve(src, 'core/span-export.ts')), 'span-export.ts is imported only dynamically');
});

test('the modules loaded on demand do reach the SDK (so the check above has something to find)', () => {
  const { packages } = staticGraph(resolve(src, 'proxy/request-spans.ts'));
  assert.ok(packages.has('@opentelemetry/sdk-trace-base'));
  assert.ok(packages.has('@opentelemetry/exporter-trace-otlp-http'));
});
