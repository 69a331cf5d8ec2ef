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
    } else if (c === 93 /* ] */ || c === 125 /* } */) {
      depth--;
    }
  }
  return OK;
}

/**
 * Size and nesting of YAML (and so JSON) text. The yaml package's lexer is a flat state machine
 * that knows quoted and plain scalars, so a `[` inside a string is not counted; flow nesting is
 * counted exactly, block nesting is bounded by indentation and by indicators on one line.
 */
export function checkYamlBounds(text: string, maxBytes: number): BoundsCheck {
  if (text.length > maxBytes || (text.length * 3 > maxBytes && Buffer.byteLength(text) > maxBytes)) return tooLarge(Buffer.byteLength(text), maxBytes);
  let flow = 0;
  let lineStart = true;
  let indicators = 0;
  for (const token of new Lexer().lex(text)) {
    const type = CST.tokenType(token);
    switch (type) {
      case 'flow-map-start':
      case 'flow-seq-start':
        if (++flow > MAX_DEPTH) return tooDeep();
        break;
      case 'flow-map-end':
      case 'flow-seq-end':
        flow--;
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
 * it is unchanged. Bounded; the oldest entries go first.
 */
export class ParseMemo<T> {
  private readonly entries = new Map<string, T>();

  constructor(private readonly capacity = 1024) {}

  get(text: string, parse: (text: string) => T): T {
    const hit = this.entries.get(text);
    if (hit !== undefined) return hit;
    const result = parse(text);
    if (this.entries.size >= this.capacity) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(text, result);
    return result;
  }
}
