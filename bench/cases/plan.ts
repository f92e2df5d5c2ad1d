import type { CaseSpec } from './spec.js';

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
 * The cases and their fixed counts. Every system runs the same count in a case; `--quick` runs fewer calls
 * (and fewer rounds, see run.ts) so that the whole benchmark stays under 2 minutes.
 */
export function plan(quick: boolean): PlannedCase[] {
  const q = (full: number, short: number): number => (quick ? short : full);
  const echo = (size: number, inFlight: number, count: number, warmup: number): PlannedCase => ({
    id: `echo-${size}-${inFlight}`,
    label: `echo ${size >= KiB ? `${size / KiB} KiB` : `${size} B`} @${inFlight}`,
    unit: 'calls/s',
    spec: { kind: 'echo', size, inFlight, count, warmup },
  });
  return [
    // At 1 in flight a run measures wake-up latency, which swings with the machine's state: longer runs.
    echo(64, 1, q(10_000, 1_500), q(2_000, 300)),
    echo(64, 64, q(40_000, 12_000), q(10_000, 2_500)),
    echo(64, 512, q(40_000, 12_000), q(10_000, 2_500)),
    echo(16 * KiB, 1, q(3_000, 300), q(500, 100)),
    echo(16 * KiB, 64, q(8_000, 3_000), q(2_000, 500)),
    echo(16 * KiB, 512, q(8_000, 3_000), q(2_000, 1_000)),
    {
      id: 'events-64-64',
      label: 'events 64 B @64',
      unit: 'events/s',
      spec: { kind: 'events', size: 64, inFlight: 64, count: q(40_000, 10_000), warmup: q(10_000, 2_000) },
    },
    {
      id: 'hol',
      label: 'head-of-line: echo 64 B @64 + 64 MiB reply',
      unit: 'calls/s',
      spec: {
        kind: 'hol',
        size: 64,
        inFlight: 64,
        count: q(10_000, 3_000),
        warmup: q(3_000, 1_000),
        items: 1024,
        itemBytes: 64 * KiB,
        maxSmall: 2_000_000,
      },
    },
    { id: 'memory', label: 'memory: 10 000 open calls', unit: 'B/call', spec: { kind: 'memory', calls: 10_000 } },
    // Issue 8 §6: uploads (a streamed request, a byte stream) vs raw TCP and Nest gRPC client streaming.
    {
      id: 'upload',
      label: `upload ${q(256, 64)} MiB in 64 KiB chunks`,
      unit: 'MB/s',
      spec: { kind: 'upload', bytes: q(256, 64) * MiB, chunkBytes: 64 * KiB, warmupBytes: q(16, 8) * MiB },
      variants: UPLOAD_VARIANTS,
    },
    // Small calls during an upload on the same ClientSmux: one at a time (latency), and 64 in flight (load).
    uploadHol(1, q(10_000, 2_000), q(1_000, 500)),
    uploadHol(64, q(20_000, 5_000), q(5_000, 2_000)),
  ];
}

/** Small calls (64 B echo, `inFlight` at once) alone and during an upload of 64 KiB chunks, `count` of each. */
function uploadHol(inFlight: number, count: number, warmup: number): PlannedCase {
  return {
    id: `upload-hol-${inFlight}`,
    label: `small calls during an upload: echo 64 B @${inFlight}`,
    unit: 'calls/s',
    spec: { kind: 'upload-hol', size: 64, inFlight, count, warmup, chunkBytes: 64 * KiB, leadBytes: MiB, maxBytes: 16 * 1024 * MiB },
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
    ...(uploads ? [{ kind: 'upload' as const, bytes: 32 * MiB, chunkBytes: 64 * KiB, warmupBytes: 0 }] : []),
  ];
}
