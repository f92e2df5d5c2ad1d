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
import { goAvailability, runGo, startGoServer } from '../../test/interop/go-peer.js';
import { runClient, startServer } from '../lib/process.js';
import { fmt, summarize } from '../lib/stats.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..', '..');
const quick = process.argv.includes('--quick');
const rounds = quick ? 3 : 5;
const bulkBytes = (quick ? 128 : 512) * 1024 * 1024;
const perRequestCount = quick ? 30_000 : 100_000;
const goPerRequestCount = quick ? 10_000 : 40_000;
const roundTrips = quick ? 30 : 100;
const node = process.execPath;
const go = goAvailability();

type Sample = Record<string, number>;
const samples: Sample[] = [];

function progress(text: string): void {
  process.stderr.write(`\r\x1b[K${text}`);
}

async function tsPeer(script: string, serverArgs: string[], clientArgs: (port: number) => string[]): Promise<Record<string, unknown>> {
  const server = await startServer(node, [join(here, script), 'server', ...serverArgs]);
  try {
    const [result] = await runClient(node, [join(here, script), ...clientArgs(server.port)]);
    if (result === undefined) throw new Error(`${script} printed no result`);
    return result;
  } finally {
    await server.stop();
  }
}

const bulk = (kind: 'raw' | 'smux', version: 1 | 2) => async () =>
  (await tsPeer('bulk-peer.js', [kind, String(version)], (port) => ['client', kind, String(version), String(port), String(bulkBytes)])).mbps as number;

const bulkTsToGo = (version: 1 | 2) => async () => {
  const server = await startGoServer(['-v', String(version)]);
  try {
    const [result] = await runClient(node, [join(here, 'bulk-peer.js'), 'client', 'go', String(version), String(server.port), String(bulkBytes)]);
    return result!.mbps as number;
  } finally {
    await server.stop();
  }
};

/** Runs a Go client sub-command against a separate Go server process (as every system here runs: two processes). */
async function goAgainstGoServer(version: 1 | 2, args: string[], field: string): Promise<number> {
  const server = await startGoServer(['-v', String(version)]);
  try {
    const run = await runGo([...args, '-v', String(version), '-addr', `127.0.0.1:${server.port}`]);
    const result = run.results.at(-1);
    if (run.code !== 0 || result === undefined) throw new Error(`go ${args[0]} failed: ${run.stderr}`);
    return result[field] as number;
  } finally {
    await server.stop();
  }
}

const bulkGoGo = (version: 1 | 2) => () => goAgainstGoServer(version, ['bench-bulk', '-bytes', String(bulkBytes), '-rounds', '1'], 'mbps');

const rrStreams = async () =>
  (await tsPeer('rr-peer.js', ['2'], (port) => ['streams', '2', String(port), '1000', String(roundTrips)])).rps as number;

const perRequest = (version: 1 | 2) => async () =>
  (await tsPeer('rr-peer.js', [String(version)], (port) => ['per-request', String(version), String(port), String(perRequestCount), '64'])).rps as number;

const goPerRequest = (version: 1 | 2) => () =>
  goAgainstGoServer(version, ['bench-rr', '-count', String(goPerRequestCount), '-concurrency', '64'], 'rps');

const cases: Array<[string, () => Promise<number>]> = [
  ['raw TCP bulk MB/s', bulk('raw', 1)],
  ['TS↔TS v1 bulk MB/s', bulk('smux', 1)],
  ['TS↔TS v2 bulk MB/s', bulk('smux', 2)],
  ['TS→Go v1 bulk MB/s', bulkTsToGo(1)],
  ['TS→Go v2 bulk MB/s', bulkTsToGo(2)],
  ['Go↔Go v1 bulk MB/s', bulkGoGo(1)],
  ['Go↔Go v2 bulk MB/s', bulkGoGo(2)],
  ['TS↔TS 1000 streams × round trips/s', rrStreams],
  ['TS↔TS v2 stream per request/s', perRequest(2)],
  ['TS↔TS v1 stream per request/s', perRequest(1)],
  ['Go↔Go v2 stream per request/s', goPerRequest(2)],
  ['Go↔Go v1 stream per request/s', goPerRequest(1)],
];

const ratios: Array<[string, string, string, number]> = [
  ['TS↔TS v1 bulk ÷ raw TCP', 'TS↔TS v1 bulk MB/s', 'raw TCP bulk MB/s', 0.8],
  ['TS↔TS v2 bulk ÷ raw TCP', 'TS↔TS v2 bulk MB/s', 'raw TCP bulk MB/s', Number.NaN],
  ['TS↔TS v2 bulk ÷ Go↔Go v2', 'TS↔TS v2 bulk MB/s', 'Go↔Go v2 bulk MB/s', 2],
  ['TS→Go v1 bulk ÷ Go↔Go v1', 'TS→Go v1 bulk MB/s', 'Go↔Go v1 bulk MB/s', 1],
  ['TS→Go v2 bulk ÷ Go↔Go v2', 'TS→Go v2 bulk MB/s', 'Go↔Go v2 bulk MB/s', 1],
  ['Go↔Go v1 bulk ÷ raw TCP', 'Go↔Go v1 bulk MB/s', 'raw TCP bulk MB/s', Number.NaN],
  ['Go↔Go v2 bulk ÷ raw TCP', 'Go↔Go v2 bulk MB/s', 'raw TCP bulk MB/s', Number.NaN],
  ['stream per request v2: TS ÷ Go', 'TS↔TS v2 stream per request/s', 'Go↔Go v2 stream per request/s', 2],
  ['stream per request v1: TS ÷ Go', 'TS↔TS v1 stream per request/s', 'Go↔Go v1 stream per request/s', 2],
];

async function idleMemory(face: 'duplex' | 'channel'): Promise<number> {
  const [result] = await runClient(node, ['--expose-gc', join(here, 'idle-memory.js'), '10000', face]);
  return result!.heapBytesPerStream as number;
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
  console.log(`\nsmux core benchmark — Node ${process.version}, ${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, ${new Date().toISOString().slice(0, 10)}, ${rounds} rounds${quick ? ' (quick)' : ''}\n`);
  console.log('case'.padEnd(42) + 'median'.padStart(14) + '   min – max');
  for (const [name] of active) {
    const s = summarize(samples.map((x) => x[name]!));
    table[name] = s;
    console.log(name.padEnd(42) + fmt(s.median).padStart(14) + `   ${fmt(s.min)} – ${fmt(s.max)}`);
  }
  console.log(`\n${'ratio (per round, median)'.padEnd(42)}${'median'.padStart(14)}   min – max   target`);
  const ratioTable: Record<string, unknown> = {};
  for (const [label, a, b, target] of ratios) {
    if (!active.some(([n]) => n === a) || !active.some(([n]) => n === b)) continue;
    const s = summarize(samples.map((x) => x[a]! / x[b]!));
    ratioTable[label] = { ...s, target };
    const verdict = Number.isNaN(target) ? '' : s.median >= target ? `≥ ${target} ✓` : `≥ ${target} ✗`;
    console.log(label.padEnd(42) + fmt(s.median, 2).padStart(14) + `   ${fmt(s.min, 2)} – ${fmt(s.max, 2)}   ${verdict}`);
  }
  console.log(`\nheap per open idle stream (10 000 streams): SmuxStream ${memory.duplex} B, SmuxChannel ${memory.channel} B (target ≤ 2048 B)`);

  const out = join(repo, 'bench', 'results');
  mkdirSync(out, { recursive: true });
  const result = { node: process.version, cpu: cpus()[0]?.model, cores: cpus().length, date: new Date().toISOString(), rounds, quick, cases: table, ratios: ratioTable, memory, samples };
  writeFileSync(join(out, 'core-latest.json'), `${JSON.stringify(result, null, 2)}\n`);
  console.log(`\nwritten to bench/results/core-latest.json`);
}

await main();
