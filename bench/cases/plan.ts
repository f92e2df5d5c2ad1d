import type { CaseSpec, HeldCall } from './spec.js';

/** One case of `npm run bench`, as the orchestrator runs it on every system that supports it. */
export interface PlannedCase {
  /** Stable key in results/latest.json (e.g. "echo-64-64"). */
  id: string;
  /** Label in the table and the chart (e.g. "echo 64 B @64"). */
  label: string;
  /** Unit of the case's throughput figure. */
  unit: string;
  spec: CaseSpec;
  /**
   * The subject's ways of doing the case (e.g. the upload's `stream` and `duplex`), each reported as a figure of
   * its own (`<key>MBps`) and compared with every baseline's `rate`, within each round.
   */
  variants?: Array<{ key: string; label: string }>;
}

const MiB = 1024 * 1024;
/** nestjs-smux's ways of uploading (issue 8): a streamed request and a byte stream. */
const UPLOAD_VARIANTS = [
  { key: 'stream', label: 'send(source)' },
  { key: 'duplex', label: 'openDuplex' },
];

const KiB = 1024;

/**
 * The memory cases (issue 11): 10 000 calls of one kind held open on one connection, each kind a case of its own
 * (its own figure; a fresh connection each). `memory` keeps its id from issue 4.
 */
export const MEMORY_CASES: ReadonlyArray<{ id: string; call: HeldCall; label: string; short: string }> = [
  { id: 'memory', call: 'unary', label: 'memory: 10 000 open unary calls', short: 'unary call' },
  { id: 'memory-stream', call: 'stream', label: 'memory: 10 000 open client streams (send(source))', short: 'client stream' },
  { id: 'memory-bidi', call: 'bidi', label: 'memory: 10 000 open bidirectional calls', short: 'bidirectional call' },
  { id: 'memory-duplex', call: 'duplex', label: 'memory: 10 000 open byte streams (openDuplex)', short: 'byte stream' },
];

/**
 * How a case is sized by time (issue 11): a calibration per system (a few short runs until one lasts
 * `calibrationSeconds`), then per system as many calls as `seconds` of measured work at the calibrated rate (and
 * `warmupSeconds` of warm-up calls before them). Every system measures for the same time, not the same count.
 */
export interface Sizing {
  seconds: number;
  warmupSeconds: number;
  calibrationSeconds: number;
  /** The first calibration run's calls (then scaled until a run lasts `calibrationSeconds`). */
  firstCount: number;
}

/** A case sized by time: its spec's `count` and `warmup` are set per system by the calibration. */
export interface SizedCase extends PlannedCase {
  sizing: Sizing;
}

/** Seconds of measured work per system per case: the full run (issue 11: ≥ 5 s), and `--quick`. */
export const MEASURE_SECONDS = { full: 5, quick: 1 };

/** 5 s measured after 1 s of warm-up (`--quick`: 1 s after 0.3 s), calibrated with runs of ≥ 0.5 s (0.25 s). */
function sizingOf(quick: boolean, firstCount: number): Sizing {
  return quick
    ? { seconds: MEASURE_SECONDS.quick, warmupSeconds: 0.3, calibrationSeconds: 0.25, firstCount }
    : { seconds: MEASURE_SECONDS.full, warmupSeconds: 1, calibrationSeconds: 0.5, firstCount };
}

/**
 * The cases. The per-call cases (echo, events) are sized by time (see {@link Sizing}), the head-of-line case too
 * (each phase measures `seconds`: 64 MiB replies one after another), the uploads and the small calls beside an
 * upload; the memory cases do a fixed amount of work (10 000 held calls). `--quick` measures 1 s per system per
 * case instead of 5 s (and runs fewer rounds, see run.ts). Echo 16 KiB @1 is left out of the default list
 * (`--only=echo-16384-1` runs it): it has no target, and every case costs ≈ 6.5 s × systems × rounds.
 */
export function plan(quick: boolean): PlannedCase[] {
  const q = (full: number, short: number): number => (quick ? short : full);
  const echo = (size: number, inFlight: number, firstCount: number): SizedCase => sizedEcho(quick, size, inFlight, firstCount);
  const events: SizedCase = {
    id: 'events-64-64',
    label: 'events 64 B @64',
    unit: 'events/s',
    spec: { kind: 'events', size: 64, inFlight: 64, count: 2_000, warmup: 0 },
    sizing: sizingOf(quick, 2_000),
  };
  return [
    echo(64, 1, 500),
    echo(64, 64, 2_000),
    echo(64, 512, 2_000),
    echo(16 * KiB, 64, 500),
    echo(16 * KiB, 512, 1_000),
    events,
    {
      id: 'hol',
      label: 'head-of-line: echo 64 B @64 + 64 MiB reply',
      unit: 'calls/s',
      spec: {
        kind: 'hol',
        size: 64,
        inFlight: 64,
        count: q(10_000, 3_000),
        seconds: q(MEASURE_SECONDS.full, MEASURE_SECONDS.quick),
        warmup: q(3_000, 1_000),
        items: 1024,
        itemBytes: 64 * KiB,
        maxSmall: 2_000_000,
      },
    },
    // Issue 11: server heap per open call, for each kind of call (the streamed kinds are nestjs-smux's only).
    ...MEMORY_CASES.map(({ id, call, label }): PlannedCase => ({
      id,
      label,
      unit: 'B/call',
      spec: { kind: 'memory', calls: 10_000, call },
    })),
    // Issue 8 §6: uploads (a streamed request, a byte stream) vs raw TCP and Nest gRPC client streaming.
    {
      id: 'upload',
      label: `upload for ${q(MEASURE_SECONDS.full, MEASURE_SECONDS.quick)} s in 64 KiB chunks`,
      unit: 'MB/s',
      spec: {
        kind: 'upload',
        seconds: q(MEASURE_SECONDS.full, MEASURE_SECONDS.quick),
        chunkBytes: 64 * KiB,
        warmupSeconds: q(1, 0.3),
        calibrationBytes: q(256, 64) * MiB,
      },
      variants: UPLOAD_VARIANTS,
    },
    // Small calls during an upload on the same ClientSmux: one at a time (latency), and 64 in flight (load).
    uploadHol(1, q(10_000, 2_000), q(1_000, 500), q(MEASURE_SECONDS.full, MEASURE_SECONDS.quick)),
    uploadHol(64, q(20_000, 5_000), q(5_000, 2_000), q(MEASURE_SECONDS.full, MEASURE_SECONDS.quick)),
  ];
}

/** Echo of `size` bytes at `inFlight`, sized by time; the first calibration run makes `firstCount` calls. */
function sizedEcho(quick: boolean, size: number, inFlight: number, firstCount: number): SizedCase {
  return {
    id: `echo-${size}-${inFlight}`,
    label: `echo ${size >= KiB ? `${size / KiB} KiB` : `${size} B`} @${inFlight}`,
    unit: 'calls/s',
    spec: { kind: 'echo', size, inFlight, count: firstCount, warmup: 0 },
    sizing: sizingOf(quick, firstCount),
  };
}

/** Cases left out of the default list, run by naming them in `--only`. */
export function optionalCases(quick: boolean): PlannedCase[] {
  return [sizedEcho(quick, 16 * KiB, 1, 200)];
}

/** True for a case sized by time. */
export function isSized(c: PlannedCase): c is SizedCase {
  return (c as Partial<SizedCase>).sizing !== undefined;
}

/** Small calls (64 B echo, `inFlight` at once) alone and during an upload of 64 KiB chunks, `seconds` (at least `count` calls) each. */
function uploadHol(inFlight: number, count: number, warmup: number, seconds: number): PlannedCase {
  return {
    id: `upload-hol-${inFlight}`,
    label: `small calls during an upload: echo 64 B @${inFlight}`,
    unit: 'calls/s',
    spec: {
      kind: 'upload-hol',
      size: 64,
      inFlight,
      count,
      seconds,
      warmup,
      chunkBytes: 64 * KiB,
      leadBytes: MiB,
      maxBytes: 16 * 1024 * MiB,
    },
    variants: UPLOAD_VARIANTS,
  };
}

/**
 * Runs made once per system before round 1 and not recorded: the processes are fresh, and without them round
 * 1 measures cold code paths (JIT, first allocations of big buffers) that later rounds no longer have.
 */
export function priming(quick: boolean, cases: PlannedCase[]): CaseSpec[] {
  const uploads = cases.some((c) => c.spec.kind === 'upload' || c.spec.kind === 'upload-hol');
  return [
    { kind: 'echo', size: 64, inFlight: 64, count: quick ? 2_000 : 5_000, warmup: 0 },
    { kind: 'echo', size: 16 * KiB, inFlight: 64, count: quick ? 500 : 1_000, warmup: 0 },
    // Only when an upload case runs: its paths (sources, streamed input, byte streams, gRPC streaming) warm too.
    ...(uploads ? [{ kind: 'upload' as const, seconds: 0.25, chunkBytes: 64 * KiB, warmupSeconds: 0, calibrationBytes: 32 * MiB }] : []),
  ];
}
