import type { Logger } from '../core/logger.ts';
import type { ConsulClient } from './client.ts';

/**
 * One Consul session per gateway and the locks it holds (Consul's leader-election recipe: a KV
 * key acquired with `?acquire=<session>`). The session has a TTL and is renewed well within it;
 * a gateway that dies stops renewing, Consul invalidates the session after the TTL (it may wait
 * up to twice that) and releases its locks, so another gateway takes them on its next try. A
 * draining gateway destroys its session, which releases its locks at once.
 *
 * The lock decides who drives; it is not what keeps two gateways from acting twice. Every write a
 * driver makes is a check-and-set on the document it read, so a gateway that still believes it
 * holds a lock it lost cannot overwrite a newer decision.
 */

export const SESSION_TTL_SECONDS = 10;
const CALL_TIMEOUT_MS = 5_000;

export class ConsulSession {
  private id: string | null = null;
  private renewedAt = 0;
  private creating: Promise<string | null> | null = null;

  constructor(
    private readonly consul: ConsulClient,
    /** Shown in Consul's session list and stored in the locks it takes. */
    private readonly name: string,
    private readonly logger: Logger,
    private readonly onError: (operation: string) => void,
  ) {}

  /** The session id, created or renewed as needed; null when Consul cannot give one now. */
  async current(now = Date.now()): Promise<string | null> {
    if (this.id !== null && now - this.renewedAt < (SESSION_TTL_SECONDS * 1000) / 3) return this.id;
    if (this.id !== null && (await this.renew(this.id))) {
      this.renewedAt = now;
      return this.id;
    }
    this.creating ??= this.create().finally(() => (this.creating = null));
    return this.creating;
  }

  private async renew(id: string): Promise<boolean> {
    try {
      const res = await this.consul.write('PUT', `/v1/session/renew/${encodeURIComponent(id)}`, {}, undefined, CALL_TIMEOUT_MS);
      if (res.status === 200) return true;
      // 404: Consul invalidated it (the TTL passed without a renewal): its locks are gone.
      this.logger.warn({ session: id, status: res.status }, 'Consul session lost; its locks are released, a new session is made');
    } catch (err) {
      this.onError('session-renew');
      this.logger.warn({ err: (err as Error).message }, 'renewing the Consul session failed');
      // Unknown whether it lives: keep it and try again next time rather than make a second one.
      return false;
    }
    this.id = null;
    return false;
  }

  private async create(): Promise<string | null> {
    try {
      const body = JSON.stringify({ Name: this.name.slice(0, 200), TTL: `${SESSION_TTL_SECONDS}s`, Behavior: 'release', LockDelay: '1s' });
      const res = await this.consul.write('PUT', '/v1/session/create', {}, body, CALL_TIMEOUT_MS);
      const id = res.status === 200 ? sessionIdOf(res.text) : null;
      if (id === null) {
        this.onError('session-create');
        this.logger.warn({ status: res.status, body: res.text.slice(0, 200) }, 'Consul refused to create a session (ACL session:write needed); rollouts are not driven from this gateway');
        return null;
      }
      this.id = id;
      this.renewedAt = Date.now();
      return id;
    } catch (err) {
      this.onError('session-create');
      this.logger.warn({ err: (err as Error).message }, 'creating a Consul session failed');
      return null;
    }
  }

  /**
   * Takes the lock at `key` (or confirms it is held) for this session: true when held. Acquiring
   * is a Raft write, so callers first read whether someone else holds it.
   */
  async acquire(key: string, value: string): Promise<boolean> {
    const id = await this.current();
    if (id === null) return false;
    try {
      const res = await this.consul.write('PUT', `/v1/kv/${encodeKey(key)}`, { acquire: id }, value, CALL_TIMEOUT_MS);
      return res.status === 200 && res.text.trim() === 'true';
    } catch (err) {
      this.onError('lock-acquire');
      this.logger.warn({ key, err: (err as Error).message }, 'taking a Consul lock failed');
      return false;
    }
  }

  async release(key: string): Promise<void> {
    if (this.id === null) return;
    try {
      await this.consul.write('PUT', `/v1/kv/${encodeKey(key)}`, { release: this.id }, undefined, CALL_TIMEOUT_MS);
    } catch (err) {
      this.onError('lock-release');
      this.logger.warn({ key, err: (err as Error).message }, 'releasing a Consul lock failed; the session TTL releases it');
    }
  }

  /** Whether this session is the one holding a lock read as `Session` of a KV entry. */
  holds(sessionOfLock: string | undefined): boolean {
    return this.id !== null && sessionOfLock === this.id;
  }

  /** On drain: the locks go at once instead of after the TTL. */
  async destroy(): Promise<void> {
    const id = this.id;
    this.id = null;
    if (id === null) return;
    try {
      await this.consul.write('PUT', `/v1/session/destroy/${encodeURIComponent(id)}`, {}, undefined, CALL_TIMEOUT_MS);
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'destroying the Consul session failed; its TTL ends it');
    }
  }
}

/** Each segment percent-encoded, the slashes kept (Consul reads them as the key's hierarchy). */
export function encodeKey(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

function sessionIdOf(text: string): string | null {
  try {
    const body = JSON.parse(text) as unknown;
    const id = body !== null && typeof body === 'object' && 'ID' in body ? (body as { ID: unknown }).ID : undefined;
    return typeof id === 'string' && /^[0-9a-f-]{36}$/.test(id) ? id : null;
  } catch {
    return null;
  }
}
