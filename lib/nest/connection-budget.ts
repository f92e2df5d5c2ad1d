import { type Clock, SmuxError } from '../smux/index.js';

/** The per-connection memory limits of a {@link ConnectionBudget}. */
export interface BudgetLimits {
  /** Bytes of requests still arriving and of streamed input not yet taken by handlers (`maxPendingRequestBytes`). */
  readonly maxPendingRequestBytes: number;
  /** Bytes of replies queued for the caller, every reply kind (`maxQueuedReplyBytes`). */
  readonly maxQueuedReplyBytes: number;
}

/**
 * What one client connection may hold of the server's memory: the bytes it sent that wait to be read (partial
 * messages, streamed items a handler has not taken yet, the window of a stream held paused) and the bytes of
 * replies waiting for it to read. Each call's endpoint charges its share and releases it; a charge that does not
 * fit is refused, and the call fails with `ERR_SMUX_LIMIT` instead of the connection growing.
 *
 * Reply charges are conservative: a call's queued bytes are re-read when it writes, when its queue drains and at
 * each sweep, so between those moments the budget may count bytes already sent (never fewer than are queued).
 */
export class ConnectionBudget {
  readonly #limits: BudgetLimits;
  readonly #clock: Clock;
  #pending = 0;
  #queued = 0;
  #exhaustedSince = 0; // when a reply was last refused for the budget and the queue stayed full (0: it is not)

  constructor(limits: BudgetLimits, clock: Clock) {
    this.#limits = limits;
    this.#clock = clock;
  }

  /** Bytes charged for requests and input. */
  get pendingRequestBytes(): number {
    return this.#pending;
  }

  /** Bytes charged for replies. */
  get queuedReplyBytes(): number {
    return this.#queued;
  }

  /**
   * Charges `delta` bytes of input (negative: releases). @returns the error to fail the call with when the charge
   * does not fit (it is not taken then).
   */
  chargeInput(delta: number): SmuxError | null {
    if (delta > 0 && this.#pending + delta > this.#limits.maxPendingRequestBytes) {
      const limit = this.#limits.maxPendingRequestBytes;
      return new SmuxError(
        'ERR_SMUX_LIMIT',
        `the connection holds ${this.#pending} bytes of requests and streamed input not yet read, and ${delta} more would ` +
          `exceed the server's maxPendingRequestBytes (${limit} bytes)`,
        { retryable: true },
      );
    }
    this.#pending += delta;
    return null;
  }

  /**
   * May a reply of `bytes` be queued? Not when the queue would pass the budget, unless nothing is queued (a single
   * reply larger than the budget still goes to a caller that reads).
   */
  admitsReply(bytes: number): boolean {
    if (this.#queued === 0 || this.#queued + bytes <= this.#limits.maxQueuedReplyBytes) return true;
    if (this.#exhaustedSince === 0) this.#exhaustedSince = this.#clock.now();
    return false;
  }

  /** Adjusts the reply charge by `delta` (a call's queue grew or shrank). */
  chargeReply(delta: number): void {
    this.#queued += delta;
    if (this.#queued <= this.#limits.maxQueuedReplyBytes / 2) this.#exhaustedSince = 0; // the caller reads again
  }

  /** How long the caller has left the budget exhausted without reading (0: it has not). */
  stalledFor(): number {
    return this.#exhaustedSince === 0 ? 0 : this.#clock.now() - this.#exhaustedSince;
  }

  /** The error of a reply refused for the budget. */
  replyRefusal(bytes: number): SmuxError {
    return new SmuxError(
      'ERR_SMUX_LIMIT',
      `the caller has ${this.#queued} bytes of replies queued and not read; this reply of ${bytes} bytes would exceed the ` +
        `server's maxQueuedReplyBytes (${this.#limits.maxQueuedReplyBytes} bytes)`,
      { retryable: true },
    );
  }
}
