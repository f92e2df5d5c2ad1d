import { type Clock, SmuxError } from '../smux/index.js';
import { SlotSet } from '../util/slot-set.js';

/** An endpoint whose queued reply bytes the budget re-reads after the writer's turn. */
export interface ReplyQueue {
  /** Its queued reply bytes, as last charged. */
  readonly replyCharge: number;
  /** Re-reads its queued bytes into the budget. */
  refreshReplyCharge(): void;
  /** Index in the budget's set of endpoints that wrote this turn (owned by {@link ConnectionBudget}). */
  writtenSlot: number;
}

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
 * Reply charges are taken when a reply is queued and re-read once the session's writer had its turn (the bytes a
 * caller reads leave the queue at once): a caller is "behind" when what stays queued after that is half the budget
 * or more. Only then are replies past the budget refused — a burst of up to twice the budget to a caller that reads
 * is not — and a caller that stays behind with replies refused for `replyStallTimeout` is disconnected.
 *
 * The call holding the most (a large reply the caller takes at its stream's pace) is the one refused, not the calls
 * beside it: their replies are admitted while they fit the budget without its bytes, within the burst ceiling of
 * twice the budget — so the ceiling still bounds the connection, and small calls go on while a big reply drains.
 */
export class ConnectionBudget {
  readonly #limits: BudgetLimits;
  readonly #clock: Clock;
  readonly #written = new SlotSet<ReplyQueue>({
    get: (q) => q.writtenSlot,
    set: (q, slot) => {
      q.writtenSlot = slot;
    },
  }); // endpoints that queued replies this turn
  #pending = 0;
  #queued = 0;
  #settled = 0; // what stayed queued after the writer's last turn
  #exhaustedSince = 0; // when a reply was last refused while the caller stayed behind (0: it is not)
  #refreshScheduled = false;
  #largest: ReplyQueue | null = null; // the endpoint holding the most reply bytes, as its charges showed
  #roomWaiters: Array<() => void> | null = null; // feeds holding an item until replies fit again
  #waiting = 0; // encoded items of pulled replies held until they fit (holdWaiting)

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
   * May `endpoint` queue a reply of `bytes`? What fits the budget, always; a burst up to twice the budget while
   * the caller keeps up (less than half the budget stayed queued at the writer's last turn) — within one turn every
   * reply is queued before any is written, even to a caller that reads at once; a single reply when nothing is
   * queued; and, for any call but the one holding the most, what fits the budget beside that call's bytes, within
   * twice the budget.
   */
  admitsReply(endpoint: ReplyQueue, bytes: number): boolean {
    const max = this.#limits.maxQueuedReplyBytes;
    const after = this.#queued + bytes;
    if (after <= max || this.#queued === 0 || (this.#settled < max / 2 && after <= 2 * max)) return true;
    const largest = this.#largest;
    if (largest !== null && largest !== endpoint && after - largest.replyCharge <= max && after <= 2 * max) return true;
    if (this.#exhaustedSince === 0) this.#exhaustedSince = this.#clock.now();
    return false;
  }

  /**
   * `endpoint`'s queue grew or shrank by `delta` (its `replyCharge` is the new size). The largest holder is
   * followed without a scan: an endpoint becomes it by passing its current charge, and stops being it when empty.
   */
  chargeReply(endpoint: ReplyQueue, delta: number): void {
    this.#queued += delta;
    const largest = this.#largest;
    if (endpoint === largest) {
      if (endpoint.replyCharge === 0) this.#largest = null;
    } else if (endpoint.replyCharge > (largest?.replyCharge ?? 0)) this.#largest = endpoint;
  }

  /** `endpoint` queued reply bytes: its charge is re-read once the writer had its turn. */
  written(endpoint: ReplyQueue): void {
    this.#written.add(endpoint);
    if (this.#refreshScheduled) return;
    this.#refreshScheduled = true;
    setImmediate(refreshAfterWrites, this); // after the writer's flush (process.nextTick)
  }

  /** Re-reads the charges of the endpoints that wrote (their queues hold only what the caller did not take). */
  refresh(): void {
    this.#refreshScheduled = false;
    this.#written.forEach((endpoint) => endpoint.refreshReplyCharge());
    this.#written.clear();
    this.settle();
  }

  /** Takes what is queued now as what stayed queued (after a refresh, a drain, the periodic sweep). */
  settle(): void {
    this.#settled = this.#queued;
    if (this.#queued > this.#limits.maxQueuedReplyBytes / 2) return;
    this.#exhaustedSince = 0; // the caller reads again
    const waiters = this.#roomWaiters;
    this.#roomWaiters = null;
    if (waiters !== null) for (const resume of waiters) resume();
  }

  /**
   * Resolves once replies fit again: the caller took enough that at most half the budget stays queued (a feed holds
   * its items meanwhile, where another reply would fail).
   */
  whenRoom(): Promise<void> {
    return new Promise((resolve) => (this.#roomWaiters ??= []).push(resolve));
  }

  /**
   * Counts an encoded item of a pulled reply that waits for room (ServerReply): at most `maxQueuedReplyBytes` of them
   * wait on one connection (one item alone may be larger) — false past it, and the call is refused, as an Observable's
   * value is. Without it a thousand waiting calls held an item each outside the budget. {@link releaseWaiting} ends it.
   */
  holdWaiting(bytes: number): boolean {
    if (this.#waiting > 0 && this.#waiting + bytes > this.#limits.maxQueuedReplyBytes) return false;
    this.#waiting += bytes;
    return true;
  }

  /** An item {@link holdWaiting} counted is queued, or dropped. */
  releaseWaiting(bytes: number): void {
    this.#waiting -= bytes;
  }

  /** How long the caller has left the budget exhausted without reading (0: it has not). */
  stalledFor(): number {
    return this.#exhaustedSince === 0 ? 0 : this.#clock.now() - this.#exhaustedSince;
  }

  /**
   * The error of a reply refused for the budget. Not retryable: the handler ran (a retry would run it again), and
   * the caller is still behind.
   */
  replyRefusal(bytes: number): SmuxError {
    const max = this.#limits.maxQueuedReplyBytes;
    return new SmuxError(
      'ERR_SMUX_LIMIT',
      `the connection has ${this.#queued} bytes of replies queued for the caller; this reply of ${bytes} bytes would pass the ` +
        `server's maxQueuedReplyBytes (${max} bytes; ${2 * max} for a burst to a caller that keeps up): reply with an ` +
        'AsyncIterable (pulled as the caller reads), or raise maxQueuedReplyBytes',
    );
  }
}

function refreshAfterWrites(budget: ConnectionBudget): void {
  budget.refresh();
}
