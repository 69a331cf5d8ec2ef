/**
 * compose/docker-compose.yml declares the demo stack, and publishes it on loopback only. Read with
 * the `yaml` package (merge keys on, as Compose reads them), so neither Docker nor docker-compose
 * is needed.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { repoRoot } from '../helpers/consul.ts';

const FILE = join(repoRoot, 'compose', 'docker-compose.yml');
const DEMO_SERVICES = ['api-1', 'inventory-1', 'legacy-a', 'legacy-b', 'web-v1-1', 'web-v1-2', 'web-v2-1'];
const SERVICES = [...DEMO_SERVICES, 'cgw', 'consul', 'grafana', 'prometheus', 'redis'].sort();
/** Services built from the repository (the `x-app` anchor merged in). */
const BUILT = [...DEMO_SERVICES, 'cgw'];

type Port = string | number | { target?: number; published?: number | string; host_ip?: string };
interface Service {
  image?: string;
  build?: string | { context?: string; dockerfile?: string };
  command?: unknown;
  ports?: Port[];
  depends_on?: string[] | Record<string, unknown>;
  environment?: Record<string, string> | string[];
  network_mode?: string;
}

function load(): { services: Record<string, Service>; top: string[] } {
  const doc = parse(readFileSync(FILE, 'utf8'), { merge: true }) as Record<string, unknown> | null;
  assert.ok(doc && typeof doc === 'object', `${FILE} is not a YAML mapping`);
  const services = doc.services as Record<string, Service> | undefined;
  assert.ok(services && typeof services === 'object', `${FILE} has no services mapping`);
  return { services, top: Object.keys(doc) };
}

/** "HOST_IP:HOST:CONTAINER" (short syntax) or the long syntax, as { hostIp, published, target }. */
function published(port: Port): { hostIp: string; published: string; target: string } {
  if (typeof port === 'object') {
    return { hostIp: port.host_ip ?? '', published: String(port.published ?? ''), target: String(port.target ?? '') };
  }
  const parts = String(port).split(':');
  const target = parts.pop() ?? '';
  const host = parts.pop() ?? '';
  return { hostIp: parts.join(':'), published: host, target };
}

test('docker-compose.yml declares the demo services', () => {
  const { services, top } = load();
  assert.deepEqual(Object.keys(services).sort(), SERVICES);
  // Only `services` and extension fields (x-*) at the top level.
  assert.deepEqual(top.filter((k) => k !== 'services' && !k.startsWith('x-')), []);
  assert.equal(services.consul?.image, 'hashicorp/consul:1.8.7');
  for (const [name, svc] of Object.entries(services)) {
    assert.ok(svc && (svc.image || svc.build), `service ${name} has neither an image nor a build`);
    const deps = Array.isArray(svc.depends_on) ? svc.depends_on : Object.keys(svc.depends_on ?? {});
    for (const dep of deps) assert.ok(dep in services, `service ${name} depends on unknown service ${dep}`);
  }
});

/** `--flag value` pairs and bare `--flag`s of one demo-service command line. */
function flagsOf(words: readonly string[]): Map<string, string> {
  const flags = new Map<string, string>();
  for (let i = 0; i < words.length; i++) {
    const word = words[i] ?? '';
    if (!word.startsWith('--')) continue;
    const next = words[i + 1];
    if (next !== undefined && !next.startsWith('--')) {
      flags.set(word, next);
      i++;
    } else flags.set(word, 'true');
  }
  return flags;
}

/** The demo services scripts/demo.sh starts: `start_service ID ARGS...`, words as the shell splits them. */
function demoScriptServices(): Map<string, Map<string, string>> {
  const script = readFileSync(join(repoRoot, 'scripts', 'demo.sh'), 'utf8');
  const services = new Map<string, Map<string, string>>();
  for (const m of script.matchAll(/^start_service (\S+) (.+)$/gm)) {
    const words = [...(m[2] ?? '').matchAll(/"([^"]*)"|(\S+)/g)].map((w) => w[1] ?? w[2] ?? '');
    services.set(m[1] ?? '', flagsOf(words));
  }
  return services;
}

test('the stack runs what `npm run demo` runs: the same services, names, tags and policies', () => {
  const { services } = load();
  const demo = demoScriptServices();
  assert.deepEqual([...demo.keys()].sort(), DEMO_SERVICES, 'scripts/demo.sh and this test disagree on the demo services');
  for (const [id, want] of demo) {
    const svc = services[id];
    assert.ok(svc, `the demo starts ${id}; docker-compose.yml does not`);
    const got = flagsOf((svc.command as unknown[]).map(String));
    assert.equal(got.get('--id'), id, `${id}: --id`);
    for (const flag of ['--name', '--tags', '--color', '--no-register']) {
      assert.equal(got.get(flag), want.get(flag), `${id}: ${flag} differs from the demo`);
    }
    if (want.has('--no-register')) {
      // Static-route backends: the route names 127.0.0.1:<port>, so they share the gateway's loopback.
      assert.equal(got.get('--port'), want.get('--port'), `${id}: the static route's port`);
      assert.equal(svc.network_mode, 'service:cgw', `${id} must share the gateway's network namespace`);
    } else {
      assert.equal(got.get('--consul'), 'http://consul:8500');
      assert.equal(got.get('--listen-host'), '0.0.0.0', `${id} must listen where the gateway container can reach it`);
    }
  }
  const gateway = flagsOf((services.cgw?.command as unknown[]).map(String));
  assert.equal(gateway.get('--policies'), 'policies', 'the gateway runs the example policies, as the demo does');
  const dockerfile = readFileSync(join(repoRoot, 'compose', 'Dockerfile'), 'utf8');
  assert.match(dockerfile, /^COPY policies \.\/policies$/m);
});

test('services built from the repository use a Dockerfile that exists', () => {
  const { services } = load();
  for (const name of BUILT) {
    const build = services[name]?.build;
    assert.ok(build, `service ${name} has no build section (is the x-app anchor merged?)`);
    const context = resolve(dirname(FILE), typeof build === 'string' ? build : (build.context ?? '.'));
    const dockerfile = resolve(context, typeof build === 'string' ? 'Dockerfile' : (build.dockerfile ?? 'Dockerfile'));
    assert.ok(existsSync(join(context, 'package.json')), `service ${name}: build context ${context} is not the repository`);
    assert.ok(existsSync(dockerfile), `service ${name}: Dockerfile ${dockerfile} does not exist`);
  }
});

test('published ports are bound to 127.0.0.1 only', () => {
  const { services } = load();
  const all = Object.entries(services).flatMap(([name, svc]) => (svc.ports ?? []).map((p) => ({ name, raw: p, ...published(p) })));
  for (const p of all) {
    assert.notEqual(p.hostIp, '0.0.0.0', `service ${p.name} publishes ${JSON.stringify(p.raw)} on every interface`);
    assert.equal(p.hostIp, '127.0.0.1', `service ${p.name} publishes ${JSON.stringify(p.raw)} beyond loopback`);
  }
  const mapped = all.map((p) => `${p.name} ${p.hostIp}:${p.published}:${p.target}`).sort();
  assert.deepEqual(mapped, ['cgw 127.0.0.1:8080:8080', 'cgw 127.0.0.1:9901:9901', 'consul 127.0.0.1:8500:8500', 'grafana 127.0.0.1:3000:3000', 'prometheus 127.0.0.1:9090:9090']);
});

/** The compiled entry points the image runs, and the TypeScript each is built from. */
const ENTRY_POINTS: Record<string, string> = {
  'dist/cli/main.js': 'src/cli/main.ts',
  'dist/scripts/demo-service.js': 'scripts/demo-service.ts',
};

test('built services run the compiled JavaScript, never TypeScript', () => {
  const { services } = load();
  for (const name of BUILT) {
    const command = services[name]?.command;
    assert.ok(Array.isArray(command), `service ${name} has no command list`);
    const words = command.map(String);
    assert.equal(words[0], 'node', `service ${name} does not run node: ${words.join(' ')}`);
    assert.ok(!words.some((w) => /tsx|\.ts$/.test(w)), `service ${name} compiles TypeScript at run time: ${words.join(' ')}`);
    const source = ENTRY_POINTS[words[1] ?? ''];
    assert.ok(source, `service ${name} runs ${words[1]}, not one of ${Object.keys(ENTRY_POINTS).join(', ')}`);
    assert.ok(existsSync(join(repoRoot, source)), `service ${name}: ${source} does not exist`);
  }
});

test('the Dockerfile builds dist/ from files that exist and runs it without tsx', () => {
  const dockerfile = readFileSync(join(repoRoot, 'compose', 'Dockerfile'), 'utf8');
  assert.match(dockerfile, /^RUN npm run build$/m);
  assert.match(dockerfile, /^COPY --from=build \/app\/dist \.\/dist$/m);
  assert.match(dockerfile, /^CMD \["node", "dist\/cli\/main\.js", "start"/m);
  assert.doesNotMatch(dockerfile.replace(/^#.*$/gm, ''), /tsx/);
  // The image that runs is the last stage, and it runs as a user other than root.
  const runStage = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  assert.match(runStage, /^USER (?!root$|0$)\S+$/m, 'the image runs as root');
  // COPY sources are relative to the build context, the repository (no Docker needed to check).
  const copied = [...dockerfile.matchAll(/^COPY (?!--)(.+) \S+$/gm)].flatMap((m) => (m[1] ?? '').split(/\s+/));
  assert.ok(copied.includes('src'), `the build stage copies no src/: ${copied.join(' ')}`);
  for (const path of copied) assert.ok(existsSync(join(repoRoot, path)), `the Dockerfile copies ${path}, which does not exist`);
});

test('the gateway, its CLI and Prometheus share one admin token file, a valid token', () => {
  const { services } = load();
  const cgw = services.cgw;
  const words = (cgw?.command as unknown[]).map(String);
  const admin = words[words.indexOf('--admin') + 1] ?? '';
  assert.ok(!admin.startsWith('127.'), 'the admin API is published, so it listens beyond loopback');
  assert.equal(words[words.indexOf('--admin-token-file') + 1], '/etc/cgw/admin-token');
  const env = cgw?.environment as Record<string, string> | undefined;
  assert.equal(env?.CGW_ADMIN_TOKEN_FILE, '/etc/cgw/admin-token');
  const token = readFileSync(join(repoRoot, 'compose', 'admin-token'), 'utf8').trim();
  assert.match(token, /^[\x21-\x7e]{16,4096}$/);
  const prometheus = parse(readFileSync(join(repoRoot, 'compose', 'prometheus.yml'), 'utf8')) as { scrape_configs: { authorization?: { credentials_file?: string }; static_configs: { targets: string[] }[] }[] };
  const job = prometheus.scrape_configs[0];
  assert.equal(job?.authorization?.credentials_file, '/etc/cgw/admin-token');
  assert.deepEqual(job?.static_configs[0]?.targets, ['cgw:9901']);
});

test('the gateway has a readiness healthcheck on /-/readyz', () => {
  const { services } = load();
  const check = (services.cgw as { healthcheck?: { test?: string[] } }).healthcheck?.test?.join(' ') ?? '';
  assert.match(check, /\/-\/readyz/);
});

test('Grafana is provisioned with the dashboard kept in the repository, on metrics the gateway exports', () => {
  const dashboard = JSON.parse(readFileSync(join(repoRoot, 'compose', 'grafana', 'dashboards', 'cgw.json'), 'utf8')) as { uid: string; title: string; schemaVersion: number; panels: { id: number; type: string; title: string; gridPos: object; targets: { expr: string; refId: string }[] }[] };
  assert.equal(typeof dashboard.uid, 'string');
  assert.ok(dashboard.schemaVersion >= 36);
  assert.equal(new Set(dashboard.panels.map((p) => p.id)).size, dashboard.panels.length, 'panel ids are unique');
  const metricsSource = readFileSync(join(repoRoot, 'src', 'core', 'metrics.ts'), 'utf8');
  const exported = new Set([...metricsSource.matchAll(/name: '(cgw_[a-z_]+)'/g)].map((m) => m[1]));
  for (const panel of dashboard.panels) {
    assert.ok(panel.type && panel.title && panel.gridPos && panel.targets.length > 0, `panel ${panel.id} is incomplete`);
    for (const t of panel.targets) {
      for (const name of t.expr.match(/cgw_[a-z_]+/g) ?? []) {
        const base = name.replace(/_(bucket|sum|count)$/, '');
        assert.ok(exported.has(base), `panel "${panel.title}" asks for ${name}, which the gateway does not export`);
      }
    }
  }
  const provider = parse(readFileSync(join(repoRoot, 'compose', 'grafana', 'provisioning', 'dashboards', 'cgw.yml'), 'utf8')) as { providers: { options: { path: string } }[] };
  assert.equal(provider.providers[0]?.options.path, '/var/lib/grafana/dashboards');
  const { services } = load();
  const volumes = (services.grafana as { volumes?: string[] }).volumes ?? [];
  assert.ok(volumes.includes('./grafana/dashboards:/var/lib/grafana/dashboards:ro'));
});
