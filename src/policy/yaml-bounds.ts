import { CST, Lexer } from 'yaml';
import { MAX_DEPTH, tooDeep, tooLarge, type BoundsCheck } from './value-bounds.ts';

/**
 * The bounds of value-bounds.ts for YAML text (policy and route documents), checked with the yaml
 * package's lexer before its parser sees the text.
 */

/** Leading spaces of a YAML line; block nesting needs at least one per level. */
const MAX_INDENT = 128;
/**
 * Lexer tokens of a YAML document (spaces, newlines and comments included). The examples in
 * policies/ have 35-570. The yaml parser is far from linear in keys, anchors and tags: a 300 KB
 * document of 30 000 keys took it 12 s (and 30 000 anchors 43 s), freezing the event loop.
 */
export const MAX_YAML_TOKENS = 10_000;

const OK: BoundsCheck = { ok: true };

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
