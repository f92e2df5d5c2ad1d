import { fmt } from '../lib/stats.js';
import { cells, fmtLatency, fmtMiB, fmtRatio, fmtSpread, fmtSummary } from './format.js';
import type { CaseSummary, CoreSummary } from './summary.js';
import type { Target } from './targets.js';

/** Where and how the run was made: printed at the top of the table and stored in latest.json. */
export interface Environment {
  node: string;
  cpu: string;
  cores: number;
  /** git commit of the code measured. */
  commit: string;
  date: string;
  rounds: number;
  quick: boolean;
  skipped: string[];
}

/** The final table: every figure of the run, then each target with ✓ / ✗. */
export function renderTable(env: Environment, cases: CaseSummary[], core: CoreSummary, targets: Target[], subject: string): string {
  const out: string[] = [];
  out.push(
    `${subject} benchmark — Node ${env.node} · ${env.cpu} × ${env.cores} · ${env.date} · commit ${env.commit} · ${env.rounds} round${env.rounds === 1 ? '' : 's'}${env.quick ? ' (--quick)' : ''}`,
  );
  out.push(
    'medians over rounds (min – max); ratios are nestjs-smux ÷ the system, taken within each round where neither stalled, then their median (min – max) ±half their spread in % of the median',
  );
  for (const skipped of env.skipped) out.push(`skipped: ${skipped}`);
  const notes: string[] = [];

  const perCall = cases.filter((k) => k.id.startsWith('echo') || k.id.startsWith('events'));
  if (perCall.length > 0)
    out.push(
      '',
      cells([
        ['case', 22, 'l'],
        ['system', 12, 'l'],
        ['per second (min – max)', 31, 'r'],
        ['p50', 9, 'r'],
        ['p99', 9, 'r'],
        ['peak RSS', 10, 'r'],
        ['stalls', 6, 'r'],
        ['s/run (min)', 11, 'r'],
        [`${subject} ÷ this (spread)`, 32, 'r'],
      ]),
    );
  for (const c of perCall) {
    c.systems.forEach((f, i) => {
      const ratio = c.ratios.find((r) => r.baseline === f.system);
      out.push(
        cells([
          [i === 0 ? c.label : '', 22, 'l'],
          [f.system, 12, 'l'],
          [fmtSummary(f.rate), 31, 'r'],
          [fmtLatency(f.p50), 9, 'r'],
          [fmtLatency(f.p99), 9, 'r'],
          [fmtMiB(f.peakRss), 10, 'r'],
          [`${f.stalls}/${f.runs}`, 6, 'r'],
          [fmtSeconds(f.extraSpread.seconds), 11, 'r'],
          [ratio ? `${fmtRatio(ratio.summary)} ${fmtSpread(ratio.summary)}`.trim() : '', 32, 'r'],
        ]),
      );
      collectNotes(notes, c, f);
    });
  }
  for (const c of perCall)
    for (const f of c.systems)
      if (f.extra['cpu.broker'] !== undefined)
        notes.push(
          `${c.label}, ${f.system}: CPU in cores (of ${env.cores}), median over rounds — broker ${f.extra['cpu.broker'].toFixed(2)}, server ${(f.extra['cpu.server'] ?? Number.NaN).toFixed(2)}, client ${(f.extra['cpu.client'] ?? Number.NaN).toFixed(2)}`,
        );
  const events = cases.find((c) => c.id.startsWith('events'));
  for (const f of events?.systems ?? []) {
    if (f.extra.sent !== undefined)
      notes.push(
        `${events!.label}, ${f.system}: ${fmt(f.extra.received ?? 0)} of ${fmt(f.extra.sent)} received by the server (median), emits completed at ${fmt(f.extra.emitRate ?? 0)}/s`,
      );
  }

  const hol = cases.find((c) => c.id === 'hol');
  if (hol !== undefined) {
    out.push('', hol.label);
    out.push(
      cells([
        ['system', 12, 'l'],
        ['p99 alone', 10, 'r'],
        ['p99 during', 10, 'r'],
        ['during ÷ alone', 14, 'r'],
        ['p50 alone', 10, 'r'],
        ['p50 during', 10, 'r'],
        ['calls/s during', 14, 'r'],
        ['reply MB/s', 10, 'r'],
        ['replies', 7, 'r'],
        ['peak RSS', 10, 'r'],
        ['stalls', 6, 'r'],
      ]),
    );
    for (const f of hol.systems) {
      const e = f.extra;
      out.push(
        cells([
          [f.system, 12, 'l'],
          [fmtLatency(e.p99Alone), 10, 'r'],
          [fmtLatency(f.p99), 10, 'r'],
          [e.p99Ratio === undefined ? '–' : `${e.p99Ratio.toFixed(2)}×`, 14, 'r'],
          [fmtLatency(e.p50Alone), 10, 'r'],
          [fmtLatency(f.p50), 10, 'r'],
          [f.rate ? fmt(f.rate.median) : '–', 14, 'r'],
          [e.bigMBps === undefined ? '–' : e.bigMBps.toFixed(1), 10, 'r'],
          [e.bigReplies === undefined ? '–' : fmt(e.bigReplies), 7, 'r'],
          [fmtMiB(f.peakRss), 10, 'r'],
          [`${f.stalls}/${f.runs}`, 6, 'r'],
        ]),
      );
      collectNotes(notes, hol, f);
    }
  }

  renderUploads(out, notes, cases, subject);

  renderMemory(out, notes, cases);

  if (core.cases.length > 0) {
    out.push(
      '',
      cells([
        ['core (bench/core peers, separate processes)', 44, 'l'],
        ['median (min – max)', 34, 'r'],
      ]),
    );
    for (const c of core.cases) {
      out.push(
        cells([
          [c.name, 44, 'l'],
          [fmtSummary(c.summary), 34, 'r'],
        ]),
      );
      for (const failure of c.failures) notes.push(`core ${c.name}: ${failure}`);
    }
    for (const r of core.ratios)
      out.push(
        cells([
          [r.label, 44, 'l'],
          [r.summary === null ? '–' : fmtRatio(r.summary), 34, 'r'],
          [Number.isNaN(r.target) ? '' : `target ≥ ${r.target}×`, 14, 'l'],
        ]),
      );
  }

  for (const issue of new Set(targets.map((t) => t.issue))) {
    const mine = targets.filter((k) => k.issue === issue);
    if (mine.every((t) => t.pass === null)) {
      out.push('', `targets (${issue}): none measured in this run`);
      continue;
    }
    out.push('', `targets (${issue}): median, then min – max across rounds`);
    for (const t of mine) {
      const mark = t.pass === null ? '–' : t.pass ? '✓' : '✗';
      out.push(
        `${mark} ${cells([
          [t.label, 62, 'l'],
          [t.shown, 12, 'r'],
          [t.goal, 10, 'l'],
          [t.spread ?? '', 26, 'l'],
        ])}${t.note ? `  (${t.note})` : ''}`,
      );
    }
  }
  if (notes.length > 0) out.push('', 'notes', ...notes.map((n) => `- ${n}`));
  return `${out.join('\n')}\n`;
}

/** The upload cases (issue 8 §6): MB/s per system and variant with ratios; small calls during an upload. */
function renderUploads(out: string[], notes: string[], cases: CaseSummary[], subject: string): void {
  const upload = cases.find((c) => c.id === 'upload');
  if (upload !== undefined) {
    const baselines = upload.systems.map((f) => f.system).filter((s) => s !== subject);
    out.push('', `${upload.label}: MB/s (10⁶ bytes/s) until the server confirmed the count; ratios within each round`);
    out.push(
      cells([
        ['system', 26, 'l'],
        ['MB/s (min – max)', 22, 'r'],
        ...baselines.map((b): [string, number, 'r'] => [`÷ ${b} (min – max)`, 28, 'r']),
        ['client RSS', 10, 'r'],
        ['server RSS', 10, 'r'],
        ['stalls', 6, 'r'],
      ]),
    );
    for (const f of upload.systems) {
      const rows: Array<[string, string | null]> =
        f.system === subject ? upload.variants.map(({ key, label }) => [`${f.system} ${label}`, key]) : [[f.system, null]];
      for (const [name, key] of rows) {
        const mbps = key === null ? f.rate : (f.extraSpread[`${key}MBps`] ?? null);
        const rss = Object.entries(f.extra).find(([k]) => (key === null ? k.endsWith('ClientPeakRss') : k === `${key}ClientPeakRss`))?.[1];
        out.push(
          cells([
            [name, 26, 'l'],
            [fmtSummary(mbps), 22, 'r'],
            ...baselines.map((b): [string, number, 'r'] => {
              const ratio = key === null ? undefined : upload.variantRatios.find((r) => r.variant === key && r.baseline === b);
              return [ratio === undefined ? '' : fmtRatio(ratio.summary), 28, 'r'];
            }),
            [fmtMiB(rss), 10, 'r'],
            [fmtMiB(f.peakRss), 10, 'r'],
            [`${f.stalls}/${f.runs}`, 6, 'r'],
          ]),
        );
      }
      collectNotes(notes, upload, f);
    }
  }
  for (const c of cases.filter((k) => k.id.startsWith('upload-hol-'))) {
    const f = c.systems.find((s) => s.system === subject);
    if (f === undefined) continue;
    out.push('', `${c.label}, alone then during an upload on the same ClientSmux (same connection)`);
    out.push(
      cells([
        ['upload', 14, 'l'],
        ['p99 alone', 10, 'r'],
        ['p99 during', 10, 'r'],
        ['during ÷ alone (min – max)', 27, 'r'],
        ['p50 alone', 10, 'r'],
        ['p50 during', 10, 'r'],
        ['calls/s alone', 13, 'r'],
        ['calls/s during', 14, 'r'],
        ['upload MB/s', 11, 'r'],
        ['stalls', 6, 'r'],
      ]),
    );
    for (const { key, label } of c.variants) {
      const e = (figure: string): number | undefined => f.extra[`${key}${figure}`];
      const ratio = f.extraSpread[`${key}P99Ratio`];
      out.push(
        cells([
          [label, 14, 'l'],
          [fmtLatency(e('P99Alone')), 10, 'r'],
          [fmtLatency(e('P99During')), 10, 'r'],
          [ratio === undefined ? '–' : fmtRatio(ratio), 27, 'r'],
          [fmtLatency(e('P50Alone')), 10, 'r'],
          [fmtLatency(e('P50During')), 10, 'r'],
          [fmt(e('CallsAlone') ?? Number.NaN), 13, 'r'],
          [fmt(e('CallsDuring') ?? Number.NaN), 14, 'r'],
          [fmt(e('MBps') ?? Number.NaN), 11, 'r'],
          [`${f.stalls}/${f.runs}`, 6, 'r'],
        ]),
      );
    }
    collectNotes(notes, c, f);
  }
}

/**
 * The memory cases (issue 11), one line per kind of call held open: heap and RSS per open call after GC (median,
 * min – max), what the server's transport counted open, and the heap per call left once they were all over.
 */
function renderMemory(out: string[], notes: string[], cases: CaseSummary[]): void {
  const memory = cases.filter((c) => c.id === 'memory' || c.id.startsWith('memory-'));
  const rows = memory.flatMap((c) => c.systems.map((f) => [c, f] as const));
  if (rows.length === 0) return;
  out.push('', 'memory: calls held open on one connection, server heap and RSS after GC per open call (vs a baseline before them)');
  out.push(
    cells([
      ['calls held open', 42, 'l'],
      ['system', 12, 'l'],
      ['open', 7, 'r'],
      ['heap B/call (min – max)', 24, 'r'],
      ['RSS B/call', 10, 'r'],
      ['heap', 10, 'r'],
      ['heap before', 11, 'r'],
      ['left B/call', 11, 'r'],
      ['stalls', 6, 'r'],
    ]),
  );
  for (const [c, f] of rows) {
    const e = f.extra;
    const heap = f.extraSpread.heapPerCall;
    out.push(
      cells([
        [c.label.replace(/^memory: /, ''), 42, 'l'],
        [f.system, 12, 'l'],
        [fmt(e.serverCalls ?? e.open ?? Number.NaN), 7, 'r'],
        [heap === undefined ? '–' : fmtSummary(heap), 24, 'r'],
        [fmt(e.rssPerCall ?? Number.NaN), 10, 'r'],
        [fmtMiB(e.heapUsed), 10, 'r'],
        [fmtMiB(e.baseHeapUsed), 11, 'r'],
        [fmt(e.leftHeapPerCall ?? Number.NaN), 11, 'r'],
        [`${f.stalls}/${f.runs}`, 6, 'r'],
      ]),
    );
    collectNotes(notes, c, f);
  }
}

/** Measured seconds per run as "5.9 (5.2)": the median, then the shortest run. */
function fmtSeconds(s: { median: number; min: number } | undefined): string {
  return s === undefined ? '–' : `${s.median.toFixed(1)} (${s.min.toFixed(1)})`;
}

function collectNotes(notes: string[], c: CaseSummary, f: CaseSummary['systems'][number]): void {
  if (f.stalls > 0) notes.push(`${c.label}, ${f.system}: ${f.stalls} of ${f.runs} runs stalled (no progress for 5 s; server restarted)`);
  for (const failure of new Set(f.failures)) notes.push(`${c.label}, ${f.system}: run failed: ${failure}`);
  if (f.errors > 0) notes.push(`${c.label}, ${f.system}: ${f.errors} failed calls; first: ${f.firstError ?? '?'}`);
}
