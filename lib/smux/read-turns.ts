import { performance } from 'node:perf_hooks';
import { setImmediate } from 'node:timers';
import type { FrameDecoder } from './decoder.js';

/**
 * Streams the peer may open in one turn of the event loop; past it, decoding waits for the next turn
 * (`setImmediate`). A 64 KiB read can hold ≈ 650 small one-frame calls or events: opened together, each one's
 * objects (and its handler's pending promises) stayed alive until all were dispatched, survived scavenges and were
 * promoted — a Nest server spent ≈ 30 % of its time in GC at 64 B events, ≈ 9 µs per event; with this limit ≈ 3 µs
 * (docs/NOTES.md, "A burst of streams per read").
 */
export const STREAMS_PER_TURN = 128;
/** While decoding waits for the next turn, the socket is paused once this much waits undecoded (a flood stops here). */
export const YIELD_BUFFER = 64 * 1024;

/**
 * Milliseconds a session's reads may keep the event loop in one turn; a read past it waits for the next turn. libuv
 * reads a readable socket up to 32 times in a row (64 KiB each) before it serves another, and each read's frames and
 * the microtasks they start run before the next: a peer streaming tiny items kept other connections waiting 25 – 96
 * ms (docs/NOTES.md, "A turn's time budget").
 */
export const TURN_BUDGET_MS = 2;

// Turns of the event loop, shared by the sessions of the process: the first read of a turn opens it, its check phase
// (setImmediate) ends it. The real timers and clock, not the global ones a test may fake: this is scheduling, not a
// timeout.
let currentTurn = 0;
let turnOpen = false;
function endTurn(): void {
  turnOpen = false;
}

/** Why a session holds its reading (bits of {@link ReadTurns.hold}): its receive budget is spent. */
export const HELD_BY_BUDGET = 1;
/** Why a session holds its reading: its accept backlog is full (as Go's session stops reading then). */
export const HELD_BY_BACKLOG = 2;
/** Why a session holds its reading: the layer above it asked (`holdReading`: e.g. its event handlers are behind). */
const HELD_BY_LAYER = 4;

/** What {@link ReadTurns} needs of its session. */
export interface ReadTurnsHost {
  readonly decoder: FrameDecoder;
  /** The session's socket (only paused and resumed here). */
  readonly socket: { pause(): unknown; resume(): unknown };
  /** True once the session is closed: reading never resumes. */
  closed(): boolean;
  /** Streams the session opened itself that are registered. */
  ownStreams(): number;
  /** Reading resumed after the session held it: the silence meanwhile was ours (keep-alive must not count it). */
  resumedAfterHold(): void;
}

/**
 * When a session reads. It holds reading while any of its reasons stands (the receive budget, the accept backlog,
 * the layer above):
 * decoder and socket both pause. And it bounds how much it decodes per turn of the event loop: frames of open
 * streams, while its reads of the turn took at most {@link TURN_BUDGET_MS} — then that read, and the socket, wait for
 * the next turn; streams the peer opens, up to {@link STREAMS_PER_TURN} — then decoding waits for the next turn,
 * after the work those streams started. The socket keeps flowing meanwhile until {@link YIELD_BUFFER} waits
 * undecoded (pausing it at every yield cost two syscalls each, ≈ 10 % of a server's CPU per event in a burst); past
 * that it is paused until decoding catches up.
 */
export class ReadTurns {
  readonly #host: ReadTurnsHost;
  #holds = 0; // HELD_BY_* bits
  #layerWants = false; // the layer above asked to stop reading: held while no stream of the session's own is open
  #standingStreams = 0; // streams of our own that stay open (a dialled connection's control stream): they do not count
  #layerRelease = false; // the layer's hold is released on a microtask, not inside the call that let it go
  #toEnd = false; // the session closed on its side and reads until the peer closes: the layer holds nothing more
  #opened = 0; // streams the peer opened since this turn's decoding began
  #yielding = false; // decoding waits for the next turn
  #socketHeld = false; // the socket is paused while YIELD_BUFFER waits undecoded
  #turn = 0; // the turn of the event loop this session's reads are timed in
  #turnStartedAt = 0; // when this session's first read of that turn arrived (performance.now())

  constructor(host: ReadTurnsHost) {
    this.#host = host;
  }

  /** True while the session holds reading, for any reason. */
  get held(): boolean {
    return this.#holds !== 0;
  }

  /** True while the session holds reading for `reason`. */
  isHeld(reason: number): boolean {
    return (this.#holds & reason) !== 0;
  }

  /** Holds reading for `reason` (a `HELD_BY_*` bit): nothing is decoded or read until every reason is released. */
  hold(reason: number): void {
    if (this.#holds === 0) {
      this.#host.decoder.pause();
      this.#host.socket.pause();
    }
    this.#holds |= reason;
  }

  /** Releases `reason`; reading resumes once no reason is left (unless the session is closed). */
  release(reason: number): void {
    if ((this.#holds & reason) === 0) return;
    this.#holds &= ~reason;
    if (this.#holds !== 0 || this.#host.closed()) return;
    this.#host.resumedAfterHold();
    this.#resumed();
  }

  /**
   * The layer above asks to stop reading (true) or lets go (false). Its hold waits while the session has streams of
   * its own open: their answers, and the window updates their writes need, come through the same socket, and the
   * work that holds reading may be waiting on them (a handler calling the peer back) — holding then could deadlock.
   */
  holdForLayer(hold: boolean, standingStreams: number): void {
    if (this.#toEnd) return;
    this.#layerWants = hold;
    this.#standingStreams = standingStreams;
    this.ownStreamsChanged();
  }

  /**
   * The session opened or released a stream of its own: the layer's hold applies again, or waits. A hold applies at
   * once; a release waits for a microtask, so that decoding (and whatever the frames start, e.g. the layer taking more
   * work and holding again) never runs inside the call that let go — a handler's return, a stream being opened.
   */
  ownStreamsChanged(): void {
    if (this.#layerHolds()) this.hold(HELD_BY_LAYER);
    else if ((this.#holds & HELD_BY_LAYER) !== 0 && !this.#layerRelease) {
      this.#layerRelease = true;
      queueMicrotask(() => {
        this.#layerRelease = false;
        if (!this.#layerHolds()) this.release(HELD_BY_LAYER);
      });
    }
  }

  #layerHolds(): boolean {
    return this.#layerWants && this.#host.ownStreams() <= this.#standingStreams;
  }

  /** Reads on whatever held reading (a session closed on its side reads until the peer closes). */
  releaseAll(): void {
    this.#toEnd = true;
    this.#layerWants = false;
    this.#holds = 0;
    if (!this.#yielding) this.#host.decoder.resume();
    this.#host.socket.resume();
  }

  /** A read of `bytes` arrived (before it is decoded). */
  received(bytes: number): void {
    if (!turnOpen) {
      turnOpen = true;
      currentTurn++;
      setImmediate(endTurn);
    }
    if (this.#turn !== currentTurn) {
      this.#turn = currentTurn;
      this.#turnStartedAt = performance.now();
    } else if (!this.#yielding && performance.now() - this.#turnStartedAt > TURN_BUDGET_MS) {
      this.#yield(); // this read is decoded next turn, after the other connections' reads
      this.#holdSocket(true); // and no more is read meanwhile (ends libuv's run of reads on this socket)
      return;
    }
    if (!this.#yielding) this.#opened = 0;
    else if (this.#host.decoder.bufferedBytes + bytes > YIELD_BUFFER) this.#holdSocket(true);
  }

  /** The peer opened a stream (one the session accepted). */
  streamOpened(): void {
    if (++this.#opened === STREAMS_PER_TURN) this.#yield();
  }

  /** The session's holds are over: decoding resumes unless it waits for the next turn, the socket unless that holds it. */
  #resumed(): void {
    const { decoder, socket } = this.#host;
    if (!this.#yielding) decoder.resume();
    if (this.#holds !== 0) return; // what was just decoded held reading again: the socket stays paused
    this.#socketHeld = this.#yielding && decoder.bufferedBytes > YIELD_BUFFER;
    if (!this.#socketHeld) socket.resume();
  }

  #yield(): void {
    this.#yielding = true;
    this.#host.decoder.pause();
    setImmediate(() => {
      this.#yielding = false;
      this.#opened = 0;
      if (!this.#mayRead()) return; // resumed with the session's reading, later
      const decoder = this.#host.decoder;
      decoder.resume(); // may yield again
      this.#holdSocket(this.#yielding && decoder.bufferedBytes > YIELD_BUFFER);
    });
  }

  #holdSocket(hold: boolean): void {
    if (hold === this.#socketHeld) return;
    this.#socketHeld = hold;
    if (hold) this.#host.socket.pause();
    else if (this.#mayRead()) this.#host.socket.resume();
  }

  #mayRead(): boolean {
    return this.#holds === 0 && !this.#host.closed();
  }
}
