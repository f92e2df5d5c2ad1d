import type { Clock } from './clock.js';
import { INITIAL_PEER_WINDOW } from './constants.js';
import type { ReceiveBucket } from './flow-control.js';
import { u32Add, u32After as after } from './flow-control.js';

/*
 * Receive-window auto-tuning (v2, `maxStreamWindow`), after QUIC's and HTTP/2's receive-window tuning.
 *
 * A v2 stream moves at most one window per round trip: with Go's 64 KiB (or the transport's 256 KiB) a single
 * bulk stream is bound by the UPD round trip, not by the socket. The receiver may advertise a larger window in
 * its UPDs — the frame carries it, Go's sender overwrites its `peerWindow` with it — so the remedy is on our
 * side of the wire alone.
 *
 * The rule. Consumption is counted in epochs of at least half the current window. An epoch ends at a UPD; the
 * window doubles (up to `maxStreamWindow`) when the epoch consumed its bytes faster than the window allows per
 * round trip (`elapsed < 4 × fraction × rtt`, QUIC's test, `fraction` = consumed ÷ window) **and** nothing was
 * held unconsumed at its start or its end. The last condition makes growth consumption-driven: every byte of
 * such an epoch arrived during it and was taken at once, so a reader that lets data pile up (a slow reader, or
 * one that drains a backlog in a burst after a pause) never grows its window, however fast the peer sends.
 *
 * The round trip. smux has no ping, so it is measured on the stream: a UPD that raises the limit the peer may
 * send up to goes out at time t; the first byte that arrives beyond the previous limit proves the peer saw
 * that UPD (or a later one), so `now − t` is at least one round trip. It counts only if the peer was waiting —
 * nothing arrived for at least half of it before those bytes — so a peer that sends slower than the window
 * allows (not window-bound) yields no sample, and neither does one that ignores windows (its bytes pass the
 * limit before the UPD). The session keeps the smallest sample: an overestimate
 * would let slow streams grow, an underestimate only stops growth early (at about 4 × the bandwidth-delay
 * product, where a larger window no longer helps).
 *
 * Contention (`contendedStreamWindow`). A window is bytes the peer may put in the socket ahead of every other
 * stream's data: at 512 KiB a bulk reply held small replies on the same connection behind up to 512 KiB, and their
 * p99 doubled. While other streams of the session receive data (a PSH for another stream arrived during the
 * epoch), the window a stream advertises is at most `contendedStreamWindow`, and its UPDs go out every half of it
 * (or of `maxStreamBuffer`, if smaller) consumed so the smaller window still streams. The full window comes back
 * once the stream has consumed a full window with no other stream receiving anything (less is not enough: what
 * the peer sent under the full window before it saw the smaller one may still be arriving, and frames of two
 * streams may come in turns). Shrinking is only what we advertise: bytes the peer sent under a larger window are
 * within the stream's allowance (and any growth stays reserved), so the memory accounting does not change.
 *
 * Memory. Growth is reserved from the session's receive budget (`maxReceiveBuffer`) and only while the budget
 * keeps at least half its capacity, so the receive memory bound is unchanged (README, "Flow control and memory
 * bounds") and at most half the budget is ever lent to grown windows. A grown stream's extra allowance is not
 * charged again for the bytes it covers; it returns to the budget when the stream closes. Growth is never given
 * back while a stream lives (a peer may already have the larger window in flight), also while contention keeps
 * the advertised window smaller.
 */

/** The session's side of auto-tuning: the growth budget, reserved from the receive bucket, and the round-trip estimate. */
export class WindowBudget {
  readonly #bucket: ReceiveBucket;
  /** Tokens the bucket keeps whatever grows: half its capacity. */
  readonly #floor: number;
  readonly #released: () => void;
  #reserved = 0;
  #rtt = 0;
  /** PSH frames the session received, on any stream (counted by the session): the streams' contention signal. */
  dataFrames = 0;

  /**
   * @param bucket - the session's receive bucket (growth is taken from its tokens)
   * @param capacity - `maxReceiveBuffer`
   * @param released - called after growth went back to the bucket (reading may resume)
   */
  constructor(bucket: ReceiveBucket, capacity: number, released: () => void) {
    this.#bucket = bucket;
    this.#floor = Math.ceil(capacity / 2);
    this.#released = released;
  }

  /** Bytes of window granted beyond `maxStreamBuffer`, summed over the open streams. */
  get reserved(): number {
    return this.#reserved;
  }

  /** The smallest round trip measured on the session, in ms; 0 before the first sample. */
  get rtt(): number {
    return this.#rtt;
  }

  /** A round-trip sample (an upper bound of the true round trip: the minimum is kept). */
  noteRtt(ms: number): void {
    if (ms > 0 && (this.#rtt === 0 || ms < this.#rtt)) this.#rtt = ms;
  }

  /** Takes `n` bytes from the bucket for a grown window, if the bucket keeps its floor afterwards. */
  reserve(n: number): boolean {
    if (this.#bucket.tokens - n < this.#floor) return false;
    this.#bucket.tokens -= n;
    this.#reserved += n;
    return true;
  }

  /** Gives back what a closing stream's window had grown by. */
  release(n: number): void {
    if (n === 0) return;
    this.#bucket.tokens += n;
    this.#reserved -= n;
    this.#released();
  }
}

/**
 * One v2 stream's auto-tuning state. Made when the stream sends its second UPD (half a base window consumed),
 * so short streams — most calls — never carry one.
 */
export class StreamWindowTuner {
  /** The window this stream advertises in its UPDs. */
  window: number;
  /** The window without contention: `maxStreamBuffer` plus {@link grown}. */
  #full: number;
  /** Of {@link #full}, the bytes beyond `maxStreamBuffer` (reserved from the budget). */
  grown = 0;
  readonly #budget: WindowBudget;
  readonly #base: number;
  readonly #max: number;
  readonly #contended: number; // 0: no limit
  #ownFrames = 0; // PSH frames this stream received
  #epochFrames: number; // the session's dataFrames when the epoch started
  #epochOwnFrames = 0;
  #quietRead = 0; // bytes consumed since another stream last received data
  #received: number; // u32: bytes received on the stream (consumed + held)
  #limit: number; // u32: the furthest the peer may have been allowed to send before our latest UPD
  #probeLimit = 0; // u32: the limit before the UPD being timed
  #probeAt = -1; // when that UPD went out; -1: no probe running
  #lastArrival = 0; // while probing: when the previous payload arrived
  #epochAt: number;
  #epochRead: number; // u32: numRead when the epoch started
  #epochClean: boolean; // nothing was held when the epoch started

  /**
   * @param budget - the session's {@link WindowBudget}
   * @param base - `maxStreamBuffer`
   * @param max - `maxStreamWindow` (at most `base`: no growth)
   * @param contended - `contendedStreamWindow` (0: no limit)
   * @param numRead - bytes the stream consumed so far (u32)
   * @param held - bytes received and not consumed
   * @param now - the clock's time
   */
  constructor(budget: WindowBudget, base: number, max: number, contended: number, numRead: number, held: number, now: number) {
    this.#budget = budget;
    this.window = this.#full = this.#base = base;
    this.#max = Math.max(base, max);
    this.#contended = contended;
    this.#epochFrames = budget.dataFrames;
    this.#received = u32Add(numRead, held);
    // Unknown before now (the tuner is new): the peer's initial assumption or our last UPD, whichever is
    // larger — the next advertisement sets it, and no probe runs until then.
    this.#limit = numRead + base < INITIAL_PEER_WINDOW ? INITIAL_PEER_WINDOW : u32Add(numRead, base);
    this.#probeAt = -2; // -2: not timing the first advertisement, whose previous limit is only estimated
    this.#epochAt = now;
    this.#epochRead = numRead;
    this.#epochClean = held === 0;
  }

  /**
   * Payload arrived for the stream (data that is dropped is not counted). Completes the running probe when it
   * passes the limit the timed UPD raised.
   */
  received(n: number, clock: Clock): void {
    this.#ownFrames++;
    this.#received = u32Add(this.#received, n);
    if (this.#probeAt < 0) return;
    const now = clock.now();
    if (after(this.#received, this.#probeLimit)) {
      // Only a peer that was waiting for the UPD measures a round trip: nothing arrived for at least half of it
      // before the bytes it allowed. A peer sending slower than the window allows keeps arriving all along, and
      // its "round trip" would be the time it takes to send half a window — too long, and growth would follow.
      const sample = now - this.#probeAt;
      if (now - this.#lastArrival >= sample / 2) this.#budget.noteRtt(sample);
      this.#probeAt = -1;
    }
    this.#lastArrival = now;
  }

  /** Bytes consumed between UPDs: half of `maxStreamBuffer` (Go's cadence), or of a smaller contended window. */
  get updateEvery(): number {
    return Math.min(this.window, this.#base);
  }

  /**
   * A UPD is about to be queued after consuming up to `numRead`: the end of an epoch if it consumed half the
   * window; then the window for the next one — limited while other streams receive data, restored after a full
   * window consumed with none receiving, or grown.
   */
  updateDue(numRead: number, held: number, now: number): void {
    const read = (numRead - this.#epochRead) >>> 0;
    if (read < this.window / 2) return;
    const othersReceived = this.#budget.dataFrames - this.#epochFrames > this.#ownFrames - this.#epochOwnFrames;
    this.#quietRead = othersReceived ? 0 : this.#quietRead + read;
    if (this.#contended > 0 && othersReceived) this.window = Math.min(this.#full, this.#contended);
    else if (this.window < this.#full) {
      if (this.#quietRead >= this.#full) this.window = this.#full;
    } else {
      const rtt = this.#budget.rtt;
      if (this.#epochClean && held === 0 && rtt > 0 && now - this.#epochAt < (4 * read * rtt) / this.window) this.#grow();
    }
    this.#epochAt = now;
    this.#epochRead = numRead;
    this.#epochClean = held === 0;
    this.#epochFrames = this.#budget.dataFrames;
    this.#epochOwnFrames = this.#ownFrames;
  }

  /**
   * The writer encodes a UPD carrying `numRead` and the returned window: record the limit it gives the peer and
   * time it, unless a probe is running already or the peer is past the previous limit (it ignores windows).
   */
  advertise(numRead: number, clock: Clock): number {
    const limit = u32Add(numRead, this.window);
    if (this.#probeAt === -1 && !after(this.#received, this.#limit) && after(limit, this.#limit)) {
      this.#probeAt = clock.now();
      this.#lastArrival = this.#probeAt;
      this.#probeLimit = this.#limit;
    } else if (this.#probeAt === -2) {
      this.#probeAt = -1; // the first advertisement of a new tuner only sets the limit
    }
    if (after(limit, this.#limit)) this.#limit = limit;
    return this.window;
  }

  /** The stream closed: its growth goes back to the session budget. */
  release(): void {
    this.#budget.release(this.grown);
    this.grown = 0;
  }

  #grow(): void {
    const next = Math.min(this.#full * 2, this.#max);
    const more = next - this.#full;
    if (more <= 0 || !this.#budget.reserve(more)) return;
    this.window = this.#full = next;
    this.grown += more;
  }
}
