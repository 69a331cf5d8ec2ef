const UNITS_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;

/** Parses Consul/Go style durations such as `500ms`, `5s`, `5m`, `1m30s`. Returns ms or undefined. */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  if (!/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(trimmed)) return undefined;
  let total = 0;
  for (const [, amount, , unit] of trimmed.matchAll(/(\d+(\.\d+)?)(ms|s|m|h)/g)) {
    total += Number(amount) * UNITS_MS[unit as keyof typeof UNITS_MS];
  }
  return Math.round(total);
}

/** Formats ms as the `wait` parameter Consul expects (whole seconds suffice). */
export function formatConsulWait(ms: number): string {
  return `${Math.max(1, Math.round(ms / 1000))}s`;
}

/** 600000 → "10m", 1500 → "1500ms": the largest unit that divides exactly. */
export function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0 && ms > 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
