import type { CoreRatio } from '../core/cases.js';
import type { PlannedCase } from '../cases/plan.js';
import type { RunResult } from '../cases/spec.js';
import { summarize, summarizeFinite, type Summary } from '../lib/stats.js';

/** One run of one case on one system. */
export interface Sample {
  round: number;
  caseId: string;
  system: string;
  /** Wall time of the run, with the processes' (re)start, in ms. */
  wallMs: number;
  result: RunResult;
}

/** One run of one core case. */
export interface CoreSample {
  round: number;
  name: string;
  value: number | null;
  wallMs?: number;
  error?: string;
}

/** A system's figures in one case, over its rounds: medians of the clean runs (no stall, no failure). */
export interface SystemFigures {
  system: string;
  runs: number;
  stalls: number;
  failures: string[];
  errors: number;
  firstError?: string;
  rate: Summary | null;
  p50: number | null;
  p99: number | null;
  peakRss: number | null;
  /** Medians of the case's other figures (HOL, events, memory, uploads). */
  extra: Record<string, number>;
  /** The same figures' median, min and max over the clean runs (the spread across rounds). */
  extraSpread: Record<string, Summary>;
}

/** nestjs-smux ÷ a baseline, computed within each round where neither stalled or failed, then summarized. */
export interface Ratio {
  baseline: string;
  summary: Summary | null;
  /** How much the per-round ratio moves: (max − min) ÷ median over the rounds, e.g. 0.12; null without rounds. */
  spread: number | null;
  /** Rounds that gave a ratio. */
  rounds: number;
}

/** One of the subject's variants (its `<variant>MBps` figure) ÷ a baseline's `rate`, within each round. */
export interface VariantRatio extends Ratio {
  variant: string;
}

export interface CaseSummary {
  id: string;
  label: string;
  unit: string;
  systems: SystemFigures[];
  ratios: Ratio[];
  /** The subject's variants (e.g. the upload's send(source) and openDuplex), key and label. */
  variants: Array<{ key: string; label: string }>;
  /** Each variant ÷ each baseline, per round (the upload case). */
  variantRatios: VariantRatio[];
  /** nestjs-smux p50 ÷ baseline p50, per round (lower is better). */
  p50Ratios: Ratio[];
}

export interface CoreSummary {
  cases: Array<{ name: string; summary: Summary | null; failures: string[] }>;
  ratios: Array<{ label: string; target: number; summary: Summary | null }>;
}

const clean = (r: RunResult | undefined): r is RunResult => r !== undefined && !r.stalled && r.failed === undefined;

/** Keys of the extra figures reported per case, besides rate, p50, p99 and peak RSS. */
const EXTRA = [
  // The seconds of measured work of a run (sized cases: ≥ the target) and its calls.
  'seconds',
  'completed',
  'p50Alone',
  'p99Alone',
  'p99Ratio',
  'rateAlone',
  'smallCalls',
  'bigMBps',
  'bigMs',
  'bigReplies',
  'emitRate',
  'sent',
  'received',
  'lost',
  'heapPerCall',
  'rssPerCall',
  'heapUsed',
  'rss',
  'baseHeapUsed',
  'baseRss',
  'open',
  // The memory cases: calls the server's transport had open when measured, left open after; heap once released.
  'serverCalls',
  'leftCalls',
  'heapAfter',
  'rssAfter',
  'leftHeapPerCall',
  // Issue 8 §6, per upload variant: the upload case's MB/s, client peak RSS and measured seconds; the small calls
  // during an upload.
  ...['stream', 'duplex', 'tcp', 'grpc'].flatMap((v) =>
    ['MBps', 'ClientPeakRss', 'Seconds', 'P99Alone', 'P99During', 'P99Ratio', 'P50Alone', 'P50During', 'CallsAlone', 'CallsDuring'].map(
      (figure) => `${v}${figure}`,
    ),
  ),
];

/** (max − min) ÷ median of a summary: how far apart its rounds were, relative to its figure. */
export function spreadOf(s: Summary | null): number | null {
  return s === null || !(s.median > 0) ? null : (s.max - s.min) / s.median;
}

/** A brokered system's CPU per process, in cores over the run (`cpu: { broker, server, client }`): `cpu.broker`, … */
const CPU = ['cpu.broker', 'cpu.server', 'cpu.client'];

function cpuShare(r: RunResult, process: string): number | undefined {
  const cpu = r.cpu as Record<string, unknown> | undefined;
  const value = cpu?.[process];
  return typeof value === 'number' ? value : undefined;
}

export function summarizeCase(planned: PlannedCase, systems: string[], samples: Sample[], subject: string): CaseSummary {
  const mine = samples.filter((s) => s.caseId === planned.id);
  const figures: SystemFigures[] = [];
  for (const system of systems) {
    const runs = mine.filter((s) => s.system === system).map((s) => s.result);
    if (runs.length === 0) continue;
    const ok = runs.filter(clean);
    const median = (key: string): number | null => summarizeFinite(ok.map((r) => r[key] as number | undefined))?.median ?? null;
    const extra: Record<string, number> = {};
    const extraSpread: Record<string, Summary> = {};
    for (const key of [...EXTRA, ...CPU]) {
      const spread = summarizeFinite(ok.map((r) => (key.startsWith('cpu.') ? cpuShare(r, key.slice(4)) : (r[key] as number | undefined))));
      if (spread === null) continue;
      extra[key] = spread.median;
      extraSpread[key] = spread;
    }
    const firstError = runs.find((r) => r.firstError !== undefined)?.firstError;
    figures.push({
      system,
      runs: runs.length,
      stalls: runs.filter((r) => r.stalled).length,
      failures: runs.filter((r) => r.failed !== undefined).map((r) => String(r.failed)),
      errors: runs.reduce((n, r) => n + (typeof r.errors === 'number' ? r.errors : 0), 0),
      ...(firstError === undefined ? {} : { firstError }),
      rate: summarizeFinite(ok.map((r) => r.rate)),
      p50: median('p50'),
      p99: median('p99'),
      peakRss: summarizeFinite(runs.map((r) => r.peakRss))?.median ?? null,
      extra,
      extraSpread,
    });
  }
  const perRound = (baseline: string, value: (a: RunResult, b: RunResult) => number): Ratio => {
    const values: number[] = [];
    for (const round of new Set(mine.map((s) => s.round))) {
      const a = mine.find((s) => s.round === round && s.system === subject)?.result;
      const b = mine.find((s) => s.round === round && s.system === baseline)?.result;
      if (clean(a) && clean(b)) values.push(value(a, b));
    }
    const finite = values.filter(Number.isFinite);
    const summary = finite.length > 0 ? summarize(finite) : null;
    return { baseline, summary, spread: spreadOf(summary), rounds: finite.length };
  };
  const baselines = figures.map((f) => f.system).filter((s) => s !== subject);
  const variants = planned.variants ?? [];
  const variantRatios = figures.some((f) => f.system === subject)
    ? variants.flatMap(({ key }) =>
        baselines.map((b) => ({
          variant: key,
          ...perRound(b, (a, c) => (a[`${key}MBps`] as number) / (c.rate as number)),
        })),
      )
    : [];
  return {
    id: planned.id,
    label: planned.label,
    unit: planned.unit,
    systems: figures,
    ratios: figures.some((f) => f.system === subject)
      ? baselines.map((b) => perRound(b, (a, c) => (a.rate as number) / (c.rate as number)))
      : [],
    p50Ratios: baselines.map((b) => perRound(b, (a, c) => (a.p50 as number) / (c.p50 as number))),
    variants,
    variantRatios,
  };
}

export function summarizeCore(names: string[], ratios: CoreRatio[], samples: CoreSample[]): CoreSummary {
  const value = (round: number, name: string): number | null => samples.find((s) => s.round === round && s.name === name)?.value ?? null;
  const rounds = [...new Set(samples.map((s) => s.round))];
  return {
    cases: names.map((name) => ({
      name,
      summary: summarizeFinite(samples.filter((s) => s.name === name).map((s) => s.value ?? undefined)),
      failures: samples.filter((s) => s.name === name && s.error !== undefined).map((s) => s.error!),
    })),
    ratios: ratios.map(([label, a, b, target]) => ({
      label,
      target,
      summary: summarizeFinite(
        rounds.map((r) => {
          const x = value(r, a);
          const y = value(r, b);
          return x === null || y === null ? undefined : x / y;
        }),
      ),
    })),
  };
}
