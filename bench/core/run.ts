/**
 * `npm run bench:core [-- --quick]`: the smux core side by side with raw Node TCP and Go smux, in one run.
 *
 * Each case runs its server and client as separate processes on 127.0.0.1. Rounds are interleaved (every
 * case once per round) so machine drift hits all systems alike; ratios are taken within a round and the
 * medians are reported. Go cases are skipped, with the reason, when Go is not installed.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { goAvailability } from '../../test/interop/go-peer.js';
import { fmt, summarize } from '../lib/stats.js';
import { coreCases, coreRatios as ratios, coreSettings, idleMemory } from './cases.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const quick = process.argv.includes('--quick');
const rounds = quick ? 3 : 5;
const go = goAvailability();
const cases = coreCases(coreSettings(quick));

type Sample = Record<string, number>;
const samples: Sample[] = [];

/** One progress line, rewritten in place on a terminal; plain lines in a log. */
function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
  else if (text !== '') process.stderr.write(`${text}\n`);
}

async function main(): Promise<void> {
  if (!go.ok) console.error(`*** Go cases skipped: ${go.reason} ***`);
  const active = cases.filter(([name]) => go.ok || !name.includes('Go'));
  for (let round = 1; round <= rounds; round++) {
    const sample: Sample = {};
    for (const [name, run] of active) {
      progress(`round ${round}/${rounds}: ${name}`);
      sample[name] = await run();
    }
    samples.push(sample);
  }
  progress('idle streams: heap per stream');
  const memory = { duplex: await idleMemory('duplex'), channel: await idleMemory('channel') };
  progress('');

  const table: Record<string, unknown> = {};
  console.log(
    `\nsmux core benchmark — Node ${process.version}, ${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, ${new Date().toISOString().slice(0, 10)}, ${rounds} rounds${quick ? ' (quick)' : ''}\n`,
  );
  console.log('case'.padEnd(42) + 'median'.padStart(14) + '   min – max');
  for (const [name] of active) {
    const s = summarize(samples.map((x) => x[name]));
    table[name] = s;
    console.log(name.padEnd(42) + fmt(s.median).padStart(14) + `   ${fmt(s.min)} – ${fmt(s.max)}`);
  }
  console.log(`\n${'ratio (per round, median)'.padEnd(42)}${'median'.padStart(14)}   min – max   target`);
  const ratioTable: Record<string, unknown> = {};
  for (const [label, a, b, target] of ratios) {
    if (!active.some(([n]) => n === a) || !active.some(([n]) => n === b)) continue;
    const s = summarize(samples.map((x) => x[a] / x[b]));
    ratioTable[label] = { ...s, target };
    const verdict = Number.isNaN(target) ? '' : s.median >= target ? `≥ ${target} ✓` : `≥ ${target} ✗`;
    console.log(label.padEnd(42) + fmt(s.median, 2).padStart(14) + `   ${fmt(s.min, 2)} – ${fmt(s.max, 2)}   ${verdict}`);
  }
  console.log(
    `\nheap per open idle stream (10 000 streams): SmuxStream ${memory.duplex} B, SmuxChannel ${memory.channel} B (target ≤ 2048 B)`,
  );

  const out = join(repo, 'bench', 'results');
  mkdirSync(out, { recursive: true });
  const result = {
    node: process.version,
    cpu: cpus()[0]?.model,
    cores: cpus().length,
    date: new Date().toISOString(),
    rounds,
    quick,
    cases: table,
    ratios: ratioTable,
    memory,
    samples,
  };
  writeFileSync(join(out, 'core-latest.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`\nwritten to bench/results/core-latest.json`);
}

await main();
