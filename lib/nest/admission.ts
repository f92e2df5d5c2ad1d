import { Fifo } from '../util/fifo.js';
import { callAdmission as stateOf, launchCall, type PendingCall, setCallAdmission as setState } from './client-call.js';

/**
 * One connection's share of the calls, as admission counts it: the client's pool keeps one per address and
 * connection index, and bounds each by what its server allows (its hello's `maxCallsPerConnection`).
 */
export interface CallLane {
  /** Calls whose stream is open on this connection (from {@link Admission.place} until they settle). */
  callsInFlight: number;
  /** The most calls the server runs at once on this connection (Infinity when its hello did not say). */
  readonly maxCalls: number;
}

/**
 * `none`: not admitted yet or gone; `queued`: waiting for a slot; `running`: holds a slot, no stream yet (waiting
 * for a connection); a {@link CallLane}: holds a slot, and its stream is open on that connection. The lane is kept
 * in the call itself (a private field, which admission reaches through the call's accessors) so that a settling call
 * frees its connection's share without a lookup or an allocation.
 */
export type AdmissionState = 'none' | 'queued' | 'running' | CallLane;

/**
 * Bounded concurrency with a bounded wait queue: at most `maxConcurrent` calls hold a slot (from launch until
 * they settle, waiting for a connection included); up to `maxQueued` more wait for one, first come first served.
 * smux cannot tell a client the server's limit, so the client keeps its own (and the server's HELLO may lower it).
 */
export class Admission {
  #maxConcurrent: number;
  readonly #maxQueued: number;
  readonly #queue = new Fifo<PendingCall>();
  #running = 0;
  #queued = 0; // calls still waiting (the FIFO may also hold ones that left while waiting)
  #pumping = false;

  /**
   * @param maxConcurrent - slots
   * @param maxQueued - places in the queue (0: none)
   */
  constructor(maxConcurrent: number, maxQueued: number) {
    this.#maxConcurrent = maxConcurrent;
    this.#maxQueued = maxQueued;
  }

  /** Calls holding a slot. */
  get running(): number {
    return this.#running;
  }

  /** Calls waiting for a slot. */
  get queued(): number {
    return this.#queued;
  }

  /** Lowers the number of slots (never below 1), e.g. to the server's `maxCallsPerConnection`. */
  limit(maxConcurrent: number): void {
    this.#maxConcurrent = Math.max(1, maxConcurrent);
  }

  /**
   * Launches `call` at once if a slot is free, queues it otherwise.
   * @returns false when the queue is full too (the caller fails the call with ERR_SMUX_LIMIT)
   */
  admit(call: PendingCall): boolean {
    if (this.#running < this.#maxConcurrent) {
      this.#running++;
      setState(call, 'running');
      launchCall(call); // the call took its slot: connect it, open its stream
      return true;
    }
    if (this.#queued >= this.#maxQueued) return false;
    this.#queued++;
    setState(call, 'queued');
    this.#queue.push(call);
    return true;
  }

  /** A running call's stream opened on `lane`: it counts there until it settles. */
  place(call: PendingCall, lane: CallLane): void {
    if (stateOf(call) !== 'running') return;
    setState(call, lane);
    lane.callsInFlight++;
  }

  /** `call` is over (answered, failed, cancelled — running or still queued): its slot or place is free. */
  release(call: PendingCall): void {
    const state = stateOf(call);
    if (state === 'queued')
      this.#queued--; // its FIFO entry is skipped when reached
    else if (state !== 'none') {
      this.#running--;
      if (state !== 'running') state.callsInFlight--;
    }
    setState(call, 'none');
    // A launched call may settle at once (no connection: fail fast) and release again: one loop takes them all,
    // instead of a recursion as deep as the queue.
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#running < this.#maxConcurrent && this.#queued > 0) {
        const next = this.#queue.shift()!;
        if (stateOf(next) !== 'queued') continue;
        this.#queued--;
        this.#running++;
        setState(next, 'running');
        launchCall(next);
      }
    } finally {
      this.#pumping = false;
    }
  }

  /** Takes every queued call out (the client is closing); they must be failed by the caller. */
  drain(): PendingCall[] {
    const calls = this.#queue.drain().filter((call) => stateOf(call) === 'queued');
    for (const call of calls) setState(call, 'none');
    this.#queued = 0;
    return calls;
  }
}
