import { readFileSync } from 'node:fs';
import { describeError } from '../core/errors.ts';

/**
 * A failure the CLI reports as one line and an exit code (README, "Exit codes"): 1 failure,
 * 2 invalid input, 3 a lost check-and-set. `details` are added to the JSON error of `--json`.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    readonly details?: Readonly<Record<string, unknown>>,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export const DEFAULT_ADMIN = '127.0.0.1:9901';

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

/**
 * `--admin`, else `CGW_ADMIN`, else 127.0.0.1:9901 → `http://host:port`. Takes the forms
 * `cgw start --admin` takes (`host:port`, `:port`, `[v6]:port`) and URLs (`http://host:port`).
 */
export function resolveAdminAddress(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  const fromEnv = env.CGW_ADMIN?.trim() ? env.CGW_ADMIN : undefined;
  const [raw, setting] = flag !== undefined ? [flag, '--admin'] : fromEnv !== undefined ? [fromEnv, 'CGW_ADMIN'] : [DEFAULT_ADMIN, '--admin'];
  const text = raw.trim();
  const bad = (why: string): CliError => new CliError(`${setting}: "${raw}" ${why} (e.g. 127.0.0.1:9901 or http://127.0.0.1:9901)`, 2);
  if (text === '') throw bad('is empty');
  const scheme = SCHEME.exec(text)?.[1]?.toLowerCase();
  if (scheme !== undefined && scheme !== 'http' && scheme !== 'https') throw bad(`has scheme ${scheme}://; the admin API speaks http`);
  // ":9901" is how a listener is written for every interface; a client asks the local one.
  const withHost = scheme === undefined && text.startsWith(':') ? `127.0.0.1${text}` : text;
  let url: URL;
  try {
    url = new URL(scheme === undefined ? `http://${withHost}` : withHost);
  } catch {
    throw bad('is not host:port or a URL');
  }
  if (url.hostname === '') throw bad('has no host');
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash || url.username || url.password) throw bad('must be only scheme, host and port');
  return url.origin;
}

/**
 * `Authorization: Bearer` for a gateway started with an admin token: CGW_ADMIN_TOKEN, else the file
 * CGW_ADMIN_TOKEN_FILE names (read when a command runs; an unreadable file is a clear error).
 */
function adminAuthorization(): Record<string, string> {
  let token = process.env.CGW_ADMIN_TOKEN?.trim();
  const file = process.env.CGW_ADMIN_TOKEN_FILE;
  if (!token && file) {
    try {
      token = readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new CliError(`CGW_ADMIN_TOKEN_FILE: cannot read ${file}: ${(err as Error).message}`, 2);
    }
  }
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** How long the admin API may stay silent: before its answer starts, and between two pieces of it. */
const ADMIN_TIMEOUT_MS = 5_000;

/**
 * One GET with Node's own http client: every inspection command makes a single request, and
 * loading undici would cost more start-up time than the whole request takes.
 */
async function get(url: URL, headers: Record<string, string>): Promise<{ statusCode: number; text: string }> {
  // node:https loads tls, which an http:// admin address does not need.
  const { request: send } = url.protocol === 'https:' ? await import('node:https') : await import('node:http');
  return new Promise((resolve, reject) => {
    let timedOut = false;
    const req = send(url, { method: 'GET', agent: false, timeout: ADMIN_TIMEOUT_MS, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ statusCode: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', (err) => reject(timedOut ? Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' }) : err));
    });
    req.on('timeout', () => {
      timedOut = true;
      req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** GET a JSON view from the admin API (`admin` as resolveAdminAddress returns it); problems become one clear line. */
export async function fetchAdmin<T>(admin: string, path: string): Promise<T> {
  const url = new URL(path, `${admin}/`);
  // Before the request: an unreadable token file is the operator's input to fix (exit 2), not an unreachable gateway.
  const headers = adminAuthorization();
  let res;
  try {
    res = await get(url, headers);
  } catch (err) {
    const code = (err as { code?: string }).code;
    const why =
      code === 'ECONNREFUSED'
        ? 'connection refused (is the gateway running, and is this its admin address?)'
        : code === 'ETIMEDOUT'
          ? `no answer within ${ADMIN_TIMEOUT_MS / 1000} s`
          : describeError(err);
    throw new CliError(`cannot reach the gateway admin API at ${url.origin}: ${why}`);
  }
  const text = res.text;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new CliError(`${url.origin} is not a cgw admin API: GET ${url.pathname} answered ${res.statusCode} with non-JSON content`);
  }
  if (res.statusCode !== 200) {
    const message = (body as { error?: { message?: unknown } } | null)?.error?.message;
    throw new CliError(typeof message === 'string' ? message : `the admin API at ${url.origin} answered ${res.statusCode} to GET ${url.pathname}`);
  }
  return body as T;
}
