import type { Clock, TimerHandle } from './clock.js';

/** What {@link StreamTimeouts} asks of the stream it watches. */
export interface TimeoutOwner {
  /** True while the stream expects data from the peer (no FIN received yet). */
  readonly awaitingData: boolean;
  /** True while the stream has data or a FIN queued that has not reached the socket. */
  readonly writePending: boolean;
  /** Called once when a timeout passes; the owner destroys itself. */
  onIdleTimeout(kind: 'read' | 'write', ms: number): void;
}

/**
 * Idle read and write timeouts of one stream, on an injected clock. A read timeout passes when nothing
 * arrived for `readMs` while the stream awaits data; a write timeout when queued data made no progress
 * toward the socket for `writeMs` (a closed peer window or a peer that stopped reading). One timer at a
 * time, re-armed lazily from the last progress, so progress itself costs only a clock read.
 */
export class StreamTimeouts {
  readonly #clock: Clock;
  readonly #owner: TimeoutOwner;
  #readMs = 0;
  #writeMs = 0;
  #lastRead: number;
  #lastWrite: number;
  #timer: TimerHandle | null = null;
  #timerDue = Infinity;
  #fired = false;

  /**
   * @param clock - time source
   * @param owner - the stream
   */
  constructor(clock: Clock, owner: TimeoutOwner) {
    this.#clock = clock;
    this.#owner = owner;
    this.#lastRead = this.#lastWrite = clock.now();
  }

  /** Sets both timeouts in milliseconds; 0 turns one off. */
  configure(readMs: number, writeMs: number): void {
    this.#readMs = readMs;
    this.#writeMs = writeMs;
    const now = this.#clock.now();
    this.#lastRead = this.#lastWrite = now;
    this.#arm();
  }

  /** Something arrived for the stream. */
  noteRead(): void {
    if (this.#readMs > 0) {
      this.#lastRead = this.#clock.now();
      // The timer may have lapsed while the stream did not await data (paused): start watching again.
      if (this.#timer === null) this.#arm();
    }
  }

  /** Queued bytes reached the socket, or new bytes were queued on an idle stream. */
  noteWrite(): void {
    if (this.#writeMs > 0) {
      this.#lastWrite = this.#clock.now();
      // Progress only moves deadlines later; arm only when no timer would catch this write in time.
      if (this.#timer === null || this.#lastWrite + this.#writeMs < this.#timerDue) this.#arm();
    }
  }

  /** Cancels the timer for good. */
  stop(): void {
    this.#fired = true;
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
  }

  #arm(): void {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
    if (this.#fired) return;
    const now = this.#clock.now();
    let due = Infinity;
    if (this.#readMs > 0 && this.#owner.awaitingData) due = Math.min(due, this.#lastRead + this.#readMs - now);
    if (this.#writeMs > 0 && this.#owner.writePending) due = Math.min(due, this.#lastWrite + this.#writeMs - now);
    if (due === Infinity) return;
    this.#timerDue = now + due;
    this.#timer = this.#clock.setTimeout(() => this.#check(), Math.max(0, due));
  }

  #check(): void {
    this.#timer = null;
    if (this.#fired) return;
    const now = this.#clock.now();
    if (this.#readMs > 0 && this.#owner.awaitingData && now - this.#lastRead >= this.#readMs) {
      this.#fired = true;
      this.#owner.onIdleTimeout('read', this.#readMs);
    } else if (this.#writeMs > 0 && this.#owner.writePending && now - this.#lastWrite >= this.#writeMs) {
      this.#fired = true;
      this.#owner.onIdleTimeout('write', this.#writeMs);
    } else {
      this.#arm();
    }
  }
}
