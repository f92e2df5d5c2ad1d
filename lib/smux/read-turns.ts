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

/** What {@link ReadTurns} needs of its session. */
export interface ReadTurnsHost {
  readonly decoder: FrameDecoder;
  /** The session's socket (only paused and resumed here). */
  readonly socket: { pause(): unknown; resume(): unknown };
  /** False while the session itself holds reading paused (or is closed): it resumes reading when it may. */
  mayRead(): boolean;
}

/**
 * How much a session decodes per turn of the event loop: frames of open streams, always; streams the peer opens, up
 * to {@link STREAMS_PER_TURN} — then decoding waits for the next turn, after the work those streams started. The
 * socket keeps flowing meanwhile until {@link YIELD_BUFFER} waits undecoded (pausing it at every yield cost two
 * syscalls each, ≈ 10 % of a server's CPU per event in a burst); past that it is paused until decoding catches up.
 */
export class ReadTurns {
  readonly #host: ReadTurnsHost;
  #opened = 0; // streams the peer opened since this turn's decoding began
  #yielding = false; // decoding waits for the next turn
  #socketHeld = false; // the socket is paused while YIELD_BUFFER waits undecoded

  constructor(host: ReadTurnsHost) {
    this.#host = host;
  }

  /** True while decoding waits for the next turn: the session must not resume its decoder itself. */
  get yielding(): boolean {
    return this.#yielding;
  }

  /** A read of `bytes` arrived (before it is decoded). */
  received(bytes: number): void {
    if (!this.#yielding) this.#opened = 0;
    else if (this.#host.decoder.bufferedBytes + bytes > YIELD_BUFFER) this.#holdSocket(true);
  }

  /** The peer opened a stream (one the session accepted). */
  streamOpened(): void {
    if (++this.#opened === STREAMS_PER_TURN) this.#yield();
  }

  /** The session resumes reading (its own pause is over): the socket flows again unless this holds it. */
  resumed(): void {
    const { decoder, socket } = this.#host;
    if (!this.#yielding) decoder.resume();
    this.#socketHeld = this.#yielding && decoder.bufferedBytes > YIELD_BUFFER;
    if (!this.#socketHeld) socket.resume();
  }

  #yield(): void {
    this.#yielding = true;
    this.#host.decoder.pause();
    setImmediate(() => {
      this.#yielding = false;
      this.#opened = 0;
      if (!this.#host.mayRead()) return; // resumed with the session's reading, later
      const decoder = this.#host.decoder;
      decoder.resume(); // may yield again
      this.#holdSocket(this.#yielding && decoder.bufferedBytes > YIELD_BUFFER);
    });
  }

  #holdSocket(hold: boolean): void {
    if (hold === this.#socketHeld) return;
    this.#socketHeld = hold;
    if (hold) this.#host.socket.pause();
    else if (this.#host.mayRead()) this.#host.socket.resume();
  }
}
