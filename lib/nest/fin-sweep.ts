import type { Clock, SmuxChannel, TimerHandle } from '../smux/index.js';
import { SlotSet } from '../util/slot-set.js';

/** A call that wrote its last message and FIN, waiting for the caller's FIN. */
export interface AwaitingFin {
  readonly channel: SmuxChannel;
  /** When the sweep stops waiting (owned by {@link FinSweep}). */
  finDue: number;
  /** Our bytes still queued at the last look (owned by {@link FinSweep}); -1 before the first. */
  finQueued: number;
  /** Index in the sweep's set (owned by {@link FinSweep}); -1 when not waiting. */
  finSlot: number;
}

/**
 * After its last message and FIN, a call waits for the caller's FIN at most `finTimeout`; one sweep on the
 * server's clock checks them all (no timer per call), so a Go caller that never calls `Close` cannot leak
 * streams. A call whose own bytes are still draining is not cut off — a slow reader is not a caller that went
 * away. The set has no order (see slot-set.ts for why it is not a `Set`): a sweep looks at every waiting call,
 * so sweeps are at least `finTimeout / 8` apart, and a call is let go at most that much after its due time.
 */
export class FinSweep {
  readonly #clock: Clock;
  readonly #finTimeout: number;
  readonly #calls = new SlotSet<AwaitingFin>({
    get: (call) => call.finSlot,
    set: (call, slot) => {
      call.finSlot = slot;
    },
  });
  #timer: TimerHandle | null = null;

  /**
   * @param clock - the server's clock
   * @param finTimeout - ms to wait for a caller's FIN
   */
  constructor(clock: Clock, finTimeout: number) {
    this.#clock = clock;
    this.#finTimeout = finTimeout;
  }

  /** Starts waiting for `call`'s caller to FIN; `now` is the clock's time (the call's end, read once for all). */
  add(call: AwaitingFin, now: number): void {
    call.finDue = now + this.#finTimeout;
    call.finQueued = -1;
    this.#calls.add(call);
    this.#timer ??= this.#clock.setTimeout(() => this.#sweep(), this.#finTimeout);
  }

  /** The call is over (the caller's FIN came, or it was destroyed). */
  delete(call: AwaitingFin): void {
    this.#calls.delete(call);
  }

  /** Stops sweeping for good (the server closed). */
  stop(): void {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
    this.#calls.clear();
  }

  #sweep(): void {
    this.#timer = null;
    const now = this.#clock.now();
    let nextDue = Infinity;
    for (const call of this.#calls.toArray()) {
      if (!this.#calls.has(call)) continue; // gone while others were destroyed
      if (call.finDue > now) {
        nextDue = Math.min(nextDue, call.finDue);
        continue;
      }
      const queued = call.channel.writableLength;
      if (!call.channel.finSent && queued !== call.finQueued) {
        call.finDue = now + this.#finTimeout; // still draining: look again later
        call.finQueued = queued;
        nextDue = Math.min(nextDue, call.finDue);
      } else {
        this.#calls.delete(call);
        call.channel.destroy();
      }
    }
    // At most 8 sweeps per finTimeout: each looks at every waiting call, and with calls arriving all the time the
    // earliest due is always about now — a caller that never FINs would cost a full scan every millisecond.
    if (nextDue !== Infinity) this.#timer = this.#clock.setTimeout(() => this.#sweep(), Math.max(1, nextDue - now, this.#finTimeout / 8));
  }
}
