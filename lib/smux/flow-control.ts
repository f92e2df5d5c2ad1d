import { INITIAL_PEER_WINDOW } from './constants.js';
import { SmuxError } from './errors.js';

/*
 * Flow control, as Go smux does it (PROTOCOL.md §5), plus the one change that lets a v2 stream nobody
 * reads stop only itself.
 *
 * Session level (v1 and v2): a token bucket of `maxReceiveBuffer` bytes. Received bytes the application has
 * not consumed are charged to it; reading from the socket pauses while it is exhausted (≤ 0), which pushes
 * back on the peer through TCP. In v1 that is the only limit, so one unread stream stalls the session — the
 * same head-of-line blocking as Go.
 *
 * v2 adds per-stream windows. The receiver sends UPD{consumed, window} on its first read and after every
 * `window / 2` bytes consumed; the sender keeps `numWritten - peerConsumed` below the peer's window. A
 * compliant sender therefore never has more than max(its initial assumption 256 KiB, our window) bytes
 * unconsumed on a stream. We charge the bucket only for bytes *beyond* that allowance: a stalled stream
 * whose peer respects windows holds its allowance and never drains the bucket others need, and a peer that
 * ignores windows is still bounded by the bucket — and, since a peer within its windows never spends the bucket in v2,
 * a spent bucket ends the session with `ERR_SMUX_PROTOCOL` rather than pausing it (session.ts `#windowOverrun`).
 * Memory bound of the receive side, per session:
 *
 *     v1:  maxReceiveBuffer (+ one frame, 64 KiB, of overshoot)
 *     v2:  streams × max(256 KiB, maxStreamBuffer) + maxReceiveBuffer (+ one frame), where streams ≤ 2 × maxStreams
 *          (the peer's and our own, each bounded by it; refused streams hold nothing)
 *
 * Auto-tuned windows (`maxStreamWindow`, window-tuner.ts) do not change the v2 bound: what a window grows by is
 * reserved from the bucket first (at most half of it), and the grown stream's bytes within it are not charged.
 *
 * (A SmuxStream also holds up to `streamHighWaterMark` consumed-but-unread bytes in its readable buffer.)
 */

/** `(a + b) mod 2^32`. Window counters are uint32 and wrap (Go `uint32` arithmetic). */
export function u32Add(a: number, b: number): number {
  return (a + b) >>> 0;
}

/** `a` is after `b` in uint32 sequence space: their difference, as an int32, is positive (Go's counters wrap). */
export function u32After(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

/**
 * The furthest a v2 peer may send on a stream once it has our UPD `{consumed: numRead, window}`: the new grant
 * if it is further than `granted`, else `granted` (a UPD that advertises a smaller window — a contended stream's,
 * window-tuner.ts — does not take back what the peer may already have sent under the larger one).
 *
 * `previousWindow` is the window of our previous UPD (the peer's initial guess, {@link INITIAL_PEER_WINDOW},
 * before the first): Go's writer loads `peerConsumed` and `peerWindow` separately while the reader goroutine
 * stores them one after the other (`stream.go` writeV2 / `update`), so it may combine this UPD's `consumed` with
 * the previous window, and after a smaller window that sends up to `numRead + previousWindow`.
 *
 * @param granted - the furthest granted so far (u32, in the stream's byte count)
 * @param numRead - the UPD's `consumed` (u32)
 * @param window - the UPD's window, in bytes
 * @param previousWindow - the window of the previous UPD, in bytes
 * @returns the furthest the peer may now send (u32)
 */
export function extendGrant(granted: number, numRead: number, window: number, previousWindow: number): number {
  const limit = u32Add(numRead, window > previousWindow ? window : previousWindow);
  return u32After(limit, granted) ? limit : granted;
}

/**
 * The error that ends a v2 session whose receive budget a peer spent by ignoring a stream's window
 * (`ERR_SMUX_PROTOCOL`: the same code as any other frame smux forbids).
 *
 * @param streamId - the stream that went furthest past its grant
 * @param received - bytes received on it, modulo 2^32
 * @param granted - the furthest its windows allowed ({@link extendGrant}), modulo 2^32
 * @param budget - `maxReceiveBuffer`, in bytes
 */
export function windowOverrunError(streamId: number, received: number, granted: number, budget: number): SmuxError {
  const over = (received - granted) | 0;
  const wrapped = received < granted ? ', counted modulo 2^32' : '';
  return new SmuxError(
    'ERR_SMUX_PROTOCOL',
    `the peer ignored the window of stream ${streamId}: it sent ${received} bytes, ${over} past the ${granted} granted${wrapped}, ` +
      `and spent the session's receive budget (maxReceiveBuffer ${budget} bytes)`,
  );
}

/**
 * Bytes a v2 sender may still send: `int32(peerWindow) - int32(numWritten - peerConsumed)`, all modulo 2^32 as
 * in Go (`stream.go` writeV2). The signed difference stays correct across a wrap while fewer than 2^31 bytes
 * are in flight.
 *
 * @returns the remaining window (≤ 0 means wait for a UPD), or `NaN` when the peer claims to have consumed
 *   more than was sent (Go's `ErrConsumed`)
 */
export function sendWindow(numWritten: number, peerConsumed: number, peerWindow: number): number {
  const inflight = (numWritten - peerConsumed) | 0;
  if (inflight < 0) return Number.NaN;
  return (peerWindow | 0) - inflight;
}

/**
 * Whether a v2 receiver sends a UPD after consuming `n` bytes (Go `stream.go` tryReadV2): on the first read
 * (`numRead === n`, which also holds right after a 2^32 wrap) or once `pending` bytes since the last UPD reach
 * half the window.
 *
 * @param numRead - total consumed so far, after adding `n`, modulo 2^32
 * @param n - bytes just consumed
 * @param pending - bytes consumed since the last UPD, including `n`
 * @param window - the window UPDs are paced by: `maxStreamBuffer`, or a smaller contended window (window-tuner.ts)
 */
export function shouldSendUpdate(numRead: number, n: number, pending: number, window: number): boolean {
  return numRead === n || pending >= Math.floor(window / 2); // Go: uint32(MaxStreamBuffer/2), integer division
}

/**
 * The per-stream receive allowance of a v2 session: what a compliant peer can have in flight on one stream
 * (its initial guess of our window, or our real window once it has seen a UPD, whichever is larger).
 * Version 1 has no windows, so everything is charged to the bucket.
 */
export function streamAllowance(version: 1 | 2, maxStreamBuffer: number): number {
  return version === 2 ? Math.max(INITIAL_PEER_WINDOW, maxStreamBuffer) : 0;
}

/** The session's receive token bucket, in bytes. */
export class ReceiveBucket {
  /** Tokens left; may go below zero by at most one frame (Go checks before each header, not per byte). */
  tokens: number;
  #allowance: number;

  /**
   * @param capacity - `maxReceiveBuffer`
   * @param allowance - bytes per stream not charged to the bucket ({@link streamAllowance})
   */
  constructor(capacity: number, allowance: number) {
    this.tokens = capacity;
    this.#allowance = allowance;
  }

  /** Sets the per-stream allowance (once a detecting server knows the protocol version). */
  setAllowance(allowance: number): void {
    this.#allowance = allowance;
  }

  /** True while reading must pause. */
  get exhausted(): boolean {
    return this.tokens <= 0;
  }

  /**
   * Records a change of a stream's unconsumed byte count and charges or refunds the bucket for the part
   * beyond the stream's allowance.
   *
   * @param before - the stream's unconsumed bytes before the change
   * @param after - the stream's unconsumed bytes after it
   * @param grown - what auto-tuning added to the stream's window: already reserved from the bucket, so not
   *   charged again
   */
  update(before: number, after: number, grown = 0): void {
    const allowance = this.#allowance + grown;
    const chargedBefore = before > allowance ? before - allowance : 0;
    const chargedAfter = after > allowance ? after - allowance : 0;
    this.tokens -= chargedAfter - chargedBefore;
  }
}
