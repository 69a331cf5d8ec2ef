import { request } from 'undici';
import { describeError } from '../core/errors.ts';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** GET a JSON view from the admin API; connection problems become one clear line. */
export async function fetchAdmin<T>(adminUrl: string, path: string): Promise<T> {
  let url: URL;
  try {
    url = new URL(path, adminUrl.endsWith('/') ? adminUrl : `${adminUrl}/`);
  } catch {
    throw new CliError(`--admin: "${adminUrl}" is not a URL (e.g. http://127.0.0.1:9901)`, 2);
  }
  let res;
  try {
    res = await request(url, { method: 'GET', headersTimeout: 5_000, bodyTimeout: 5_000 });
  } catch (err) {
    throw new CliError(`cannot reach the gateway admin API at ${url.origin}: ${describeError(err)}`);
  }
  const text = await res.body.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new CliError(`admin API answered ${res.statusCode} with non-JSON content from ${url.href}`);
  }
  if (res.statusCode !== 200) {
    const message = (body as { error?: { message?: string } })?.error?.message ?? `HTTP ${res.statusCode}`;
    throw new CliError(message);
  }
  return body as T;
}
