import { ParseMemo } from './value-bounds.ts';

/**
 * fabio's route language, as fabio reads it from Consul KV (`registry.consul.kvpath`, default
 * `fabio/config`), so a fabio user's manual overrides work unchanged. Syntax only: what a line
 * means for the routing table is decided in state/fabio-kv.ts.
 *
 * The grammar follows fabio's route/parse_new.go (regexes reAdd, reDel, reDelSvcTags, reDelTags,
 * reWeightSvc, reWeightSrc; one or more blanks between words; comments `#` and `//`) and the
 * "Config Language" page of fabio's documentation. Unlike fabio, which refuses the whole table on
 * the first bad line (NewTable returns the error and the old table stays), every line is parsed on
 * its own: a bad line is reported and the other lines apply.
 *
 * Hand-written rather than a parser library: the language is six fixed line shapes, and each
 * refusal must say which shape the line missed.
 */

/** fabio's `\s` and `\S` are Go's RE2 classes: ASCII blanks only (a no-break space is part of a word). */
const SP = '[\\t\\f\\r ]+';
const WORD = '([^\\t\\n\\f\\r ]+)';
const QUOTED = '"([^"]*)"';

function shape(...parts: string[]): RegExp {
  return new RegExp(`^${parts.join(SP)}$`);
}

// route add <svc> <src> <dst>[ weight <w>][ tags "<t1>,<t2>,..."][ opts "k1=v1 k2=v2 ..."]
const ADD = new RegExp(`^route${SP}add${SP}${WORD}${SP}${WORD}${SP}${WORD}(?:${SP}weight${SP}${WORD})?(?:${SP}tags${SP}${QUOTED})?(?:${SP}opts${SP}${QUOTED})?$`);
// route del <svc> tags "..." | route del tags "..." | route del <svc>[ <src>[ <dst>]]
const DEL_SVC_TAGS = shape('route', 'del', WORD, 'tags', QUOTED);
const DEL_TAGS = shape('route', 'del', 'tags', QUOTED);
const DEL = new RegExp(`^route${SP}del${SP}${WORD}(?:${SP}${WORD}(?:${SP}${WORD})?)?$`);
// route weight <svc> <src> weight <w>[ tags "..."] | route weight <src> weight <w> tags "..."
const WEIGHT_SVC = new RegExp(`^route${SP}weight${SP}${WORD}${SP}${WORD}${SP}weight${SP}${WORD}(?:${SP}tags${SP}${QUOTED})?$`);
const WEIGHT_SRC = shape('route', 'weight', WORD, 'weight', WORD, 'tags', QUOTED);
const COMMAND = new RegExp(`^route${SP}(add|del|weight)(?:[\\t\\f\\r ]|$)`);
/** Go's strconv.ParseFloat also takes hex, "Inf" and "NaN"; a weight is written as a plain decimal. */
const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

export type FabioCommand =
  | {
      readonly cmd: 'add';
      readonly service: string;
      readonly src: string;
      readonly dst: string;
      /** Fixed share of the route's traffic (0.05 = 5%); 0 means none (an equal share of the rest). */
      readonly weight: number;
      readonly tags: readonly string[];
      /** `k=v` words of `opts "..."`, in order, as the tag option parser reads them. */
      readonly opts: readonly string[];
    }
  | { readonly cmd: 'del'; readonly service: string | null; readonly src: string | null; readonly dst: string | null; readonly tags: readonly string[] }
  | { readonly cmd: 'weight'; readonly service: string | null; readonly src: string; readonly weight: number; readonly tags: readonly string[] };

export type FabioLine =
  | { readonly kind: 'command'; readonly line: number; readonly text: string; readonly command: FabioCommand }
  | { readonly kind: 'error'; readonly line: number; readonly text: string; readonly error: string };

/** Limits of one KV value; the README lists them ("fabio KV routes"). */
export const FABIO_LIMITS = {
  /** Bytes of one value (Consul's own cap is 512 KiB). */
  maxValueBytes: 256 * 1024,
  /** Lines of one value, blank lines and comments included. */
  maxLines: 5_000,
  /** Characters of one line; fabio's line reader stops at 64 KiB and silently drops the rest of the table. */
  maxLineChars: 4_096,
  /** Tags named by one line. */
  maxTags: 64,
} as const;

export type FabioValueParse =
  | { readonly ok: true; readonly lines: readonly FabioLine[] }
  /** The value as a whole cannot be read: the last good version of the key stays. */
  | { readonly ok: false; readonly error: string };

/**
 * Every line of a value. fabio splits on "\n" (bufio.ScanLines also drops a "\r" before it) and
 * trims each line; comment and blank lines are left out of the result.
 */
export function parseFabioValue(text: string): FabioValueParse {
  return memo.get(text, parseUncached);
}

/** Every rebuild of the routes reads every fabio key: a value seen before is not parsed again. */
const memo = new ParseMemo<FabioValueParse>(256);

function parseUncached(text: string): FabioValueParse {
  if (text.length > FABIO_LIMITS.maxValueBytes || Buffer.byteLength(text) > FABIO_LIMITS.maxValueBytes) {
    return { ok: false, error: `value is larger than ${FABIO_LIMITS.maxValueBytes} bytes (${Buffer.byteLength(text)})` };
  }
  const raw = text.split('\n');
  if (raw.length > FABIO_LIMITS.maxLines) return { ok: false, error: `value has more than ${FABIO_LIMITS.maxLines} lines (${raw.length})` };
  const lines: FabioLine[] = [];
  raw.forEach((rawLine, i) => {
    const parsed = parseFabioLine(rawLine, i + 1);
    if (parsed) lines.push(parsed);
  });
  return { ok: true, lines };
}

/** One line, or null for a blank line or a comment. */
export function parseFabioLine(rawLine: string, line: number): FabioLine | null {
  const text = rawLine.trim();
  if (text === '' || text.startsWith('#') || text.startsWith('//')) return null;
  const fail = (error: string): FabioLine => ({ kind: 'error', line, text, error });
  if (text.length > FABIO_LIMITS.maxLineChars) return fail(`line is longer than ${FABIO_LIMITS.maxLineChars} characters (${text.length})`);
  const which = COMMAND.exec(text)?.[1];
  let command: FabioCommand | string;
  if (which === 'add') command = parseAdd(text);
  else if (which === 'del') command = parseDel(text);
  else if (which === 'weight') command = parseWeight(text);
  else command = `syntax error: expected "route add", "route del" or "route weight" (or a comment starting with # or //)`;
  return typeof command === 'string' ? fail(command) : { kind: 'command', line, text, command };
}

function parseAdd(text: string): FabioCommand | string {
  const m = ADD.exec(text);
  if (!m) return 'syntax error: expected route add <svc> <src> <dst>[ weight <w>][ tags "<t1>,<t2>"][ opts "k1=v1 k2=v2"]';
  const weight = m[4] === undefined ? 0 : weightOf(m[4]);
  if (typeof weight === 'string') return weight;
  const tags = tagsOf(m[5]);
  if (typeof tags === 'string') return tags;
  const opts = (m[6] ?? '').split(/[\t\n\f\r ]+/).filter((o) => o !== '');
  return { cmd: 'add', service: m[1] as string, src: m[2] as string, dst: m[3] as string, weight, tags, opts };
}

function parseDel(text: string): FabioCommand | string {
  // The same order as fabio: a service named "tags" cannot be deleted with the short form there either.
  let m = DEL_SVC_TAGS.exec(text);
  if (m) {
    const tags = tagsOf(m[2]);
    if (typeof tags === 'string') return tags;
    if (tags.length === 0) return 'route del <svc> tags "": no tags given (use route del <svc> to remove all routes of the service)';
    return { cmd: 'del', service: m[1] as string, src: null, dst: null, tags };
  }
  m = DEL_TAGS.exec(text);
  if (m) {
    const tags = tagsOf(m[1]);
    if (typeof tags === 'string') return tags;
    if (tags.length === 0) return 'route del tags "": no tags given; it would match nothing';
    return { cmd: 'del', service: null, src: null, dst: null, tags };
  }
  m = DEL.exec(text);
  if (m) return { cmd: 'del', service: m[1] as string, src: m[2] ?? null, dst: m[3] ?? null, tags: [] };
  return 'syntax error: expected route del <svc>[ <src>[ <dst>]], route del <svc> tags "<t1>,<t2>" or route del tags "<t1>,<t2>"';
}

function parseWeight(text: string): FabioCommand | string {
  let m = WEIGHT_SVC.exec(text);
  if (m) {
    const weight = weightOf(m[3] as string);
    if (typeof weight === 'string') return weight;
    const tags = tagsOf(m[4]);
    if (typeof tags === 'string') return tags;
    return { cmd: 'weight', service: m[1] as string, src: m[2] as string, weight, tags };
  }
  m = WEIGHT_SRC.exec(text);
  if (m) {
    const weight = weightOf(m[2] as string);
    if (typeof weight === 'string') return weight;
    const tags = tagsOf(m[3]);
    if (typeof tags === 'string') return tags;
    if (tags.length === 0) return 'route weight <src> weight <w> tags "": no tags given; name a service or at least one tag';
    return { cmd: 'weight', service: null, src: m[1] as string, weight, tags };
  }
  return 'syntax error: expected route weight <svc> <src> weight <w>[ tags "<t1>,<t2>"] or route weight <src> weight <w> tags "<t1>,<t2>"';
}

/** fabio: a float; 0.05 is 5%, above 1 the fixed weights are normalised, below 0 it counts as 0. */
function weightOf(raw: string): number | string {
  if (!NUMBER.test(raw)) return `weight "${raw}" is not a number (fabio weights are fractions: 0.05 is 5%)`;
  const n = Number(raw);
  if (!Number.isFinite(n)) return `weight "${raw}" is out of range`;
  return n < 0 ? 0 : n;
}

/** `"a, b"` → ["a", "b"] as fabio's parseTags (split on ",", trimmed); an empty list entry is refused. */
function tagsOf(raw: string | undefined): readonly string[] | string {
  if (raw === undefined || raw === '') return [];
  const tags = raw.split(',').map((t) => t.trim());
  if (tags.length > FABIO_LIMITS.maxTags) return `more than ${FABIO_LIMITS.maxTags} tags (${tags.length})`;
  if (tags.some((t) => t === '')) return `tags "${raw}" has an empty entry`;
  return tags;
}

/** A line as `cgw status` shows it: quoted and escaped (a KV value can hold escape sequences), cut at 120 characters. */
export function quoteLine(text: string): string {
  const short = text.length > 120 ? `${text.slice(0, 117)}...` : text;
  return JSON.stringify(short).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
