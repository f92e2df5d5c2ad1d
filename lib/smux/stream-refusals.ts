import type { SmuxConfig } from './config.js';
import { Fifo } from '../util/fifo.js';
import { IdTable } from '../util/id-table.js';

/**
 * Refused stream ids whose FIN waits for the opener's first frame (a Go opener registers its stream only after
 * its SYN is written, so an earlier FIN could be dropped). Past this many the oldest gets its FIN at once.
 */
export const REFUSED_WAITING_MAX = 1024;

/** Where refusals queue their FINs (the session's writer). */
export interface FinQueue {
  queueFin(streamId: number): void;
}

/**
 * The streams a session refuses (past `maxStreams`, or while closing): each at a constant cost and without any
 * stream object — a FIN for its id, once the opener's first frame arrived unless `waitForOpenerData` is off —
 * and the peer that keeps opening past `maxStreams` after `maxRefusedStreams` refusals in a row.
 *
 * The ids waiting for their FIN are an {@link IdTable} with an order queue, not a `Set`: a SYN flood churns
 * them, and a `Set`'s outgrown tables would stay linked until a full GC (id-table.ts).
 */
export class StreamRefusals {
  /** Streams refused so far (the session's stats). */
  count = 0;
  readonly #config: Readonly<SmuxConfig>;
  readonly #fins: FinQueue;
  #inARow = 0; // refusals past maxStreams since a stream was last accepted
  // Refused ids whose FIN waits for the opener's first frame, each with the number of its entry in the queue: an id
  // refused again after its frame came (a peer reusing ids) has a stale entry too, which must not count.
  #waiting: IdTable<number> | null = null;
  #order: Fifo<number> | null = null; // ids, oldest first (stale entries skipped)
  #orderSeq: Fifo<number> | null = null; // each entry's number
  #seq = 0;

  /**
   * @param config - the session's configuration
   * @param fins - where FINs are queued
   */
  constructor(config: Readonly<SmuxConfig>, fins: FinQueue) {
    this.#config = config;
    this.#fins = fins;
  }

  /** A stream was accepted: the run of refusals past `maxStreams` ends. */
  accepted(): void {
    this.#inARow = 0;
  }

  /**
   * The peer opened a stream past `maxStreams`: refuses it, or returns false when this is one more than
   * `maxRefusedStreams` in a row (the session must close).
   */
  refuseOverLimit(streamId: number): boolean {
    if (++this.#inARow > this.#config.maxRefusedStreams) return false;
    this.refuse(streamId);
    return true;
  }

  /** Refuses a stream the peer opened. */
  refuse(streamId: number): void {
    this.count++;
    if (!this.#config.waitForOpenerData) return this.#fins.queueFin(streamId);
    const waiting = (this.#waiting ??= new IdTable<number>());
    const order = (this.#order ??= new Fifo<number>());
    const orderSeq = (this.#orderSeq ??= new Fifo<number>());
    if (waiting.has(streamId)) return; // a duplicate SYN: it keeps its place
    while (waiting.size >= REFUSED_WAITING_MAX) {
      const oldest = order.shift();
      const seq = orderSeq.shift();
      if (oldest === undefined) break; // never: every waiting id has its entry in the queue
      if (waiting.get(oldest) === seq) {
        waiting.delete(oldest);
        this.#fins.queueFin(oldest);
      }
    }
    const seq = ++this.#seq;
    waiting.set(streamId, seq);
    order.push(streamId);
    orderSeq.push(seq);
    // Entries of ids whose first frame came stay in the queue: compact it before they outnumber the waiting ones
    // (after it, the queue holds exactly one entry per waiting id).
    if (order.length > 2 * REFUSED_WAITING_MAX) {
      const ids = order.drain();
      const seqs = orderSeq.drain();
      ids.forEach((id, i) => {
        if (waiting.get(id) !== seqs[i]) return;
        order.push(id);
        orderSeq.push(seqs[i]);
      });
    }
  }

  /** A frame for a stream that is not registered: dropped, but a refused stream's first frame gets its FIN. */
  unknownStream(streamId: number): void {
    if (this.#waiting?.delete(streamId) === true) this.#fins.queueFin(streamId);
  }

  /** The session is gone: nothing waits any more. */
  clear(): void {
    this.#waiting = null;
    this.#order = null;
    this.#orderSeq = null;
  }
}
