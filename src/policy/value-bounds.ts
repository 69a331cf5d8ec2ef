/**
 * Cheap checks that run before any parser sees a value from outside (KV values, policy files).
 * Parsers recurse: the yaml package overflows its stack below 1000 levels of `[`, and a deep
 * value made every later rebuild slow and the process large, or aborted it outright. A value
 * that is too large or too deep is refused here, in one pass, without building anything. The YAML
 * check is in yaml-bounds.ts: it needs the yaml package's lexer, which JSON values (canary
 * weights, consumers) do not.
 */

/** Deeper than any real document (policies nest about 6 levels) and far from any parser's limit. */
export const MAX_DEPTH = 32;

export type BoundsCheck = { readonly ok: true } | { readonly ok: false; readonly error: string };

const OK: BoundsCheck = { ok: true };

export function tooLarge(bytes: number, max: number): BoundsCheck {
  return { ok: false, error: `larger than ${max} bytes (${bytes})` };
}

export function tooDeep(): BoundsCheck {
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
