import { INITIAL_PEER_WINDOW } from './constants.js';

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
 * ignores windows is still bounded by the bucket. Memory bound of the receive side, per session:
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
