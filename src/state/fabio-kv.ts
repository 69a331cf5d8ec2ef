import type { KvEntry, Problem } from '../core/types.ts';
import { parseFabioValue, quoteLine, type FabioCommand, type FabioLine } from '../policy/fabio-routes.ts';
import { undialable } from './endpoints.ts';
import { parseUrlprefixTag, URLPREFIX, type TagRoute } from './tags.ts';

/**
 * What fabio's KV route lines mean for cgw's routing table (the syntax is policy/fabio-routes.ts).
 * fabio appends the KV lines to the lines it generates from service tags and runs them in order
 * (main.go watchBackend: "manual config overrides service config"); cgw does the same in effect:
 *
 * - `route add svc src dst`: dst is one fixed upstream URL of route src (fabio adds it as a target
 *   whatever svc is), like a route document's `upstreams`. Lines adding the same src gather their
 *   targets into one route, with fabio's fixed weights; the route is served by the static service
 *   `fabio:<route id>`. Its options (`opts "..."`) are read by the urlprefix- tag parser, so every
 *   tag option works in KV lines too.
 * - `route del`: removes targets added by earlier lines, and routes that service tags declare
 *   (`route del svc`, `route del svc src`); `route del [svc] tags "..."` removes the Consul
 *   instances of svc (any service without svc) that carry all the tags.
 * - `route weight`: on a fabio route, fabio's fixed weights on its targets; on a route from a tag,
 *   the share of that service's healthy instances carrying the tags (`serviceShaping` below).
 */

export const FABIO_SERVICE_PREFIX = 'fabio:';
/** Keys read under the configured key; more are ignored (and reported). */
export const MAX_FABIO_KEYS = 64;
/** Lines other than blanks and comments over all keys; more are ignored (and reported). */
export const MAX_FABIO_COMMANDS = 10_000;
/** Problems listed per key; the rest are summed up in one, so a value of junk cannot flood `cgw status` and the log. */
export const MAX_LINE_PROBLEMS_PER_KEY = 50;
/**
 * Targets that `route add` lines may hold at once (a route document has at most 256 upstreams).
 * It also bounds the work of a table: each line looks at no more than this many targets, so a
 * hostile value costs milliseconds, not seconds, of the control plane's time.
 */
export const MAX_FABIO_TARGETS = 1_000;

export interface FabioSource {
  readonly kind: 'fabio-kv';
  readonly key: string;
  readonly line: number;
  /** `<key> line <n>`, how problems and `cgw routes` name it. */
  readonly document: string;
}

export interface FabioTarget {
  /** fabio's service name of the line that added it (a label: the target is the URL). */
  readonly service: string;
  readonly url: string;
  readonly tags: readonly string[];
  readonly fixedWeight: number;
}

export interface FabioRoute {
  readonly id: string;
  /** Everything the tag parser read from src and opts (host, path, strip, and any later option). */
  readonly route: TagRoute;
  readonly targets: readonly FabioTarget[];
  readonly source: FabioSource;
}

/** A `route weight` line for a route fabio lines do not declare: it applies to the service serving it. */
export interface FabioWeightRule {
  readonly service: string | null;
  readonly routeId: string;
  readonly weight: number;
  readonly tags: readonly string[];
  readonly where: string;
}

export interface FabioTable {
  readonly routes: readonly FabioRoute[];
  /** Tag routes removed: all of a service's (routeId null) or one. */
  readonly removals: readonly { readonly service: string; readonly routeId: string | null }[];
  /** Consul instances removed by tags, of one service or (service null) of all. */
  readonly exclusions: readonly { readonly service: string | null; readonly tags: readonly string[] }[];
  readonly weights: readonly FabioWeightRule[];
  readonly problems: readonly Problem[];
  /** Per key, the lines in force: the next build's last good when a value cannot be read. */
  readonly good: ReadonlyMap<string, KeyLines>;
}

/** The lines of one key, from the value at `modifyIndex`. */
export interface KeyLines {
  readonly modifyIndex: number;
  readonly lines: readonly FabioLine[];
}

export const EMPTY_FABIO_TABLE: FabioTable = { routes: [], removals: [], exclusions: [], weights: [], problems: [], good: new Map() };

/** Runs every line of every key in order, on its own: a bad line is a problem and changes nothing. */
export function evaluateFabio(entries: readonly KvEntry[], previousGood: FabioTable['good']): FabioTable {
  const problems: Problem[] = [];
  const good = new Map<string, KeyLines>();
  const lineProblems: Problem[] = [];
  const table = new TableBuilder(lineProblems);
  if (entries.length > MAX_FABIO_KEYS) {
    problems.push({ kind: 'fabio-kv', subject: entries[MAX_FABIO_KEYS]?.key ?? '', message: `more than ${MAX_FABIO_KEYS} fabio route keys (${entries.length}); keys from this one on are ignored` });
  }
  let commands = 0;
  for (const entry of entries.slice(0, MAX_FABIO_KEYS)) {
    const inForce = linesOf(entry, previousGood, problems);
    if (inForce === undefined) continue;
    good.set(entry.key, inForce);
    for (const l of inForce.lines) {
      const where = `${entry.key} line ${l.line}`;
      if (++commands > MAX_FABIO_COMMANDS) {
        problems.push({ kind: 'fabio-kv', subject: where, message: `more than ${MAX_FABIO_COMMANDS} fabio route lines; this line and the ones after it are ignored` });
        break;
      }
      if (l.kind === 'error') lineProblems.push(lineProblem(where, l.text, l.error));
      else table.run(l.command, { kind: 'fabio-kv', key: entry.key, line: l.line, document: where }, l.text);
    }
    summarise(entry.key, lineProblems, problems);
    lineProblems.length = 0;
    if (commands > MAX_FABIO_COMMANDS) break;
  }
  return { ...table.result(), problems, good };
}

/** The first problems of a group (a key's lines, a service's weights) as they are, the rest counted in one. */
export function summarise(subject: string, lineProblems: readonly Problem[], out: Problem[]): void {
  for (const p of lineProblems.slice(0, MAX_LINE_PROBLEMS_PER_KEY)) out.push(p);
  const more = lineProblems.length - MAX_LINE_PROBLEMS_PER_KEY;
  if (more > 0) out.push({ kind: 'fabio-kv', subject, message: `${more} more refused or ineffective lines, not listed one by one (the first ${MAX_LINE_PROBLEMS_PER_KEY} are)` });
}

/** The lines of a key in force: its value's, or the last good ones when the value cannot be read. */
function linesOf(entry: KvEntry, previousGood: FabioTable['good'], problems: Problem[]): KeyLines | undefined {
  const refuse = (error: string): KeyLines | undefined => {
    const kept = previousGood.get(entry.key);
    problems.push({ kind: 'fabio-kv', subject: entry.key, message: `fabio routes at ModifyIndex ${entry.modifyIndex}: ${error}; ${kept ? `the last good value (ModifyIndex ${kept.modifyIndex}) stays in force` : 'no good value is known, the key adds nothing'}`, keptLastGood: kept !== undefined });
    return kept;
  };
  if (entry.undecodable) return refuse('value is not UTF-8 text');
  const parsed = parseFabioValue(entry.value ?? '');
  return parsed.ok ? { modifyIndex: entry.modifyIndex, lines: parsed.lines } : refuse(parsed.error);
}

function lineProblem(where: string, text: string, error: string): Problem {
  return { kind: 'fabio-kv', subject: where, message: `${quoteLine(text)}: ${error}; line ignored` };
}

interface MutableRoute {
  readonly id: string;
  readonly route: TagRoute;
  readonly routeKey: string;
  targets: FabioTarget[];
  readonly source: FabioSource;
}

class TableBuilder {
  /** Route id → route, in the order first added (a Map: ids and names come from outside). */
  private readonly routes = new Map<string, MutableRoute>();
  /** Service → routes that may hold targets of it, so a `route del <svc>` looks at those only. */
  private readonly byService = new Map<string, Set<MutableRoute>>();
  private targets = 0;
  private readonly removals: { service: string; routeId: string | null }[] = [];
  private readonly exclusions: { service: string | null; tags: readonly string[] }[] = [];
  private readonly weights: FabioWeightRule[] = [];

  constructor(private readonly problems: Problem[]) {}

  run(command: FabioCommand, source: FabioSource, text: string): void {
    const error = command.cmd === 'add' ? this.add(command, source) : command.cmd === 'del' ? this.del(command) : this.weigh(command, source.document);
    if (error !== null) this.problems.push(lineProblem(source.document, text, error));
  }

  result(): Omit<FabioTable, 'problems' | 'good'> {
    const routes = [...this.routes.values()].filter((r) => r.targets.length > 0).map((r) => ({ id: r.id, route: r.route, targets: r.targets, source: r.source }));
    return { routes, removals: this.removals, exclusions: this.exclusions, weights: this.weights };
  }

  private add(c: Extract<FabioCommand, { cmd: 'add' }>, source: FabioSource): string | null {
    const parsed = parseSrc(c.src, c.opts);
    if (typeof parsed === 'string') return parsed;
    const url = targetUrl(c.dst);
    if (url.error !== undefined) return url.error;
    const id = `${parsed.host ?? ''}${parsed.path}`;
    const routeKey = JSON.stringify(parsed);
    let route = this.routes.get(id);
    if (route && route.targets.length === 0) {
      this.routes.delete(id); // every target was deleted: the next add starts the route afresh
      route = undefined;
    }
    if (!route) {
      route = { id, route: parsed, routeKey, targets: [], source };
      this.routes.set(id, route);
    } else if (route.routeKey !== routeKey) {
      // fabio keeps options per target; cgw has them per route, so the first line's stay.
      return `route ${id} already has other options from ${route.source.document}; options are per route in cgw, so this target is not added`;
    }
    const target: FabioTarget = { service: c.service, url: url.url, tags: c.tags, fixedWeight: c.weight };
    // fabio's addTarget skips a target equal in service, URL, weight and tags.
    if (route.targets.some((t) => sameTarget(t, target))) return null;
    if (this.targets >= MAX_FABIO_TARGETS) return `more than ${MAX_FABIO_TARGETS} targets in the fabio routes; target not added`;
    route.targets.push(target);
    this.targets += 1;
    const routes = this.byService.get(c.service);
    if (routes) routes.add(route);
    else this.byService.set(c.service, new Set([route]));
    return null;
  }

  /** Drops the targets of `route` that `gone` matches. */
  private drop(route: MutableRoute, gone: (t: FabioTarget) => boolean): void {
    const kept = route.targets.filter((t) => !gone(t));
    this.targets -= route.targets.length - kept.length;
    route.targets = kept;
  }

  private del(c: Extract<FabioCommand, { cmd: 'del' }>): string | null {
    if (c.tags.length > 0) {
      const routes = c.service === null ? this.routes.values() : (this.byService.get(c.service) ?? []);
      for (const r of routes) this.drop(r, (t) => (c.service === null || t.service === c.service) && hasAll(t.tags, c.tags));
      this.exclusions.push({ service: c.service, tags: c.tags });
      return null;
    }
    const service = c.service as string;
    if (c.src === null) {
      for (const r of this.byService.get(service) ?? []) this.drop(r, (t) => t.service === service);
      this.byService.delete(service);
      this.removals.push({ service, routeId: null });
      return null;
    }
    const id = routeIdOf(c.src);
    if (typeof id !== 'string') return id.error;
    const route = this.routes.get(id);
    if (c.dst === null) {
      if (route) this.drop(route, (t) => t.service === service);
      this.removals.push({ service, routeId: id });
      return null;
    }
    const url = targetUrl(c.dst);
    if (url.error !== undefined) return url.error;
    const before = route?.targets.length ?? 0;
    if (route) this.drop(route, (t) => t.service === service && t.url === url.url);
    if ((route?.targets.length ?? 0) === before) {
      return `no target ${url.url} of service "${service}" on route ${id} was added by an earlier line; a Consul instance cannot be removed from a tag route one by one (put it in maintenance: consul maint)`;
    }
    return null;
  }

  private weigh(c: Extract<FabioCommand, { cmd: 'weight' }>, where: string): string | null {
    const id = routeIdOf(c.src);
    if (typeof id !== 'string') return id.error;
    const route = this.routes.get(id);
    if (!route || route.targets.length === 0) {
      this.weights.push({ service: c.service, routeId: id, weight: c.weight, tags: c.tags, where });
      return null;
    }
    // fabio's Route.setWeight: the matching targets share the weight.
    const matches = (t: FabioTarget): boolean => (c.service === null || t.service === c.service) && hasAll(t.tags, c.tags);
    const n = route.targets.filter(matches).length;
    if (n === 0) return `no target of route ${id} matches${c.service === null ? '' : ` service "${c.service}"`}${c.tags.length > 0 ? ` and tags ${c.tags.join(',')}` : ''}`;
    route.targets = route.targets.map((t) => (matches(t) ? { ...t, fixedWeight: c.weight / n } : t));
    return null;
  }
}

function sameTarget(a: FabioTarget, b: FabioTarget): boolean {
  return a.url === b.url && a.service === b.service && a.fixedWeight === b.fixedWeight && a.tags.length === b.tags.length && a.tags.every((t, i) => t === b.tags[i]);
}

function hasAll(carried: readonly string[], wanted: readonly string[]): boolean {
  return wanted.every((t) => carried.includes(t));
}

/** src and opts as the equivalent `urlprefix-<src> <opts>` tag, read by the tag parser. */
function parseSrc(src: string, opts: readonly string[]): TagRoute | string {
  if (src.startsWith(':')) return `src "${src}" is a TCP listener port; cgw routes HTTP only`;
  const parsed = parseUrlprefixTag(`${URLPREFIX}${src}${opts.length > 0 ? ` ${opts.join(' ')}` : ''}`);
  if (!parsed.ok) return `src ${quoteLine(src)}: ${parsed.error}`;
  // The target's URL says how it is dialled (http:// or https://, verified with Node's roots and
  // --upstream-ca); a line's options cannot say otherwise without a second, contradicting source.
  if (parsed.route.proto !== 'http' || parsed.route.tlsSkipVerify) return 'options proto= and tlsskipverify= do not apply to route add lines: the target URL (http:// or https://) says how it is dialled';
  return parsed.route;
}

function routeIdOf(src: string): string | { error: string } {
  const parsed = parseSrc(src, []);
  return typeof parsed === 'string' ? { error: parsed } : `${parsed.host ?? ''}${parsed.path}`;
}

/**
 * dst as an upstream URL: http or https, a host that can be dialled and a port, nothing else.
 * fabio also takes tcp:// and grpc:// targets, which cgw does not proxy, and forwards to a path
 * in the URL, which cgw leaves to the `prepend` option.
 */
export function targetUrl(dst: string): { url: string; error?: undefined } | { error: string } {
  let url: URL;
  try {
    url = new URL(dst);
  } catch {
    return { error: `dst ${quoteLine(dst)} is not a URL (expected http://host:port/)` };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { error: `dst ${quoteLine(dst)}: only http and https targets are proxied (not ${url.protocol.slice(0, -1)})` };
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    return { error: `dst ${quoteLine(dst)}: a target is scheme://host:port/ only, without path, query or credentials` };
  }
  const https = url.protocol === 'https:';
  const port = url.port === '' ? (https ? 443 : 80) : Number(url.port);
  const why = undialable(url.hostname.replace(/^\[|\]$/g, ''), port);
  if (why !== null) return { error: `dst ${quoteLine(dst)}: ${why}` };
  return { url: `${url.protocol}//${url.host}` };
}

/**
 * fabio's Route.weighTargets: targets with a fixed weight get it (scaled to 100% when they sum to
 * more, or when every target has one), the others share what is left equally. Fractions of 1.
 */
export function shareOf(fixed: readonly number[]): number[] {
  const nFixed = fixed.filter((w) => w > 0).length;
  if (fixed.length === 0) return [];
  if (nFixed === 0) return fixed.map(() => 1 / fixed.length);
  const sumFixed = fixed.reduce((a, w) => a + (w > 0 ? w : 0), 0);
  const scale = sumFixed > 1 || (nFixed === fixed.length && sumFixed < 1) ? 1 / sumFixed : 1;
  const dynamic = nFixed === fixed.length ? 0 : Math.max(0, (1 - sumFixed) / (fixed.length - nFixed));
  return fixed.map((w) => (w > 0 ? w * scale : dynamic));
}

/**
 * Shares as the integer weights the balancer takes, on fabio's ring of 10,000 slots: every target
 * with a share gets at least one slot, a target with none gets no traffic.
 */
export const WEIGHT_SLOTS = 10_000;
export function slotsOf(shares: readonly number[]): number[] {
  return shares.map((s) => (s > 0 ? Math.max(1, Math.round(s * WEIGHT_SLOTS)) : 0));
}
