import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { CaseSummary, CoreSummary } from './summary.js';
import type { Environment } from './table.js';

/** One bar: a system's median throughput in a case, and what goes in the panel's right-hand column. */
interface Bar {
  name: string;
  value: number | null;
  /** Appended to the value (e.g. "· 1 stall"). */
  suffix: string;
  /** The right-hand column (e.g. nestjs-smux ÷ this system). */
  right: string;
}

/** One panel: a case, its unit and its bars (each panel has its own scale). */
interface Panel {
  title: string;
  rightHeading: string;
  bars: Bar[];
}

const COLORS: Record<string, string> = {
  'nestjs-smux': '#e8590c',
  'Nest TCP': '#1c7ed6',
  'Nest gRPC': '#2f9e44',
  'raw TCP': '#868e96',
  'Go smux': '#0b7285',
};
const WIDTH = 980;
const COLUMN = 475;
const BAR_H = 18;
const ROW = BAR_H + 6;
const LABEL_W = 100;
const BAR_MAX = 200;

const escape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const short = (v: number): string =>
  v >= 1e6 ? `${(v / 1e6).toFixed(2)}M` : v >= 1e4 ? `${(v / 1e3).toFixed(1)}k` : v >= 100 ? v.toFixed(0) : v.toFixed(1);
const colorOf = (name: string): string =>
  COLORS[name] ?? (name.startsWith('Go') ? COLORS['Go smux'] : name.startsWith('raw') ? COLORS['raw TCP'] : COLORS['nestjs-smux']);

/** The upload case: one bar per nestjs-smux variant and per baseline, MB/s; right: ÷ Nest gRPC. */
function uploadPanel(c: CaseSummary, subject: string): Panel {
  const bars: Bar[] = [];
  for (const f of c.systems) {
    const suffix = f.stalls > 0 ? ` · ${f.stalls} stall${f.stalls > 1 ? 's' : ''}` : '';
    if (f.system !== subject) {
      bars.push({ name: f.system, value: f.rate?.median ?? null, suffix, right: '' });
      continue;
    }
    for (const { key, label } of c.variants) {
      const ratio = c.variantRatios.find((r) => r.variant === key && r.baseline === 'Nest gRPC')?.summary;
      bars.push({ name: label, value: f.extra[`${key}MBps`] ?? null, suffix, right: ratio ? `${ratio.median.toFixed(2)}×` : '' });
    }
  }
  return { title: `${c.label} — MB/s`, rightHeading: `${subject} ÷ Nest gRPC`, bars };
}

function casePanels(cases: CaseSummary[], subject: string): Panel[] {
  return cases
    .filter((c) => !c.id.startsWith('memory') && !c.id.startsWith('upload-hol-'))
    .map((c) => {
      if (c.id === 'upload') return uploadPanel(c, subject);
      const hol = c.id === 'hol';
      return {
        title: hol ? 'head-of-line: echo 64 B @64 during a 64 MiB reply — calls/s' : `${c.label} — ${c.unit}`,
        rightHeading: hol ? 'p99 during ÷ alone' : `${subject} ÷ it`,
        bars: c.systems.map((f) => {
          const ratio = c.ratios.find((r) => r.baseline === f.system)?.summary;
          const right = hol
            ? f.extra.p99Ratio === undefined
              ? ''
              : `${f.extra.p99Ratio.toFixed(2)}×`
            : ratio
              ? `${ratio.median.toFixed(2)}×`
              : '';
          return {
            name: f.system,
            value: f.rate?.median ?? null,
            suffix: f.stalls > 0 ? ` · ${f.stalls} stall${f.stalls > 1 ? 's' : ''}` : '',
            right,
          };
        }),
      };
    });
}

function corePanels(core: CoreSummary): Panel[] {
  if (core.cases.length === 0) return [];
  const panel = (unit: string, title: string, ratios: Array<[bar: string, label: string, vs: string]>): Panel => {
    const bars = core.cases
      .filter((c) => c.name.endsWith(unit))
      .map((c) => ({ name: c.name.replace(` ${unit}`, '').trim(), value: c.summary?.median ?? null, suffix: '', right: '' }));
    for (const [bar, label, vs] of ratios) {
      const r = core.ratios.find((x) => x.label === label)?.summary;
      const target = bars.find((b) => b.name === bar);
      if (r && target) target.right = `${r.median.toFixed(2)}× ${vs}`;
    }
    return { title, rightHeading: 'ratio, same round', bars };
  };
  return [
    panel('bulk MB/s', 'core: bulk bytes over one stream — MB/s', [
      ['TS↔TS v1', 'TS↔TS v1 bulk ÷ raw TCP', 'raw'],
      ['TS↔TS v2', 'TS↔TS v2 bulk ÷ Go↔Go v2', 'Go v2'],
    ]),
    panel('stream per request/s', 'core: a new stream per request @64 — per s', [
      ['TS↔TS v2', 'stream per request v2: TS ÷ Go', 'Go v2'],
      ['TS↔TS v1', 'stream per request v1: TS ÷ Go', 'Go v1'],
    ]),
  ];
}

/**
 * A bar chart of throughput per system per case (medians), one panel per case with its own scale, and the
 * ratio of nestjs-smux to each system (same round, median) in each panel's right-hand column. Hand-written
 * SVG, no dependencies.
 */
export function renderSvg(env: Environment, cases: CaseSummary[], core: CoreSummary, subject: string): string {
  const panels = [...casePanels(cases, subject), ...corePanels(core)];
  const columns = [74, 74];
  const placed = panels.map((p) => {
    const col = columns[0] <= columns[1] ? 0 : 1;
    const y = columns[col];
    columns[col] = y + 40 + p.bars.length * ROW + 10;
    return { p, x: 10 + col * (COLUMN + 10), y };
  });
  const height = Math.max(...columns) + 10;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">`,
    '<rect width="100%" height="100%" fill="#ffffff"/>',
    `<text x="10" y="24" font-size="16" font-weight="bold">${escape(`${subject} vs Nest TCP, Nest gRPC, raw TCP and Go smux — throughput, medians of ${env.rounds} round${env.rounds === 1 ? '' : 's'}`)}</text>`,
    `<text x="10" y="44" fill="#495057">${escape(`Node ${env.node} · ${env.cpu} × ${env.cores} · ${env.date}${env.quick ? ' · --quick' : ''} · longer bars are better; each panel has its own scale.`)}</text>`,
    `<text x="10" y="60" fill="#495057">${escape(`Right-hand column: ${subject}'s throughput ÷ that system's, taken within each round (rounds where neither stalled), median.`)}</text>`,
  ];
  for (const { p, x, y } of placed) {
    const max = Math.max(...p.bars.map((b) => b.value ?? 0), 1);
    parts.push(`<g transform="translate(${x},${y})">`);
    parts.push(`<rect width="${COLUMN}" height="${40 + p.bars.length * ROW}" rx="4" fill="#f8f9fa" stroke="#dee2e6"/>`);
    parts.push(`<text x="8" y="18" font-weight="bold">${escape(p.title)}</text>`);
    parts.push(`<text x="${COLUMN - 8}" y="34" text-anchor="end" font-size="10" fill="#868e96">${escape(p.rightHeading)}</text>`);
    p.bars.forEach((b, i) => {
      const by = 38 + i * ROW;
      const w = b.value === null ? 0 : Math.max(1, (b.value / max) * BAR_MAX);
      parts.push(`<text x="${LABEL_W - 6}" y="${by + 13}" text-anchor="end">${escape(b.name)}</text>`);
      parts.push(`<rect x="${LABEL_W}" y="${by}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${colorOf(b.name)}"/>`);
      parts.push(
        `<text x="${(LABEL_W + w + 4).toFixed(1)}" y="${by + 13}">${escape(b.value === null ? 'no clean run' : short(b.value))}${escape(b.suffix)}</text>`,
      );
      if (b.right !== '')
        parts.push(`<text x="${COLUMN - 8}" y="${by + 13}" text-anchor="end" font-weight="bold" fill="#343a40">${escape(b.right)}</text>`);
    });
    parts.push('</g>');
  }
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

export function writeSvg(path: string, svg: string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, svg);
}
