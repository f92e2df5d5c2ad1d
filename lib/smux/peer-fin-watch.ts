import type { Clock, TimerHandle } from './clock.js';
import { SmuxError } from './errors.js';

/** What a {@link PeerFinWatch} reads of its stream, and how it ends it. */
export interface PeerFinWatched {
  readonly id: number;
  /** Bytes waiting to be sent. */
  readonly writableLength: number;
  /** True once the stream is closed or destroyed. */
  readonly isClosed: boolean;
  /** True while the peer's window lets queued bytes go (then the socket, not the peer, holds them back). */
  readonly peerWindowOpen: boolean;
  destroy(error: SmuxError): void;
}

/**
 * The watch behind `peerFinWriteTimeout` (v2): the peer sent FIN while data of ours waits for its window. A peer
 * that closed its end never opens the window again, so the stream would hold its queue for ever. The watch is made
 * only then; progress is the peer's FIN, a UPD, or any check that finds the window open. No progress for the timeout
 * destroys the stream with ERR_SMUX_TIMEOUT. It ends by itself once the queue is empty or the stream closed
 * (`onEnded`: a later write may start a new one).
 */
export class PeerFinWatch {
  readonly #stream: PeerFinWatched;
  readonly #clock: Clock;
  readonly #ms: number;
  readonly #onEnded: () => void;
  #timer: TimerHandle | null;
  #progressAt: number;

  constructor(stream: PeerFinWatched, clock: Clock, ms: number, onEnded: () => void) {
    this.#stream = stream;
    this.#clock = clock;
    this.#ms = ms;
    this.#onEnded = onEnded;
    this.#progressAt = clock.now();
    this.#timer = clock.setTimeout(() => this.#check(), ms);
  }

  /** The peer showed it reads (a UPD). */
  progress(): void {
    this.#progressAt = this.#clock.now();
  }

  /** The stream closed: no more checks. */
  stop(): void {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
  }

  #check(): void {
    this.#timer = null;
    const stream = this.#stream;
    if (stream.isClosed || stream.writableLength === 0) return this.#onEnded();
    const now = this.#clock.now();
    if (stream.peerWindowOpen) this.#progressAt = now; // not the window: the socket
    const waited = now - this.#progressAt;
    if (waited < this.#ms) {
      this.#timer = this.#clock.setTimeout(() => this.#check(), this.#ms - waited);
      return;
    }
    this.#onEnded();
    stream.destroy(
      new SmuxError(
        'ERR_SMUX_TIMEOUT',
        `stream ${stream.id}: the peer sent FIN and opened no window for ${this.#ms} ms (peerFinWriteTimeout); ${stream.writableLength} queued bytes dropped`,
      ),
    );
  }
}
