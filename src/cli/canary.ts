import Consul from 'consul';
import { parseCanaryArgs, parseCanaryValue, type CanaryWeights } from '../policy/canary.ts';
import { CliError } from './admin-client.ts';
import { describeError } from '../core/errors.ts';

/**
 * `cgw canary` writes KV with check-and-set on the key's ModifyIndex (Consul docs, KV store
 * endpoint, `?cas=`), through the `consul` package: one-off reads and CAS writes are what it does
 * well (docs/consul-notes.md, "The `consul` npm package"). Values are validated with the
 * gateway's own schema first.
 */
export interface KvTarget {
  readonly consul: string;
  readonly token?: string;
  readonly kvPrefix: string;
}

export function consulFor(target: KvTarget): Consul {
  let url: URL;
  try {
    url = new URL(/^[a-z]+:\/\//i.test(target.consul) ? target.consul : `http://${target.consul}`);
  } catch {
    throw new CliError(`--consul: "${target.consul}" is not a URL (e.g. http://127.0.0.1:8500)`, 2);
  }
  const secure = url.protocol === 'https:';
  return new Consul({
    host: url.hostname,
    port: Number(url.port || (secure ? 443 : 80)),
    secure,
    defaults: target.token ? { token: target.token } : undefined,
  });
}

export function canaryKey(target: KvTarget, service: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(service)) throw new CliError(`"${service}" is not a valid service name`, 2);
  const prefix = target.kvPrefix === '' || target.kvPrefix.endsWith('/') ? target.kvPrefix : `${target.kvPrefix}/`;
  return `${prefix}canary/${service}`;
}

export interface CanaryRecord {
  readonly key: string;
  readonly modifyIndex: number;
  readonly raw: string | null;
  readonly weights: CanaryWeights['weights'] | null;
  readonly invalid: string | null;
}

async function readKey(consul: Consul, key: string): Promise<{ value: string | null; modifyIndex: number } | undefined> {
  try {
    const entry = (await consul.kv.get({ key })) as { Value?: string | null; ModifyIndex?: number } | undefined | null;
    if (!entry) return undefined;
    return { value: entry.Value ?? null, modifyIndex: Number(entry.ModifyIndex ?? 0) };
  } catch (err) {
    throw new CliError(`cannot read ${key} from Consul: ${describeError(err)}`);
  }
}

export async function getCanary(target: KvTarget, service: string): Promise<CanaryRecord | undefined> {
  const key = canaryKey(target, service);
  const entry = await readKey(consulFor(target), key);
  if (!entry) return undefined;
  const parsed = parseCanaryValue(entry.value);
  return {
    key,
    modifyIndex: entry.modifyIndex,
    raw: entry.value,
    weights: parsed.ok ? parsed.value.weights : null,
    invalid: parsed.ok ? null : parsed.error,
  };
}

export async function setCanary(
  target: KvTarget,
  service: string,
  args: readonly string[],
  expectedIndex?: number,
): Promise<{ key: string; weights: CanaryWeights['weights']; modifyIndex: number }> {
  const parsed = parseCanaryArgs(args);
  if (!parsed.ok) throw new CliError(`invalid canary weights: ${parsed.error}`, 2);
  const key = canaryKey(target, service);
  const consul = consulFor(target);
  const current = await readKey(consul, key);
  const cas = expectedIndex ?? current?.modifyIndex ?? 0;
  if (expectedIndex !== undefined && (current?.modifyIndex ?? 0) !== expectedIndex) {
    throw new CliError(`${key} changed since ModifyIndex ${expectedIndex} (now ${current?.modifyIndex ?? 'absent'}); nothing written`, 3);
  }
  let written: boolean;
  try {
    written = Boolean(await consul.kv.set({ key, value: JSON.stringify(parsed.value), cas }));
  } catch (err) {
    throw new CliError(`cannot write ${key}: ${describeError(err)}`);
  }
  if (!written) throw new CliError(`${key} was changed by someone else while writing (check-and-set on ModifyIndex ${cas} lost); nothing written`, 3);
  const after = await readKey(consul, key);
  return { key, weights: parsed.value.weights, modifyIndex: after?.modifyIndex ?? 0 };
}

export async function clearCanary(target: KvTarget, service: string): Promise<{ key: string; deleted: boolean }> {
  const key = canaryKey(target, service);
  const consul = consulFor(target);
  const current = await readKey(consul, key);
  if (!current) return { key, deleted: false };
  let deleted: boolean;
  try {
    deleted = Boolean(await consul.kv.del({ key, cas: current.modifyIndex }));
  } catch (err) {
    throw new CliError(`cannot delete ${key}: ${describeError(err)}`);
  }
  if (!deleted) throw new CliError(`${key} was changed by someone else while deleting (check-and-set lost); nothing deleted`, 3);
  return { key, deleted: true };
}
