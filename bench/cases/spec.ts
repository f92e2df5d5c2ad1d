import type { ChunkOptions } from '../lib/chunks.js';

/**
 * What the orchestrator asks a system's client agent to run (one `RUN <json>` line), what a run reports, and
 * the client face every Node system implements for the agent.
 */

/**
 * Echo request/response: `count` calls of a `size`-byte string, `inFlight` at once, after `warmup` calls (and
 * more than `count` until the measured calls have taken `minMs`, where the system's client can: a Node agent).
 * The orchestrator sets `count` and `warmup` per system from a calibration run (see cases/sizing.ts).
 */
export interface EchoSpec {
  kind: 'echo';
  size: number;
  inFlight: number;
  count: number;
  warmup: number;
  minMs?: number;
}

/** Events: `count` emits (or more, until `minMs`) of `size` bytes with `inFlight` outstanding; the server confirms how many arrived. */
export interface EventsSpec {
  kind: 'events';
  size: number;
  inFlight: number;
  count: number;
  warmup: number;
  minMs?: number;
}

/**
 * Head-of-line: p99 of small echo calls (`inFlight` at once) for `seconds` (at least `count` calls) without, then
 * while calls on the same connection stream `items` × `itemBytes` back, one big reply after another until
 * `seconds` have passed (small calls keep going until the last one ends, at most `maxSmall`).
 */
export interface HolSpec {
  kind: 'hol';
  size: number;
  inFlight: number;
  count: number;
  /** Seconds each phase measures, at least (issue 11: runs sized by time). */
  seconds: number;
  warmup: number;
  items: number;
  itemBytes: number;
  maxSmall: number;
}

/**
 * The kinds of call the memory case holds open: a unary call (its reply held back), a client stream (`send(pattern,
 * source)` whose source stays open), a bidirectional call (streamed request and Observable reply, both open) and a
 * byte stream (`openDuplex()` ↔ `ctx.getDuplex()`, both sides open).
 */
export type HeldCall = 'unary' | 'stream' | 'bidi' | 'duplex';

/** Memory: `calls` calls of one kind held open by the server's handler at once; the server measures its heap and RSS. */
export interface MemorySpec {
  kind: 'memory';
  calls: number;
  /** The kind of call held open (default `unary`). */
  call?: HeldCall;
}

/**
 * Upload: client to server in `chunkBytes` chunks, `seconds` of bytes at the variant's calibrated rate (issue 11:
 * sized by time; the agent's first run of a variant uploads `calibrationBytes` to learn it), through each of the
 * system's upload variants (nestjs-smux: a streamed request and a byte stream), after a `warmupSeconds` upload of
 * each (0: none); MB/s until the server confirmed the byte count.
 */
export interface UploadSpec {
  kind: 'upload';
  seconds: number;
  chunkBytes: number;
  warmupSeconds: number;
  calibrationBytes: number;
}

/**
 * Small calls during an upload: for each upload variant, `warmup` unmeasured small echo calls (`size` bytes,
 * `inFlight` at once), p99 of `count` of them alone, then of `count` while an upload runs on the same client (the
 * same connection). The upload starts first (the small calls once it has handed out `leadBytes`) and runs until
 * the last small call is done (at most `maxBytes`).
 */
export interface UploadHolSpec {
  kind: 'upload-hol';
  size: number;
  inFlight: number;
  /** Small calls per phase, at least; each phase lasts `seconds` at least (issue 11: runs sized by time). */
  count: number;
  seconds: number;
  warmup: number;
  chunkBytes: number;
  leadBytes: number;
  maxBytes: number;
}

export type CaseSpec = EchoSpec | EventsSpec | HolSpec | MemorySpec | UploadSpec | UploadHolSpec;

/** A run's figures: `rate` is the case's throughput (per second); latencies are in ms. */
export interface RunResult {
  stalled: boolean;
  rate?: number;
  p50?: number;
  p99?: number;
  errors?: number;
  firstError?: string;
  /** Server peak RSS during the run, in bytes. */
  peakRss?: number;
  [figure: string]: unknown;
}

/** Completion callback of one call: an error, or nothing. */
export type Done = (error?: unknown) => void;

/** The client side of a system, as the cases drive it. Optional faces are the cases a system takes part in. */
export interface Driver {
  /** Connects (and makes one call), so that measured calls never include the connection set-up. */
  connect(): Promise<void>;
  /** One echo call of `payload`; `done(error)` when the reply differs from it. */
  echo(payload: string, done: Done): void;
  /** One event (`emit`), done when the client considers it sent. */
  emit?(payload: string, done: Done): void;
  /** Asks the server (in band, as a call) how many events it has received, waiting up to 3 s for `atLeast`. */
  eventsReceived?(atLeast: number): Promise<number>;
  /** The big Observable reply: `onItem(bytes)` per value, then `done`. */
  big?(items: number, itemBytes: number, onItem: (bytes: number) => void, done: Done): void;
  /** The ways this system uploads bytes (nestjs-smux: `stream`, `duplex`); the first one is its `rate`. */
  readonly uploadVariants?: readonly string[];
  /**
   * One upload of `chunks.bytes` in `chunks.chunkBytes` chunks (or fewer: `chunks.stop()` ends it early) through
   * `variant`, with `chunks.onChunk(bytes)` each time the source hands a chunk out; resolves with the byte count
   * the server says it received.
   */
  upload?(variant: string, chunks: ChunkOptions): Promise<number>;
  /** The kinds of call this system can hold open in the memory case (nestjs-smux: all of them; others: `unary`). */
  readonly heldCalls?: readonly HeldCall[];
  /**
   * Memory case: arms the server (baseline after GC) for `calls` held calls of kind `call`; resolves once armed.
   * The streamed kinds are released by this side, when the server says it has measured.
   */
  holdBegin?(calls: number, call: HeldCall): Promise<void>;
  /** One held call: done when it is over (the server released it, or this side did, after the measurement). */
  hold?(call: HeldCall, done: Done): void;
  /** Calls of the current hold that the server has been seen to serve (streamed kinds: items pulled from their source). */
  holdProgress?(): number;
  /** The server's measurement of the held calls, and of what was left once they were released. */
  holdReport?(): Promise<Record<string, number>>;
  close(): Promise<void>;
}
