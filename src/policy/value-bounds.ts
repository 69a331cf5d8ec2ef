import { CST, Lexer } from 'yaml';

/**
 * Cheap checks that run before any parser sees a value from outside (KV values, policy files).
 * Parsers recurse: the yaml package overflows its stack below 1000 levels of `[`, and a deep
 * value made every later rebuild slow and the process large, or aborted it outright. A value
 * that is too large or too deep is refused here, in one pass, without building anything.
 */

/** Deeper than any real document (policies nest about 6 levels) and far from any parser's limit. */
export const MAX_DEPTH = 32;
/** Leading spaces of a YAML line; block nesting needs at least one per level. */
const MAX_INDENT = 128;
/**
 * Lexer tokens of a YAML document (spaces, newlines and comments included). The examples in
 * policies/ have 35-570. The yaml parser is far from linear in keys, anchors and tags: a 300 KB
 * document of 30 000 keys took it 12 s (and 30 000 anchors 43 s), freezing the event loop.
 */
export const MAX_YAML_TOKENS = 10_000;

export type BoundsCheck = { readonly ok: true } | { readonly ok: false; readonly error: string };

const OK: BoundsCheck = { ok: true };

function tooLarge(bytes: number, max: number): BoundsCheck {
  return { ok: false, error: `larger than ${max} bytes (${bytes})` };
}

function tooDeep(): BoundsCheck {
  return { ok: false, error: `nested deeper than ${MAX_DEPTH} levels` };
}

/** Size and nesting of JSON text, strings (with escapes) skipped exactly. */
export function checkJsonBounds(text: string, maxBytes: number): BoundsCheck {
  // Bytes ≥ chars: a cheap first cut, then the exact count only when it could matter.
  if (text.length > maxBytes || (text.length * 3 > maxBytes && Buffer.byteLength(text) > maxBytes)) return tooLarge(Buffer.byteLength(text), maxBytes);
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \ */) i++;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) {
      inString = true;
    } else if (c === 91 /* [ */ || c === 123 /* { */) {
      if (++depth > MAX_DEPTH) return tooDeep();
    } else if ((c === 93 /* ] */ || c === 125) /* } */ && depth > 0) {
      // A closer without an opener must not lend depth to the openers after it.
      depth--;
    }
  }
  return OK;
}

/**
 * Size, length in tokens and nesting of YAML (and so JSON) text. The yaml package's lexer is a
 * flat state machine that knows quoted and plain scalars, so a `[` inside a string is not counted;
 * flow nesting is counted exactly, block nesting is bounded by indentation and by indicators on
 * one line.
 */
export function checkYamlBounds(text: string, maxBytes: number): BoundsCheck {
  if (text.length > maxBytes || (text.length * 3 > maxBytes && Buffer.byteLength(text) > maxBytes)) return tooLarge(Buffer.byteLength(text), maxBytes);
  let flow = 0;
  let lineStart = true;
  let indicators = 0;
  let tokens = 0;
  for (const token of new Lexer().lex(text)) {
    if (++tokens > MAX_YAML_TOKENS) return { ok: false, error: `more than ${MAX_YAML_TOKENS} YAML tokens long (a policy has a few hundred)` };
    const type = CST.tokenType(token);
    switch (type) {
      case 'flow-map-start':
      case 'flow-seq-start':
        if (++flow > MAX_DEPTH) return tooDeep();
        break;
      case 'flow-map-end':
      case 'flow-seq-end':
        // Parsers go on after a stray closer (`]]]]` then `[[[[`): it must not lend depth.
        if (flow > 0) flow--;
        break;
      case 'newline':
        lineStart = true;
        indicators = 0;
        continue;
      case 'space':
        if (lineStart && token.length > MAX_INDENT) return { ok: false, error: `indented by more than ${MAX_INDENT} spaces` };
        continue;
      case 'seq-item-ind':
      case 'explicit-key-ind':
      case 'map-value-ind':
        // Block indicators before a line's content each open a level (`- - - x`); inside flow
        // collections `:` separates keys and values and is bounded by the flow count.
        if (lineStart && flow === 0 && ++indicators > MAX_DEPTH) return tooDeep();
        if (lineStart) continue;
        break;
      case 'doc-mode':
      case 'byte-order-mark':
        continue;
    }
    lineStart = false;
  }
  return OK;
}

/**
 * Remembers what a parse of a value gave, by the value's text: the KV view hands every rebuild
 * the same values, and a value that was refused (perhaps expensively) is not parsed again while
 * it is unchanged. Bounded in entries and in the characters of the texts it keeps as keys, oldest
 * first out: without the second bound, values long gone from KV (1024 refused 512 KiB versions of
 * one key) would stay alive here. A text longer than a quarter of the budget is not remembered;
 * every caller refuses such a text on its length alone, before parsing anything.
 */
export class ParseMemo<T> {
  private readonly entries = new Map<string, T>();
  private chars = 0;

  constructor(
    private readonly capacity = 1024,
    private readonly maxChars = 4 * 1024 * 1024,
  ) {}

  get(text: string, parse: (text: string) => T): T {
    const hit = this.entries.get(text);
    if (hit !== undefined) return hit;
    const result = parse(text);
    if (text.length > this.maxChars / 4) return result;
    while (this.entries.size > 0 && (this.entries.size >= this.capacity || this.chars + text.length > this.maxChars)) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
      this.chars -= oldest.value.length;
    }
    this.entries.set(text, result);
    this.chars += text.length;
    return result;
  }

  /** Entries and characters of text kept, for tests. */
  get retained(): { readonly entries: number; readonly chars: number } {
    return { entries: this.entries.size, chars: this.chars };
  }
}
