/**
 * The smux core's benchmark cases (raw TCP, TS and Go smux side by side), shared by `npm run bench:core` and
 * `npm run bench`. Each case runs its server and client as separate processes on 127.0.0.1 and returns one
 * figure; Go cases need the Go peer (test/interop/go-peer.ts).
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runGo, startGoServer } from '../../test/interop/go-peer.js';
import { runClient, startServer } from '../lib/process.js';

const here = dirname(fileURLToPath(import.meta.url));
const node = process.execPath;

/** Sizes of the core cases. */
export interface CoreSettings {
  /** Bytes per bulk transfer. */
  bulkBytes: number;
  /** Requests per TS stream-per-request run. */
  perRequestCount: number;
  /** Requests per Go stream-per-request run. */
  goPerRequestCount: number;
  /** Round trips per stream in the 1000-streams case. */
  roundTrips: number;
}

export function coreSettings(quick: boolean): CoreSettings {
  return {
    bulkBytes: (quick ? 128 : 512) * 1024 * 1024,
    perRequestCount: quick ? 30_000 : 100_000,
    goPerRequestCount: quick ? 10_000 : 40_000,
    roundTrips: quick ? 30 : 100,
  };
}

/** A named case: runs once and resolves with its figure (MB/s or requests/s). */
export type CoreCase = [name: string, run: () => Promise<number>];

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

/** Every core case, in the order `bench:core` runs them. */
export function coreCases(s: CoreSettings): CoreCase[] {
  const bulk = (kind: 'raw' | 'smux' | 'nest', version: 1 | 2) => async () =>
    (await tsPeer('bulk-peer.js', [kind, String(version)], (port) => ['client', kind, String(version), String(port), String(s.bulkBytes)]))
      .mbps as number;

  const bulkTsToGo = (version: 1 | 2) => async () => {
    const server = await startGoServer(['-v', String(version)]);
    try {
      const [result] = await runClient(node, [
        join(here, 'bulk-peer.js'),
        'client',
        'go',
        String(version),
        String(server.port),
        String(s.bulkBytes),
      ]);
      return result.mbps as number;
    } finally {
      await server.stop();
    }
  };

  const bulkGoGo = (version: 1 | 2) => () =>
    goAgainstGoServer(version, ['bench-bulk', '-bytes', String(s.bulkBytes), '-rounds', '1'], 'mbps');

  const rrStreams = async () =>
    (await tsPeer('rr-peer.js', ['2'], (port) => ['streams', '2', String(port), '1000', String(s.roundTrips)])).rps as number;

  const perRequest = (version: 1 | 2) => async () =>
    (
      await tsPeer('rr-peer.js', [String(version)], (port) => [
        'per-request',
        String(version),
        String(port),
        String(s.perRequestCount),
        '64',
      ])
    ).rps as number;

  const goPerRequest = (version: 1 | 2) => () =>
    goAgainstGoServer(version, ['bench-rr', '-count', String(s.goPerRequestCount), '-concurrency', '64'], 'rps');

  return [
    ['raw TCP bulk MB/s', bulk('raw', 1)],
    ['TS↔TS v1 bulk MB/s', bulk('smux', 1)],
    ['TS↔TS v2 bulk MB/s', bulk('smux', 2)],
    ['TS↔TS v2 bulk (Nest defaults) MB/s', bulk('nest', 2)],
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
}

/** A ratio of two cases measured in the same round, with its target (NaN: informative only). */
export type CoreRatio = [label: string, numerator: string, denominator: string, target: number];

export const coreRatios: CoreRatio[] = [
  ['TS↔TS v1 bulk ÷ raw TCP', 'TS↔TS v1 bulk MB/s', 'raw TCP bulk MB/s', 0.8],
  ['TS↔TS v2 bulk ÷ raw TCP', 'TS↔TS v2 bulk MB/s', 'raw TCP bulk MB/s', Number.NaN],
  // One v2 stream with the transport's windows: 256 KiB, auto-tuned up to maxStreamWindow (issue 11).
  ['TS↔TS v2 bulk (Nest defaults) ÷ raw TCP', 'TS↔TS v2 bulk (Nest defaults) MB/s', 'raw TCP bulk MB/s', 0.8],
  ['TS↔TS v2 bulk ÷ Go↔Go v2', 'TS↔TS v2 bulk MB/s', 'Go↔Go v2 bulk MB/s', 2],
  ['TS→Go v1 bulk ÷ Go↔Go v1', 'TS→Go v1 bulk MB/s', 'Go↔Go v1 bulk MB/s', 1],
  ['TS→Go v2 bulk ÷ Go↔Go v2', 'TS→Go v2 bulk MB/s', 'Go↔Go v2 bulk MB/s', 1],
  ['Go↔Go v1 bulk ÷ raw TCP', 'Go↔Go v1 bulk MB/s', 'raw TCP bulk MB/s', Number.NaN],
  ['Go↔Go v2 bulk ÷ raw TCP', 'Go↔Go v2 bulk MB/s', 'raw TCP bulk MB/s', Number.NaN],
  ['stream per request v2: TS ÷ Go', 'TS↔TS v2 stream per request/s', 'Go↔Go v2 stream per request/s', 2],
  ['stream per request v1: TS ÷ Go', 'TS↔TS v1 stream per request/s', 'Go↔Go v1 stream per request/s', 2],
];

/** Heap bytes per open idle stream (10 000 streams), from idle-memory.js. */
export async function idleMemory(face: 'duplex' | 'channel'): Promise<number> {
  const [result] = await runClient(node, ['--expose-gc', join(here, 'idle-memory.js'), '10000', face]);
  return result.heapBytesPerStream as number;
}
