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
  /** Seconds of measured work per bulk transfer (issue 11: every run sized by time). */
  bulkSeconds: number;
  /** Seconds of the unmeasured warm-up transfer a TS client runs first, in the same process. */
  bulkWarmupSeconds: number;
  /** Bytes of the unrecorded run that sizes a Go client's transfers (Go takes a byte count, not a time). */
  bulkCalibrationBytes: number;
  /** Seconds of measured work per request/response run (sized from a first, unrecorded run). */
  requestSeconds: number;
  /** Requests of the unrecorded run that sizes a stream-per-request case (TS and Go). */
  perRequestCalibration: number;
  /** Round trips per stream of the unrecorded run that sizes the 1000-streams case. */
  roundTripsCalibration: number;
}

export function coreSettings(quick: boolean): CoreSettings {
  return {
    bulkSeconds: quick ? 1 : 5,
    bulkWarmupSeconds: quick ? 0.25 : 1,
    bulkCalibrationBytes: (quick ? 64 : 256) * 1024 * 1024,
    requestSeconds: quick ? 1 : 5,
    perRequestCalibration: quick ? 5_000 : 10_000,
    roundTripsCalibration: quick ? 10 : 30,
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

/**
 * A case whose run takes a size (bytes, calls, round trips) rather than a time: its first call makes one
 * unrecorded run at `first` and sizes every later run at that rate for `seconds` (× 1.15, so that a faster round
 * still measures enough). Go has no JIT to warm; the TS request/response peers' warm-up (tens of milliseconds)
 * is inside their measured run, a small part of it at this length.
 *
 * @param run - runs the case at a size and resolves with its rate (per second of the same unit, × `unitsPerRate`)
 * @param unitsPerRate - size units per unit of the rate (bytes per MB/s figure: 1e6; calls: 1; round trips per
 *   stream over 1000 streams: 1 / 1000)
 */
function sizedByTime(
  run: (size: number) => Promise<number>,
  first: number,
  seconds: number,
  unitsPerRate: number,
  step = 1,
): () => Promise<number> {
  let size: number | null = null;
  return async () => {
    if (size === null) {
      const rate = await run(first);
      size = Math.max(first, Math.ceil((rate * unitsPerRate * seconds * 1.15) / step) * step);
    }
    return run(size);
  };
}

/** Every core case, in the order `bench:core` runs them. */
export function coreCases(s: CoreSettings): CoreCase[] {
  const bulk = (kind: 'raw' | 'smux' | 'nest', version: 1 | 2) => async () =>
    (
      await tsPeer('bulk-peer.js', [kind, String(version)], (port) => [
        'client',
        kind,
        String(version),
        String(port),
        `${s.bulkSeconds}s`,
        `${s.bulkWarmupSeconds}s`,
      ])
    ).mbps as number;

  const tsToGo = (version: 1 | 2) => async (bytes: number) => {
    const server = await startGoServer(['-v', String(version)]);
    try {
      const [result] = await runClient(node, [
        join(here, 'bulk-peer.js'),
        'client',
        'go',
        String(version),
        String(server.port),
        String(bytes),
      ]);
      return result.mbps as number;
    } finally {
      await server.stop();
    }
  };
  const goToGo = (version: 1 | 2) => (bytes: number) =>
    goAgainstGoServer(version, ['bench-bulk', '-bytes', String(bytes), '-rounds', '1'], 'mbps');

  const rrStreams = async (roundTrips: number) =>
    (await tsPeer('rr-peer.js', ['2'], (port) => ['streams', '2', String(port), '1000', String(roundTrips)])).rps as number;

  const perRequest = (version: 1 | 2) => async (count: number) =>
    (await tsPeer('rr-peer.js', [String(version)], (port) => ['per-request', String(version), String(port), String(count), '64']))
      .rps as number;

  const goPerRequest = (version: 1 | 2) => (count: number) =>
    goAgainstGoServer(version, ['bench-rr', '-count', String(count), '-concurrency', '64'], 'rps');

  const MB = 1e6;
  const bulkBySize = (run: (bytes: number) => Promise<number>) => sizedByTime(run, s.bulkCalibrationBytes, s.bulkSeconds, MB, 65_536);
  const requests = (run: (count: number) => Promise<number>) => sizedByTime(run, s.perRequestCalibration, s.requestSeconds, 1);

  return [
    ['raw TCP bulk MB/s', bulk('raw', 1)],
    ['TS↔TS v1 bulk MB/s', bulk('smux', 1)],
    ['TS↔TS v2 bulk MB/s', bulk('smux', 2)],
    ['TS↔TS v2 bulk (Nest defaults) MB/s', bulk('nest', 2)],
    ['TS→Go v1 bulk MB/s', bulkBySize(tsToGo(1))],
    ['TS→Go v2 bulk MB/s', bulkBySize(tsToGo(2))],
    ['Go↔Go v1 bulk MB/s', bulkBySize(goToGo(1))],
    ['Go↔Go v2 bulk MB/s', bulkBySize(goToGo(2))],
    ['TS↔TS 1000 streams × round trips/s', sizedByTime(rrStreams, s.roundTripsCalibration, s.requestSeconds, 1 / 1000)],
    ['TS↔TS v2 stream per request/s', requests(perRequest(2))],
    ['TS↔TS v1 stream per request/s', requests(perRequest(1))],
    ['Go↔Go v2 stream per request/s', requests(goPerRequest(2))],
    ['Go↔Go v1 stream per request/s', requests(goPerRequest(1))],
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
