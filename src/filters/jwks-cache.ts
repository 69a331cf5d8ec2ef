import { createRemoteJWKSet, customFetch, importSPKI } from 'jose';
import type { CryptoKey, FetchImplementation, RemoteJWKSet, RemoteJWKSetOptions } from 'jose';

/** Timings of one remote key set, in milliseconds, as the policy's jwt section gives them. */
export interface JwksTiming {
  readonly cacheMaxAge: number;
  readonly cooldown: number;
  readonly timeout: number;
}

export interface JwtKeyCacheOptions {
  /** Replaces the global fetch for JWKS downloads (tests, proxies). */
  readonly fetchImpl?: FetchImplementation;
}

/**
 * Verification keys outlive the runtime that uses them: routes are recompiled on every snapshot,
 * and a fresh `createRemoteJWKSet` would forget the fetched keys and its cooldown, so each config
 * change would hit every IdP again and a flood of unknown `kid`s right after a rebuild would not
 * be throttled. Sets are keyed by their whole config, so routes sharing an IdP share one fetch.
 */
export class JwtKeyCache {
  readonly #fetchImpl: FetchImplementation | undefined;
  readonly #remote = new Map<string, RemoteJWKSet>();
  readonly #spki = new Map<string, Promise<CryptoKey>>();
  readonly #remembered = new Map<string, Map<string, unknown>>();

  constructor(options: JwtKeyCacheOptions = {}) {
    this.#fetchImpl = options.fetchImpl;
  }

  remote(jwksUrl: string, timing: JwksTiming): RemoteJWKSet {
    const id = `${jwksUrl}\n${timing.cacheMaxAge}\n${timing.cooldown}\n${timing.timeout}`;
    let set = this.#remote.get(id);
    if (set === undefined) {
      const options: RemoteJWKSetOptions = {
        cacheMaxAge: timing.cacheMaxAge,
        cooldownDuration: timing.cooldown,
        timeoutDuration: timing.timeout,
      };
      options[customFetch] = lastGoodFetch(this.#fetchImpl ?? ((url, init) => fetch(url, init)), timing.cooldown);
      set = createRemoteJWKSet(new URL(jwksUrl), options);
      this.#remote.set(id, set);
    }
    return set;
  }

  /**
   * WebCrypto keys are bound to one algorithm, so a PEM is imported once per algorithm a token
   * actually uses. The promise is cached, so concurrent first requests share one import; a failed
   * import stays failed because the same PEM and algorithm would fail again.
   */
  publicKey(pem: string, alg: string): Promise<CryptoKey> {
    const id = `${alg}\n${pem}`;
    let key = this.#spki.get(id);
    if (key === undefined) {
      key = importSPKI(pem, alg);
      this.#spki.set(id, key);
    }
    return key;
  }

  /**
   * The verified-token memory of one JWT configuration. It lives here, not in the compiled route,
   * because routes are recompiled on every snapshot (any health change anywhere) and would
   * otherwise start cold each time; keyed by the whole jwt policy, so a policy change starts
   * empty. At most 64 configurations are kept (oldest dropped), so config churn cannot leak.
   */
  remembered<T>(configKey: string): Map<string, T> {
    let map = this.#remembered.get(configKey);
    if (map === undefined) {
      if (this.#remembered.size >= 64) {
        const oldest = this.#remembered.keys().next();
        if (!oldest.done) this.#remembered.delete(oldest.value);
      }
      map = new Map<string, unknown>();
      this.#remembered.set(configKey, map);
    }
    return map as Map<string, T>;
  }

  /** Number of remote key sets held; lets tests and the admin view see sharing. */
  get remoteSets(): number {
    return this.#remote.size;
  }

  close(): void {
    this.#remote.clear();
    this.#spki.clear();
    this.#remembered.clear();
  }
}

/**
 * jose refetches on an unknown `kid` and when its cache is older than `cacheMaxAge`, but a failed
 * fetch neither starts its cooldown nor keeps the keys it had: with the IdP down, every request
 * would wait for a fetch (up to `jwksTimeout`) and then fail, even for tokens signed by keys it
 * already knew. This wrapper answers from the last good document while the IdP is failing, and
 * after a failure goes back to the network only once `cooldown` has passed. Serving the last good
 * keys is what the IdP last said; a key it withdrew is dropped at the first successful fetch.
 */
export function lastGoodFetch(fetchImpl: FetchImplementation, cooldownMs: number): FetchImplementation {
  let lastGood: { body: string; contentType: string } | undefined;
  let quietUntil = 0;
  let lastError: unknown;
  const stale = (): Response | undefined =>
    lastGood ? new Response(lastGood.body, { status: 200, headers: { 'content-type': lastGood.contentType } }) : undefined;
  return async (url, init) => {
    if (Date.now() < quietUntil) {
      const cached = stale();
      if (cached) return cached;
      throw lastError instanceof Error ? lastError : new Error('JWKS fetch failed recently; waiting for the cooldown');
    }
    try {
      const res = await fetchImpl(url, init);
      if (res.status !== 200) throw new Error(`JWKS answered HTTP ${res.status}`);
      const body = await res.text();
      const parsed = JSON.parse(body) as { keys?: unknown };
      if (!Array.isArray(parsed.keys)) throw new Error('JWKS document has no "keys" array');
      lastGood = { body, contentType: res.headers.get('content-type') ?? 'application/json' };
      return new Response(body, { status: 200, headers: { 'content-type': lastGood.contentType } });
    } catch (err) {
      lastError = err;
      quietUntil = Date.now() + cooldownMs;
      const cached = stale();
      if (cached) return cached;
      throw err;
    }
  };
}
