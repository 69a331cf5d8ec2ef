/**
 * Finding one cookie in a request's Cookie header(s), hand-written rather than with the `cookie`
 * package: the gateway needs a single name, so it scans for it without building an object of every
 * pair (a hostile header with thousands of pairs costs one pass and no allocation per pair), and
 * it must accept only values its caller knows, never decode or echo them.
 *
 * RFC 6265 §5.4: one `Cookie` field of `name=value` pairs separated by `; `. §5.2 trims white
 * space around names and values; a value may be wrapped in DQUOTEs (§4.1.1). Node joins several
 * Cookie fields of an HTTP/1.1 request, and the split cookie fields of HTTP/2 (RFC 9113 §8.2.3),
 * with `; `; an array is accepted anyway.
 */

/**
 * The scan stops after this many characters of one field. The listener's head limit bounds the
 * field already; this keeps the work per request small whatever `--max-header-size` says.
 */
export const MAX_COOKIE_SCAN_CHARS = 16 * 1024;

/** More pairs than any browser sends for one site (RFC 6265 §6.1 asks for at least 50). */
const MAX_PAIRS = 256;

/**
 * The first value of cookie `name` that `accept` turns into a result. A name sent twice (cookies
 * of two paths or domains) is tried in order: RFC 6265 §5.4 puts the more specific path first.
 */
export function findCookie<T>(header: string | readonly string[] | undefined, name: string, accept: (value: string) => T | undefined): T | undefined {
  if (header === undefined) return undefined;
  if (typeof header === 'string') return scan(header, name, accept);
  for (const field of header) {
    const found = scan(field, name, accept);
    if (found !== undefined) return found;
  }
  return undefined;
}

function isSpace(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

function scan<T>(field: string, name: string, accept: (value: string) => T | undefined): T | undefined {
  const length = Math.min(field.length, MAX_COOKIE_SCAN_CHARS);
  let start = 0;
  for (let pairs = 0; start < length && pairs < MAX_PAIRS; pairs++) {
    let end = field.indexOf(';', start);
    if (end === -1) end = field.length;
    // A pair cut by the scan bound is not read: its value would be a prefix of what was sent.
    if (end > length) return undefined;
    let i = start;
    while (i < end && isSpace(field.charCodeAt(i))) i++;
    if (field.startsWith(name, i)) {
      let eq = i + name.length;
      while (eq < end && isSpace(field.charCodeAt(eq))) eq++;
      if (eq < end && field.charCodeAt(eq) === 0x3d /* = */) {
        let from = eq + 1;
        let to = end;
        while (from < to && isSpace(field.charCodeAt(from))) from++;
        while (to > from && isSpace(field.charCodeAt(to - 1))) to--;
        if (to - from >= 2 && field.charCodeAt(from) === 0x22 && field.charCodeAt(to - 1) === 0x22) {
          from++;
          to--;
        }
        const found = accept(field.slice(from, to));
        if (found !== undefined) return found;
      }
    }
    start = end + 1;
  }
  return undefined;
}
