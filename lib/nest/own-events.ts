import type { SmuxError } from '../smux/index.js';
import type { EventLedger, EventSend } from './event-send.js';

/**
 * The events a server emitted itself over one connection (`connection.emit()`) that have not settled: its close waits
 * for them within `closeTimeout`, as for its own calls, then fails those still unsent with `ERR_SMUX_SHUTTING_DOWN`
 * (found by a new-user trial: they were left to the connection's close, bounded at 2 s, and dropped uncounted).
 */
export class OwnEvents implements EventLedger {
  // Counted from the emit, not from the stream's opening a microtask later: a close begun meanwhile waits for it too.
  #unsettled = 0;
  readonly #open = new Set<EventSend>(); // their streams, while open: what a close out of time fails
  readonly #settled: () => void;

  /** @param settled - called as each event settles (a close waiting for them looks again) */
  constructor(settled: () => void) {
    this.#settled = settled;
  }

  /** Events emitted and not settled yet (sent, or failed). */
  get inFlight(): number {
    return this.#unsettled;
  }

  /** Counts `sending` (an event's promise) until it settles. @returns `sending` */
  track<T>(sending: Promise<T>): Promise<T> {
    this.#unsettled++;
    sending.then(this.#done, this.#done); // the caller's own handlers see the rejection; this one only counts
    return sending;
  }

  opened(event: EventSend): void {
    this.#open.add(event);
  }

  closed(event: EventSend): void {
    this.#open.delete(event);
  }

  /** Fails every event whose stream is open with `error` ({@link EventSend.fail}). @returns how many had not gone out */
  failAll(error: SmuxError): number {
    let unsent = 0;
    for (const event of [...this.#open]) if (event.fail(error)) unsent++;
    return unsent;
  }

  readonly #done = (): void => {
    this.#unsettled--;
    this.#settled();
  };
}
