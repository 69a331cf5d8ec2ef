import { EventEmitter } from 'node:events';
import { Agent as HttpAgent, STATUS_CODES, type IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import Consul from 'consul';
import type { ConsulConnection } from '../consul/connection.ts';
import type { ServiceLookup } from '../state/canary-tags.ts';
import { CliError } from './admin-client.ts';

/**
 * Consul access for the KV commands (canary, policy push, consumers): KV (small enough to fake in
 * unit tests) and the catalog, through the `consul` package, after checking that the address is a
 * Consul agent at all. Apart from the `consul` package it loads nothing, so `cgw canary get` does
 * not pay for the policy document parsers.
 */

export interface KvItem {
  readonly key: string;
  readonly value: string | null;
  readonly modifyIndex: number;
  /** Consul's opaque Flags when not 0: which cgw command wrote the value (core/kv-layout.ts). */
  readonly flags?: number;
}

export interface KvStore {
  /** Every key under `prefix` (recursive); [] when there is none. */
  list(prefix: string): Promise<KvItem[]>;
  get(key: string): Promise<KvItem | undefined>;
  /** Check-and-set write; false when the key's ModifyIndex is no longer `cas` (0: the key exists). `flags` marks the writer. */
  set(key: string, value: string, cas: number, flags?: number): Promise<boolean>;
  /** Check-and-set delete; false when the key changed since ModifyIndex `cas`. */
  del(key: string, cas: number): Promise<boolean>;
}

export type { ServiceLookup } from '../state/canary-tags.ts';

export interface ServiceCatalog {
  service(name: string): Promise<ServiceLookup>;
}

/** What `cgw fleet` reads: every instance of the gateways' service with its checks, and Consul's catalog index. */
export interface FleetReader {
  /** `/v1/health/service/<name>` as Consul answered it (validated by the caller). */
  healthOf(name: string): Promise<unknown>;
  /** X-Consul-Index of `/v1/catalog/services`: the index every gateway's catalog watch follows. */
  catalogIndex(): Promise<number>;
}

export interface ConsulStore extends KvStore, ServiceCatalog {
  /** `http(s)://host:port`, for messages. */
  readonly address: string;
}

interface ConsulKvEntry {
  Key?: string;
  Value?: string | null;
  ModifyIndex?: number;
  Flags?: number;
}

const itemOf = (e: ConsulKvEntry): KvItem => ({
  key: String(e.Key ?? ''),
  value: e.Value ?? null,
  modifyIndex: Number(e.ModifyIndex ?? 0),
  ...(typeof e.Flags === 'number' && e.Flags > 0 ? { flags: e.Flags } : {}),
});

/** Each request's bound: a Consul agent answers these reads and writes in milliseconds. */
const CONSUL_TIMEOUT_MS = 10_000;

interface RawResponse {
  readonly statusCode: number;
  readonly headers: IncomingHttpHeaders;
  readonly body?: unknown;
}

/** With an EventEmitter `ctx` whose `includeResponse` is true, the package answers [response, value]. */
type Answer = [RawResponse, unknown?];
interface CallOptions {
  readonly ctx: EventEmitter;
  readonly [name: string]: unknown;
}

/** The calls of the `consul` package used here (its typings know neither `ctx` nor `baseUrl`). */
interface RawConsul {
  readonly status: { leader(o: CallOptions): Promise<Answer> };
  readonly kv: { get(o: CallOptions): Promise<Answer>; set(o: CallOptions): Promise<Answer>; del(o: CallOptions): Promise<Answer> };
  readonly catalog: { readonly service: { nodes(o: CallOptions): Promise<Answer>; list(o: CallOptions): Promise<Answer> } };
  readonly health: { service(o: CallOptions): Promise<Answer> };
  /** papi's generic request, for an endpoint the package has no method for. */
  _get(o: { path: string; headers?: Record<string, string>; timeout?: number }): Promise<RawResponse>;
}

function withResponse(): EventEmitter {
  return Object.assign(new EventEmitter(), { includeResponse: true });
}

/**
 * The `consul` package takes TLS material through its `agent` option: papi hands it to
 * `https.request`, and an https.Agent's own options (ca, cert, key, servername) apply to every
 * socket it opens. `baseUrl` (rather than host/port, which it would join into "http://::1:8500")
 * keeps IPv6 addresses parseable.
 */
function rawConsul(c: ConsulConnection): RawConsul {
  const agent = c.secure ? new HttpsAgent({ keepAlive: false, ...(c.tls ?? {}) }) : new HttpAgent({ keepAlive: false });
  const Client = Consul as unknown as new (opts: Record<string, unknown>) => RawConsul;
  const client = new Client({
    baseUrl: `${c.address}/v1`,
    agent,
    defaults: { timeout: CONSUL_TIMEOUT_MS, ...(c.token ? { token: c.token } : {}) },
  });
  // papi keeps the URL's hostname, brackets included, and hands it to http.request, which then
  // looks up "[::1]" as a name; without brackets Node connects to the address and writes the
  // Host header with brackets itself.
  const base = (client as unknown as { _opts?: { baseUrl?: { hostname?: string } } })._opts?.baseUrl;
  if (base) base.hostname = c.hostname;
  return client;
}

function headerOf(res: RawResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function bodyText(res: RawResponse): string {
  const b = res.body;
  const text = typeof b === 'string' ? b : Buffer.isBuffer(b) ? b.toString('utf8') : b === undefined || b === null ? '' : JSON.stringify(b);
  return text.trim().replace(/\s+/g, ' ').slice(0, 200);
}

function statusText(res: RawResponse): string {
  return `${res.statusCode}${STATUS_CODES[res.statusCode] ? ` ${STATUS_CODES[res.statusCode]}` : ''}`;
}

/** A transport failure in words: the error codes of Node's net, tls and papi. */
function transportProblem(err: unknown, c: ConsulConnection): string {
  const e = err as { code?: string; message?: string; isTimeout?: boolean };
  const code = e.code ?? '';
  const message = (e.message ?? String(err)).replace(/^consul: [\w.]+: /, '');
  if (e.isTimeout) return `no answer within ${CONSUL_TIMEOUT_MS / 1000} s`;
  if (code === 'ECONNREFUSED') return 'connection refused (is a Consul agent listening there?)';
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return `host ${c.hostname} not found`;
  if (code === 'ECONNRESET') return 'connection reset';
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return 'host unreachable';
  if (/wrong version number|packet length too long|unknown protocol/i.test(message)) return 'TLS handshake failed: the other side does not speak TLS (is it an http:// address?)';
  if (code === 'EPROTO') return `TLS handshake failed: ${message.split('\n')[0] ?? ''}`;
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) {
    return `TLS certificate not accepted: ${message} (CONSUL_CACERT names the CA, CONSUL_TLS_SERVER_NAME the name to verify)`;
  }
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

/** The response of an HTTP error (papi rejects non-2xx answers with it attached). */
function responseOf(err: unknown): RawResponse | undefined {
  const res = (err as { response?: RawResponse } | null)?.response;
  return res && typeof res.statusCode === 'number' ? res : undefined;
}

function isJson(res: RawResponse): boolean {
  return /^application\/json\b/i.test(headerOf(res, 'content-type') ?? '');
}

/**
 * Consul through the `consul` package. Before the first request it checks that the address is a
 * Consul agent (GET /v1/status/leader answers 200 with the leader's address as a JSON string), and
 * every KV or catalog answer must carry Consul's X-Consul-Index: an HTTP server that answers 404
 * or HTML to everything would otherwise read as "no such key". Failures are exit-1 CliErrors.
 */
export function consulKv(connection: ConsulConnection): ConsulStore & FleetReader {
  const raw = rawConsul(connection);
  const address = connection.address;
  let verified: Promise<void> | undefined;

  const notConsul = (why: string): CliError => new CliError(`${address} is not a Consul agent: ${why}`);
  const unreachable = (err: unknown): CliError => new CliError(`cannot reach Consul at ${address}: ${transportProblem(err, connection)}`);
  const tokenWords = connection.token ? `the ACL token from ${connection.tokenSource ?? '--token'}` : 'no ACL token was given (--token, CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE), and the anonymous token';
  const failed = (what: string, res: RawResponse): CliError => {
    const text = bodyText(res);
    if (res.statusCode === 403 && /ACL not found/i.test(text)) {
      return new CliError(`Consul at ${address} does not know ${connection.token ? `the ACL token from ${connection.tokenSource ?? '--token'}` : 'the anonymous token'} (403 ACL not found) and refused to ${what}`);
    }
    if (res.statusCode === 403) return new CliError(`Consul at ${address} refused to ${what}: ${tokenWords} lacks permission (403${text ? ` ${text}` : ''})`);
    return new CliError(`Consul at ${address} answered ${statusText(res)} when asked to ${what}${text ? `: ${text}` : ''}`);
  };

  /** One call: [response, value] on 2xx (and 404 for KV reads), a CliError otherwise. */
  const call = async (what: string, run: (ctx: EventEmitter) => Promise<Answer>, accept404 = false): Promise<Answer> => {
    await ready();
    let answer: Answer;
    try {
      answer = await run(withResponse());
    } catch (err) {
      const res = responseOf(err);
      if (!res) throw unreachable(err);
      // Consul's KV read answers 404 (with X-Consul-Index) for a missing key; readAnswer checks it.
      if (!(accept404 && res.statusCode === 404)) throw failed(what, res);
      answer = [res];
    }
    return answer;
  };

  const readAnswer = (what: string, [res]: Answer): void => {
    if (headerOf(res, 'x-consul-index') === undefined) throw notConsul(`its answer to a request to ${what} carries no X-Consul-Index header`);
  };

  const writeAnswer = (what: string, [res, value]: Answer): boolean => {
    if (typeof value !== 'boolean' || !isJson(res)) throw notConsul(`it answered ${JSON.stringify(bodyText(res))} when asked to ${what}, instead of true or false`);
    return value;
  };

  const verify = async (): Promise<void> => {
    let res: RawResponse;
    let value: unknown;
    try {
      [res, value] = await raw.status.leader({ ctx: withResponse() });
    } catch (err) {
      const r = responseOf(err);
      if (!r) throw unreachable(err);
      res = r;
      value = r.body;
    }
    if (res.statusCode === 400 && /HTTP request to an HTTPS server/i.test(bodyText(res))) {
      throw new CliError(`Consul at ${address} is an HTTPS listener: use https://${address.replace(/^http:\/\//, '')} or CONSUL_HTTP_SSL=true`);
    }
    if (res.statusCode === 403) throw failed('read /v1/status/leader', res);
    if (res.statusCode >= 500) {
      // Consul itself answers 5xx when its servers cannot be reached; a proxy in front may too.
      const text = bodyText(res);
      throw new CliError(`${address} is not a working Consul agent: GET /v1/status/leader answered ${statusText(res)}${text ? `: ${text}` : ''}`);
    }
    if (res.statusCode !== 200) throw notConsul(`GET /v1/status/leader answered ${statusText(res)}`);
    if (!isJson(res) || typeof value !== 'string' || (value !== '' && !/:\d+$/.test(value))) {
      const type = headerOf(res, 'content-type') ?? 'no content type';
      throw notConsul(`GET /v1/status/leader answered 200 with ${type} (${JSON.stringify(bodyText(res).slice(0, 60))}), not the leader's address as a JSON string`);
    }
    if (value === '') throw new CliError(`Consul at ${address} has no cluster leader (GET /v1/status/leader answered ""): reads and writes would fail; try again once the servers have elected one`);
  };
  const ready = (): Promise<void> => (verified ??= verify());

  const items = (value: unknown): ConsulKvEntry[] => (Array.isArray(value) ? (value as ConsulKvEntry[]) : value ? [value as ConsulKvEntry] : []);

  const store: ConsulStore & FleetReader = {
    address,
    async list(prefix) {
      const what = `list ${prefix}`;
      const answer = await call(what, (ctx) => raw.kv.get({ key: prefix, recurse: true, ctx }), true);
      readAnswer(what, answer);
      const found = items(answer[1]).map(itemOf);
      // With ACLs, a recursive read leaves out what the token may not read (404 when that is
      // everything); reading the prefix key itself answers 403 then, so an empty list is true.
      if (found.length === 0) await store.get(prefix);
      return found;
    },
    async get(key) {
      const what = `read ${key}`;
      const answer = await call(what, (ctx) => raw.kv.get({ key, ctx }), true);
      readAnswer(what, answer);
      if (answer[0].statusCode === 404) return undefined;
      const [entry] = items(answer[1]);
      if (!entry) throw notConsul(`it answered 200 without a KV entry when asked to ${what}`);
      return itemOf({ ...entry, Key: key });
    },
    async set(key, value, cas, flags) {
      const what = `write ${key}`;
      return writeAnswer(what, await call(what, (ctx) => raw.kv.set({ key, value, cas, ...(flags ? { flags } : {}), ctx })));
    },
    async del(key, cas) {
      const what = `delete ${key}`;
      return writeAnswer(what, await call(what, (ctx) => raw.kv.del({ key, cas, ctx })));
    },
    async service(name) {
      const what = `list the instances of service ${name}`;
      const answer = await call(what, (ctx) => raw.catalog.service.nodes({ service: name, ctx }));
      readAnswer(what, answer);
      if (!Array.isArray(answer[1])) throw notConsul(`it answered ${JSON.stringify(bodyText(answer[0]).slice(0, 60))} when asked to ${what}, not a JSON list`);
      const instances = answer[1] as { ServiceTags?: unknown }[];
      if (instances.length > 0) {
        const tags = new Set<string>();
        for (const i of instances) for (const t of Array.isArray(i.ServiceTags) ? i.ServiceTags : []) if (typeof t === 'string') tags.add(t);
        return { found: true, instances: instances.length, tags: [...tags].sort() };
      }
      return { found: false, aclsEnabled: await aclsEnabled() };
    },
    async healthOf(name) {
      const what = `list the instances of service ${name} with their checks`;
      const answer = await call(what, (ctx) => raw.health.service({ service: name, ctx }));
      readAnswer(what, answer);
      if (!Array.isArray(answer[1])) throw notConsul(`it answered ${JSON.stringify(bodyText(answer[0]).slice(0, 60))} when asked to ${what}, not a JSON list`);
      return answer[1];
    },
    async catalogIndex() {
      const what = 'list the services of the catalog';
      const answer = await call(what, (ctx) => raw.catalog.service.list({ ctx }));
      readAnswer(what, answer);
      const index = Number(headerOf(answer[0], 'x-consul-index'));
      if (!Number.isSafeInteger(index) || index < 0) throw notConsul(`its X-Consul-Index ${JSON.stringify(headerOf(answer[0], 'x-consul-index'))} is not an index`);
      return index;
    },
  };

  /** Whether the agent enforces ACLs: GET /v1/acl/token/self answers 401 "ACL support disabled" when not. */
  const aclsEnabled = async (): Promise<boolean> => {
    try {
      await raw._get({ path: '/acl/token/self', timeout: CONSUL_TIMEOUT_MS, headers: connection.token ? { 'x-consul-token': connection.token } : {} });
      return true;
    } catch (err) {
      const res = responseOf(err);
      if (!res) throw unreachable(err);
      return !(res.statusCode === 401 && /ACL support disabled/i.test(bodyText(res)));
    }
  };

  return store;
}

/** `gateway` → `gateway/`, validated like `cgw start --kv-prefix`. */
export function normalizeKvPrefix(prefix: string): string {
  if (!/^[A-Za-z0-9_./-]*$/.test(prefix)) throw new CliError(`--kv-prefix: "${prefix}" may hold only letters, digits and _ . / -`, 2);
  return prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`;
}
