/**
 * The compiled JavaScript the integration tests run as child processes: the gateway and the CLI
 * (dist/cli/main.js) and the demo service (dist/scripts/demo-service.js), as bin/cgw, the demo and
 * the image run them. `npm test` builds them first (pretest runs scripts/setup.sh); a test file
 * run on its own after a source changed fails here, naming the file, instead of testing the code
 * of the last build.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot } from './consul.ts';

export const CLI = join(repoRoot, 'dist', 'cli', 'main.js');
export const DEMO_SERVICE = join(repoRoot, 'dist', 'scripts', 'demo-service.js');

/** Each compiled project: the build info tsc writes last, and the sources it compiles. */
const PROJECTS = [
  { output: CLI, info: join(repoRoot, 'dist', '.tsbuildinfo'), sources: [join(repoRoot, 'src')] },
  { output: DEMO_SERVICE, info: join(repoRoot, 'dist', 'scripts', '.tsbuildinfo'), sources: [join(repoRoot, 'scripts', 'demo-service.ts')] },
];

function mtime(path: string): number {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return 0;
  }
}

function tsFiles(path: string): string[] {
  if (path.endsWith('.ts')) return [path];
  return readdirSync(path, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts')).map((f) => join(path, f));
}

/** Why dist/ cannot be tested, or undefined when it is there and newer than every source. */
export function staleBuild(): string | undefined {
  for (const p of PROJECTS) {
    if (!existsSync(p.output) || !existsSync(p.info)) return `${relative(repoRoot, p.output)} has not been built`;
    const built = mtime(p.info);
    const changed = p.sources.flatMap(tsFiles).find((f) => mtime(f) > built);
    if (changed !== undefined) return `${relative(repoRoot, changed)} changed after the last build`;
  }
  return undefined;
}

let checked = false;

/** Throws when dist/ is missing or older than a source; checks once per test process. */
export function assertBuilt(): void {
  if (checked) return;
  const why = staleBuild();
  if (why !== undefined) throw new Error(`${why}: run \`npm run build\` (npm test builds first) so the tests do not run stale JavaScript`);
  checked = true;
}
