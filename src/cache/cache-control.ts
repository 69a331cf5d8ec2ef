/**
 * Cache-Control directives (RFC 9111 §5.2) as a cache needs them. Parsing is lenient in the way
 * §4.2.1 asks: a duplicated or invalid delta-seconds value of a directive that limits freshness
 * makes the response stale rather than fresher, and unknown directives are ignored.
 */
export interface Directives {
  readonly noStore: boolean;
  readonly noCache: boolean;
  readonly private: boolean;
  readonly public: boolean;
  readonly mustRevalidate: boolean;
  readonly proxyRevalidate: boolean;
  readonly onlyIfCached: boolean;
  /** Seconds, or undefined when absent; a malformed value reads as 0. */
  readonly maxAge: number | undefined;
  readonly sMaxAge: number | undefined;
  readonly minFresh: number | undefined;
  /** `max-stale` alone accepts any staleness (Infinity). */
  readonly maxStale: number | undefined;
}

export const NO_DIRECTIVES: Directives = Object.freeze({
  noStore: false,
  noCache: false,
  private: false,
  public: false,
  mustRevalidate: false,
  proxyRevalidate: false,
  onlyIfCached: false,
  maxAge: undefined,
  sMaxAge: undefined,
  minFresh: undefined,
  maxStale: undefined,
});

/** RFC 9111 §1.2.2: delta-seconds past 2^31 are taken as 2^31. */
const MAX_DELTA = 2 ** 31;
/** A header longer than this is not worth parsing; it reads as no-store (never cached). */
const MAX_FIELD_LENGTH = 4096;

function deltaSeconds(value: string | undefined): number {
  if (value === undefined) return 0;
  const unquoted = value.startsWith('"') && value.endsWith('"') && value.length >= 2 ? value.slice(1, -1) : value;
  if (!/^\d{1,32}$/.test(unquoted)) return 0;
  return Math.min(Number(unquoted), MAX_DELTA);
}

export function parseCacheControl(field: string | readonly string[] | undefined): Directives {
  if (field === undefined) return NO_DIRECTIVES;
  const text = typeof field === 'string' ? field : field.join(',');
  if (text.length > MAX_FIELD_LENGTH) return { ...NO_DIRECTIVES, noStore: true };
  let d: { -readonly [K in keyof Directives]: Directives[K] } | undefined;
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    const name = (eq === -1 ? part : part.slice(0, eq)).trim().toLowerCase();
    if (name === '') continue;
    const value = eq === -1 ? undefined : part.slice(eq + 1).trim();
    d ??= { ...NO_DIRECTIVES };
    switch (name) {
      case 'no-store':
        d.noStore = true;
        break;
      case 'no-cache':
        // `no-cache="Set-Cookie"` (qualified) is treated as unqualified, which §5.2.2.4 allows.
        d.noCache = true;
        break;
      case 'private':
        d.private = true;
        break;
      case 'public':
        d.public = true;
        break;
      case 'must-revalidate':
        d.mustRevalidate = true;
        break;
      case 'proxy-revalidate':
        d.proxyRevalidate = true;
        break;
      case 'only-if-cached':
        d.onlyIfCached = true;
        break;
      // A second occurrence of a limit keeps the smaller value: never fresher than either says.
      case 'max-age':
        d.maxAge = Math.min(d.maxAge ?? MAX_DELTA, deltaSeconds(value));
        break;
      case 's-maxage':
        d.sMaxAge = Math.min(d.sMaxAge ?? MAX_DELTA, deltaSeconds(value));
        break;
      case 'min-fresh':
        d.minFresh = Math.max(d.minFresh ?? 0, deltaSeconds(value));
        break;
      case 'max-stale':
        d.maxStale = value === undefined ? Infinity : Math.min(d.maxStale ?? Infinity, deltaSeconds(value));
        break;
      default:
        break;
    }
  }
  return d ?? NO_DIRECTIVES;
}
