import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';

/**
 * Where Consul is and how to talk to it, resolved once and alike for `cgw start` and every CLI
 * command: the settings the consul CLI reads (Consul docs, "Commands": environment variables).
 *
 * - Address: `--consul`, else `CONSUL_HTTP_ADDR`, else `127.0.0.1:8500`; `host:port` or an
 *   `http(s)://` URL. Without a scheme, `CONSUL_HTTP_SSL=true` means https.
 * - Token: `--token`, else the trimmed contents of `CONSUL_HTTP_TOKEN_FILE`, else
 *   `CONSUL_HTTP_TOKEN` (Consul's api.NewClient lets a non-empty token file override the token
 *   variable). It is sent as `X-Consul-Token`, never in a URL.
 * - TLS: `CONSUL_CACERT`, `CONSUL_CLIENT_CERT` with `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`.
 *
 * A bad value is a `ConsulSettingError` naming the flag or variable; callers turn it into exit 2.
 */

export const DEFAULT_CONSUL_ADDRESS = '127.0.0.1:8500';

/** A setting that cannot be used: the message names the flag or environment variable. */
export class ConsulSettingError extends Error {
  constructor(
    readonly setting: string,
    message: string,
  ) {
    super(`${setting}: ${message}`);
    this.name = 'ConsulSettingError';
  }
}

export interface ConsulTlsFiles {
  readonly caFile?: string;
  readonly certFile?: string;
  readonly keyFile?: string;
  readonly serverName?: string;
}

/** PEM text and server name, as Node's tls (and undici's `connect`) take them. */
export interface ConsulTlsMaterial {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly servername?: string;
}

export interface ConsulConnection {
  /** `http(s)://host:port`, no trailing slash: what requests go to and what messages name. */
  readonly address: string;
  readonly secure: boolean;
  /** Host name or IP, IPv6 without brackets. */
  readonly hostname: string;
  readonly port: number;
  readonly token?: string;
  /** Where the token came from (`--token`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_HTTP_TOKEN`), for messages. */
  readonly tokenSource?: string;
  readonly tlsFiles: ConsulTlsFiles;
  /** Read and checked; undefined when no TLS setting is given. */
  readonly tls?: ConsulTlsMaterial;
}

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

/** Go's strconv.ParseBool, which the consul CLI uses for CONSUL_HTTP_SSL. */
const goBool = z
  .string()
  .trim()
  .refine((t) => ['1', 't', 'T', 'TRUE', 'true', 'True', '0', 'f', 'F', 'FALSE', 'false', 'False'].includes(t), 'expected true or false')
  .transform((t) => ['1', 't', 'T', 'TRUE', 'true', 'True'].includes(t));

function addressSchema(defaultScheme: 'http' | 'https') {
  return z
    .string()
    .trim()
    .min(1, 'is empty; expected host:port or a URL such as http://127.0.0.1:8500')
    .transform((text, ctx) => {
      const scheme = SCHEME.exec(text)?.[1]?.toLowerCase();
      if (scheme !== undefined && scheme !== 'http' && scheme !== 'https') {
        ctx.addIssue({
          code: 'custom',
          message: `"${text}": ${scheme === 'unix' ? 'unix sockets are not supported' : `scheme ${scheme}:// is not supported`}; use host:port, http://host:port or https://host:port`,
        });
        return z.NEVER;
      }
      let url: URL;
      try {
        url = new URL(scheme === undefined ? `${defaultScheme}://${text}` : text);
      } catch {
        ctx.addIssue({ code: 'custom', message: `"${text}" is not host:port or a URL (e.g. 127.0.0.1:8500 or http://127.0.0.1:8500)` });
        return z.NEVER;
      }
      if (url.hostname === '') {
        ctx.addIssue({ code: 'custom', message: `"${text}" has no host (e.g. 127.0.0.1:8500)` });
        return z.NEVER;
      }
      if (url.username || url.password || (url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) {
        ctx.addIssue({ code: 'custom', message: `"${text}": give only scheme, host and port (no path, query or credentials; the token goes in --token or CONSUL_HTTP_TOKEN)` });
        return z.NEVER;
      }
      const secure = url.protocol === 'https:';
      return {
        address: url.origin,
        secure,
        hostname: url.hostname.replace(/^\[|\]$/g, ''),
        port: Number(url.port || (secure ? 443 : 80)),
      };
    });
}

type ParsedAddress = z.output<ReturnType<typeof addressSchema>>;

function parseWith<T>(schema: z.ZodType<T>, value: unknown, setting: string): T {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  throw new ConsulSettingError(setting, parsed.error.issues[0]?.message ?? 'invalid');
}

/** An environment variable's value, or undefined when unset or empty (as the consul CLI treats them). */
function envValue(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v;
}

function sslDefault(env: NodeJS.ProcessEnv): 'http' | 'https' {
  const ssl = envValue(env, 'CONSUL_HTTP_SSL');
  return ssl !== undefined && parseWith(goBool, ssl, 'CONSUL_HTTP_SSL') ? 'https' : 'http';
}

/**
 * An address given on the command line or in CONSUL_HTTP_ADDR → `http(s)://host:port`.
 * `setting` names the source in errors.
 */
export function parseConsulAddress(text: string, env: NodeJS.ProcessEnv, setting: string): ParsedAddress {
  return parseWith(addressSchema(sslDefault(env)), text, setting);
}

function readSettingFile(setting: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as { code?: string }).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : err instanceof Error ? err.message : String(err);
    throw new ConsulSettingError(setting, `cannot read ${path}: ${why}`);
  }
}

/** A token goes into the X-Consul-Token header: visible ASCII only (Consul's are UUIDs). */
function checkedToken(token: string, setting: string, where = ''): string {
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new ConsulSettingError(setting, `${where}the token holds spaces, line breaks or non-ASCII characters; it must be the token alone (e.g. a UUID)`);
  }
  return token;
}

/** The token from CONSUL_HTTP_TOKEN_FILE or CONSUL_HTTP_TOKEN (the file wins when it holds one). */
export function consulTokenFromEnv(env: NodeJS.ProcessEnv): { token: string; source: string } | undefined {
  const file = envValue(env, 'CONSUL_HTTP_TOKEN_FILE');
  if (file !== undefined) {
    const token = readSettingFile('CONSUL_HTTP_TOKEN_FILE', file).trim();
    if (token !== '') return { token: checkedToken(token, 'CONSUL_HTTP_TOKEN_FILE', `${file}: `), source: `CONSUL_HTTP_TOKEN_FILE (${file})` };
  }
  const token = envValue(env, 'CONSUL_HTTP_TOKEN')?.trim();
  return token ? { token: checkedToken(token, 'CONSUL_HTTP_TOKEN'), source: 'CONSUL_HTTP_TOKEN' } : undefined;
}

/** The TLS settings of the environment (paths only; `readConsulTls` reads them). */
export function consulTlsFilesFromEnv(env: NodeJS.ProcessEnv): ConsulTlsFiles {
  const out: { caFile?: string; certFile?: string; keyFile?: string; serverName?: string } = {};
  const ca = envValue(env, 'CONSUL_CACERT');
  const cert = envValue(env, 'CONSUL_CLIENT_CERT');
  const key = envValue(env, 'CONSUL_CLIENT_KEY');
  const name = envValue(env, 'CONSUL_TLS_SERVER_NAME');
  if (ca !== undefined) out.caFile = ca;
  if (cert !== undefined) out.certFile = cert;
  if (key !== undefined) out.keyFile = key;
  if (name !== undefined) out.serverName = name.trim();
  return out;
}

/**
 * Everything the environment says, without defaults: what `cgw start` merges under its flags.
 * The address is present when CONSUL_HTTP_ADDR or CONSUL_HTTP_SSL is set.
 */
export function consulSettingsFromEnv(env: NodeJS.ProcessEnv): { address?: string; token?: string; tls: ConsulTlsFiles } {
  const addr = envValue(env, 'CONSUL_HTTP_ADDR');
  const ssl = sslDefault(env);
  const address =
    addr !== undefined
      ? parseConsulAddress(addr, env, 'CONSUL_HTTP_ADDR').address
      : ssl === 'https'
        ? parseConsulAddress(DEFAULT_CONSUL_ADDRESS, env, 'CONSUL_HTTP_SSL').address
        : undefined;
  const token = consulTokenFromEnv(env)?.token;
  return { ...(address !== undefined ? { address } : {}), ...(token !== undefined ? { token } : {}), tls: consulTlsFilesFromEnv(env) };
}

/**
 * Reads and checks the TLS files: each must be readable PEM of the right kind, and a client
 * certificate needs its key (and the other way round). Undefined when no TLS setting is given.
 */
export function readConsulTls(files: ConsulTlsFiles): ConsulTlsMaterial | undefined {
  if (!files.caFile && !files.certFile && !files.keyFile && !files.serverName) return undefined;
  if (Boolean(files.certFile) !== Boolean(files.keyFile)) {
    throw new ConsulSettingError(files.certFile ? 'CONSUL_CLIENT_KEY' : 'CONSUL_CLIENT_CERT', 'a client certificate needs its key: set both CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY');
  }
  const out: { ca?: string; cert?: string; key?: string; servername?: string } = {};
  if (files.caFile) {
    out.ca = readSettingFile('CONSUL_CACERT', files.caFile);
    checkPem('CONSUL_CACERT', files.caFile, () => new X509Certificate(out.ca ?? ''), 'a PEM certificate');
  }
  if (files.certFile) {
    out.cert = readSettingFile('CONSUL_CLIENT_CERT', files.certFile);
    checkPem('CONSUL_CLIENT_CERT', files.certFile, () => new X509Certificate(out.cert ?? ''), 'a PEM certificate');
  }
  if (files.keyFile) {
    out.key = readSettingFile('CONSUL_CLIENT_KEY', files.keyFile);
    checkPem('CONSUL_CLIENT_KEY', files.keyFile, () => createPrivateKey(out.key ?? ''), 'a PEM private key');
  }
  if (files.serverName) out.servername = files.serverName;
  return out;
}

function checkPem(setting: string, path: string, parse: () => unknown, what: string): void {
  try {
    parse();
  } catch {
    throw new ConsulSettingError(setting, `${path} is not ${what}`);
  }
}

/**
 * The whole connection for a CLI command: flags first, then the environment, then the default
 * address. `flags.token` (`--token`) wins, and the token file is then not read at all.
 */
export function resolveConsulConnection(flags: { readonly address?: string; readonly token?: string }, env: NodeJS.ProcessEnv): ConsulConnection {
  const envAddr = envValue(env, 'CONSUL_HTTP_ADDR');
  const [text, setting] =
    flags.address !== undefined ? [flags.address, '--consul'] : envAddr !== undefined ? [envAddr, 'CONSUL_HTTP_ADDR'] : [DEFAULT_CONSUL_ADDRESS, 'CONSUL_HTTP_SSL'];
  const parsed = parseConsulAddress(text, env, setting);
  const flagToken = flags.token?.trim();
  const token = flagToken ? { token: checkedToken(flagToken, '--token'), source: '--token' } : consulTokenFromEnv(env);
  const tlsFiles = consulTlsFilesFromEnv(env);
  const tls = readConsulTls(tlsFiles);
  return {
    ...parsed,
    ...(token ? { token: token.token, tokenSource: token.source } : {}),
    tlsFiles,
    ...(tls ? { tls } : {}),
  };
}
