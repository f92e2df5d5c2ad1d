/** Summary statistics for benchmark samples. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** Median, min and max of the samples (NaN-free input). */
export function summarize(samples: number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  const median = n === 0 ? Number.NaN : n % 2 === 1 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  return { median, min: sorted[0] ?? Number.NaN, max: sorted[n - 1] ?? Number.NaN, n };
}

/** The p-th percentile (0..100) of already sorted samples. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

/** Formats a number with thousands separators and `digits` decimals. */
export function fmt(value: number, digits = 0): string {
  return Number.isFinite(value) ? value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–';
}

/** p50 and p99 of the first `n` latencies (ms) in `samples`, sorted in place. */
export function latencyPercentiles(samples: Float64Array, n: number): { p50: number; p99: number } {
  const sorted = samples.subarray(0, n).sort();
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

/** Summary of the finite values only (NaN, Infinity and undefined left out), or null when none is left. */
export function summarizeFinite(values: ReadonlyArray<number | undefined>): Summary | null {
  const finite = values.filter((v): v is number => v !== undefined && Number.isFinite(v));
  return finite.length === 0 ? null : summarize(finite);
}
