import { createPublicKey } from 'node:crypto';

/**
 * The JWT algorithms a public key (SPKI PEM) can verify; undefined when the PEM does not parse.
 * Used twice: policy validation refuses a key that fits none of the listed algorithms, and the
 * JWT filter lets a token pick only among those the key can do.
 */
export function algorithmsForPem(pem: string): ReadonlySet<string> | undefined {
  let key;
  try {
    key = createPublicKey(pem);
  } catch {
    return undefined;
  }
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']);
    case 'rsa-pss':
      return new Set(['PS256', 'PS384', 'PS512']);
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      const alg = curve === 'prime256v1' ? 'ES256' : curve === 'secp384r1' ? 'ES384' : curve === 'secp521r1' ? 'ES512' : undefined;
      return new Set(alg === undefined ? [] : [alg]);
    }
    case 'ed25519':
      return new Set(['EdDSA']);
    default:
      return new Set();
  }
}
