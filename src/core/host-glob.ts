/**
 * In core/ because two rooms need it: the router matches with it, and the route guards
 * (state/route-owners.ts) ask whether a new route would take a protected route's requests.
 *
 * fabio's glob hosts (`urlprefix-*.example.com/`): `*` stands for any run of characters, dots
 * included, because fabio compiles host patterns with gobwas/glob and no separators
 * (route/table.go, matchingHosts). Only `*` is accepted by the tag parser.
 *
 * Matching is the two-pointer wildcard walk (no regex, so no backtracking blow-up on `*.*.*`):
 * O(host × pattern) at worst, both bounded by 253 characters, linear in practice.
 */
export function globMatches(pattern: string, host: string): boolean {
  let p = 0;
  let h = 0;
  let star = -1;
  let resume = 0;
  while (h < host.length) {
    const c = pattern.charCodeAt(p);
    if (c === 42 /* * */) {
      star = p++;
      resume = h;
    } else if (p < pattern.length && c === host.charCodeAt(h)) {
      p++;
      h++;
    } else if (star !== -1) {
      p = star + 1;
      h = ++resume;
    } else {
      return false;
    }
  }
  while (pattern.charCodeAt(p) === 42) p++;
  return p === pattern.length;
}

/**
 * The order fabio tries matching host patterns in (route/table.go, sortHostsReverseHostPort, its
 * issue 506): each pattern reversed, sorted descending, so `*.a.example.com` is tried before
 * `*.example.com` (the more specific suffix first). Exact hosts are tried before every glob here
 * (fabio's order puts them first in all but odd cases such as `*b.com` against `b.com`).
 */
export function fabioGlobOrder(a: string, b: string): number {
  const ra = [...a].reverse().join('');
  const rb = [...b].reverse().join('');
  return ra < rb ? 1 : ra > rb ? -1 : 0;
}

export function isHostGlob(host: string): boolean {
  return host.includes('*');
}

/**
 * Whether some request host could be routed by `claim` where `guarded` served it before: `claim`
 * is tried first (an exact host, or a glob earlier in fabio's order) and both can match one name.
 */
export function hostCaptures(claim: string, guarded: string): boolean {
  if (!isHostGlob(guarded) || claim === guarded) return false;
  if (!isHostGlob(claim)) return globMatches(guarded, claim);
  // Two globs: a name made from the claim (each * as one label) that the guarded glob also takes.
  return fabioGlobOrder(claim, guarded) < 0 && globMatches(guarded, claim.replace(/\*/g, 'x'));
}
