/**
 * A throwaway identity provider for JWT tests: an HTTP server on a free loopback port that
 * publishes `{keys: [...]}` at `/.well-known/jwks.json`, and signs tokens with its keys (jose).
 * It can rotate keys, publish or withdraw single keys, forge tokens (a key it never publishes,
 * under a kid it does publish), and go down and come back on the same port.
 */
import { createServer, type Server } from 'node:http';
import { randomBytes } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import type { CryptoKey, JWK, JWTPayload, KeyObject } from 'jose';
import { freePort } from './ports.ts';

export const JWKS_PATH = '/.well-known/jwks.json';

export interface SigningKey {
  readonly kid: string;
  readonly alg: string;
  readonly privateKey: CryptoKey;
  readonly publicKey: CryptoKey;
  /** The public JWK as published (kid, alg, use: sig). */
  readonly jwk: JWK;
}

/** A new asymmetric key pair (RSA generation takes some 100 ms; reuse keys where possible). */
export async function newSigningKey(alg = 'RS256', kid = `k-${randomBytes(6).toString('hex')}`): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, privateKey, publicKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' } };
}

export interface SignOptions {
  /**
   * Header kid; default the current signing key's. A kid never made here signs with the current
   * key; null leaves `kid` out of the header (signed with the current key).
   */
  kid?: string | null;
  /** Header alg; default the key's. An HS* alg without `key` signs with a random 32-byte secret. */
  alg?: string;
  /** Sign with this key instead of the published key named by `kid` (forgeries, HMAC secrets). */
  key?: CryptoKey | KeyObject | Uint8Array;
  /** jose time span (`5m`, `-2m`) or absolute epoch seconds; default `5m`; null: no `exp`. */
  expiresIn?: string | number | null;
  notBefore?: string | number;
  /** Default the server's default audience; null: no `aud`. */
  audience?: string | string[] | null;
  /** Default the server's issuer; null: no `iss`. */
  issuer?: string | null;
}

export interface JwksServer {
  /** The JWKS URL, `http://127.0.0.1:PORT/.well-known/jwks.json`. */
  readonly url: string;
  /** `http://127.0.0.1:PORT/`, put into `iss` by default. */
  readonly issuer: string;
  readonly port: number;
  /** JWKS documents served so far (survives stop/start). */
  readonly hits: number;
  /** The kid `sign` uses by default. */
  readonly kid: string;
  /** Kids published now. */
  readonly kids: readonly string[];
  sign(claims: JWTPayload, opts?: SignOptions): Promise<string>;
  /** Signed with a key that is never published, under a published kid (default the current one). */
  forge(claims: JWTPayload, opts?: Omit<SignOptions, 'key'>): Promise<string>;
  /** A new key replaces every published one and becomes the signing key; returns its kid. */
  rotate(opts?: { keepPrevious?: boolean }): Promise<string>;
  /** Publishes one more key (the signing key stays); returns its kid. */
  addKey(): Promise<string>;
  /** Withdraws a key from the JWKS; `sign({kid})` can still use it (a token of a retired key). */
  removeKey(kid: string): void;
  /** Stops listening and cuts open connections; the port stays reserved for start(). */
  stop(): Promise<void>;
  /** Listens again on the same port. */
  start(): Promise<void>;
}

export interface JwksOptions {
  /** `aud` of signed tokens unless sign() says otherwise. */
  audience?: string;
  alg?: string;
}

export async function startJwks(opts: JwksOptions = {}): Promise<JwksServer> {
  const alg = opts.alg ?? 'RS256';
  const port = await freePort();
  const issuer = `http://127.0.0.1:${port}/`;
  /** Every key ever made here, published or not, so retired kids can still sign. */
  const all = new Map<string, SigningKey>();
  let published: SigningKey[] = [];
  let current: SigningKey;
  let forger: Promise<SigningKey> | undefined;
  const hmacSecret = new Uint8Array(randomBytes(32));
  let hits = 0;
  let server: Server | undefined;

  const make = async (): Promise<SigningKey> => {
    const k = await newSigningKey(alg);
    all.set(k.kid, k);
    return k;
  };
  current = await make();
  published = [current];

  const listen = async (): Promise<void> => {
    const s = createServer((req, res) => {
      const path = (req.url ?? '').split('?')[0];
      if (req.method !== 'GET' || path !== JWKS_PATH) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        return;
      }
      hits++;
      const body = JSON.stringify({ keys: published.map((k) => k.jwk) });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen({ host: '127.0.0.1', port }, () => {
        s.off('error', reject);
        resolve();
      });
    });
    server = s;
  };

  const sign = async (claims: JWTPayload, o: SignOptions = {}): Promise<string> => {
    const kid = o.kid === undefined ? current.kid : o.kid;
    const named = kid === null ? current : (all.get(kid) ?? current);
    const headerAlg = o.alg ?? (o.key === undefined ? named.alg : alg);
    let key = o.key;
    if (key === undefined) {
      if (headerAlg.startsWith('HS')) key = hmacSecret;
      // A kid this server never made: signed with the current key, so only the kid is unknown.
      else key = named.privateKey;
    }
    const jwt = new SignJWT(claims).setProtectedHeader({ alg: headerAlg, typ: 'JWT', ...(kid === null ? {} : { kid }) }).setIssuedAt();
    const iss = o.issuer === undefined ? issuer : o.issuer;
    if (iss !== null) jwt.setIssuer(iss);
    const aud = o.audience === undefined ? opts.audience : o.audience;
    if (aud !== null && aud !== undefined) jwt.setAudience(aud);
    const exp = o.expiresIn === undefined ? '5m' : o.expiresIn;
    if (exp !== null) jwt.setExpirationTime(exp);
    if (o.notBefore !== undefined) jwt.setNotBefore(o.notBefore);
    return jwt.sign(key);
  };

  await listen();

  return {
    url: `http://127.0.0.1:${port}${JWKS_PATH}`,
    issuer,
    port,
    get hits() {
      return hits;
    },
    get kid() {
      return current.kid;
    },
    get kids() {
      return published.map((k) => k.kid);
    },
    sign,
    async forge(claims, o = {}) {
      forger ??= newSigningKey(alg);
      return sign(claims, { ...o, key: (await forger).privateKey });
    },
    async rotate(o = {}) {
      const next = await make();
      published = o.keepPrevious ? [...published, next] : [next];
      current = next;
      return next.kid;
    },
    async addKey() {
      const k = await make();
      published = [...published, k];
      return k.kid;
    },
    removeKey(kid) {
      published = published.filter((k) => k.kid !== kid);
    },
    async stop() {
      const s = server;
      server = undefined;
      if (!s) return;
      await new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      });
    },
    async start() {
      if (!server) await listen();
    },
  };
}

/** An `alg: none` token, built by hand (jose refuses to make one): `header.payload.` */
export function unsignedToken(claims: JWTPayload, header: Record<string, unknown> = {}): string {
  const part = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${part({ alg: 'none', typ: 'JWT', ...header })}.${part(claims)}.`;
}
