import { fmt, type Summary } from '../lib/stats.js';

/** A latency in ms as "69 µs", "1.08 ms" or "51 ms". */
export function fmtLatency(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  if (ms < 10) return `${ms.toFixed(2)} ms`;
  return `${fmt(ms)} ms`;
}

/** Bytes as MiB with one decimal. */
export function fmtMiB(bytes: number | null | undefined): string {
  return bytes === null || bytes === undefined || !Number.isFinite(bytes) ? '–' : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** "median (min – max)" with `digits` decimals. */
export function fmtSummary(s: Summary | null, digits = 0, suffix = ''): string {
  if (s === null) return '–';
  return `${fmt(s.median, digits)}${suffix} (${fmt(s.min, digits)} – ${fmt(s.max, digits)})`;
}

/** A ratio summary as "2.31× (2.10 – 2.50)". */
export function fmtRatio(s: Summary | null): string {
  return s === null ? '–' : `${s.median.toFixed(2)}× (${s.min.toFixed(2)} – ${s.max.toFixed(2)})`;
}

/** The spread of a ratio over its rounds, (max − min) ÷ median, as "±6 %" (half the width, in % of the median). */
export function fmtSpread(s: Summary | null): string {
  if (s === null || !(s.median > 0) || s.n < 2) return '';
  return `±${Math.round(((s.max - s.min) / s.median / 2) * 100)} %`;
}

/** Pads to a width, left-aligned (`pad`) or right-aligned (`padStart`), for fixed-width tables. */
export function cells(values: Array<[string, number, 'l' | 'r']>): string {
  return values
    .map(([v, w, align]) => (align === 'l' ? v.padEnd(w) : v.padStart(w)))
    .join('  ')
    .trimEnd();
}
