/**
 * Plain aligned columns for terminal output. Hand-written: twenty lines, and table libraries add
 * box-drawing that breaks `grep`/`awk` pipelines, which operators use on this output.
 */
export function renderTable(headers: readonly string[], rows: readonly (readonly unknown[])[]): string {
  const cells = rows.map((r) => r.map(cellText));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const line = (cols: readonly string[]): string =>
    cols
      .map((c, i) => (i === cols.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

function cellText(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-';
  if (Array.isArray(value)) return value.length ? oneLine(value.join(',')) : '-';
  if (typeof value === 'object') return JSON.stringify(value);
  return oneLine(String(value));
}

/** A line break (a multi-line error message, say) would start a bogus row: cells are one line. */
function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ');
}
