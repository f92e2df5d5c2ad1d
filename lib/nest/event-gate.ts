/**
 * How many event handlers one connection may have running, and what happens past that: the connection stops being
 * read until some return. An event holds no call slot — its stream closes as it arrives, nothing goes back — so
 * without this a peer sending events faster than their handler finishes started every handler at once: each one
 * pending kept its data, its context and Nest's promises alive (an attack with a 1 s handler pinned 145 MiB in 4 s,
 * and the server's CPU went to them: another client fell to 1 % of its calls/s). Backpressure loses nothing: the
 * events wait in the peer's socket, and TCP slows the sender to the handlers' pace. The calls on that connection wait
 * with them (they share its bytes); other connections do not. The session reads on while it has streams of its own
 * open (`holdReading`): a handler calling the peer back waits for answers that come through the same socket.
 *
 * A handler counts from the moment its event is taken (its decoding included: a custom deserializer may be async)
 * until the promise of its handlers settles (an Observable they return runs on, uncounted, as with Nest's own
 * transports). An app's processing start hook decides when handlers run: an event waiting in it holds no place.
 */
export class EventGate {
  readonly #limit: number;
  readonly #resumeAt: number;
  readonly #hold: (hold: boolean) => void;
  #running = 0;
  #held = false;

  /**
   * @param limit - event handlers running at once (`maxEventsPerConnection`)
   * @param hold - stops (true) or resumes (false) reading the connection
   */
  constructor(limit: number, hold: (hold: boolean) => void) {
    this.#limit = limit;
    // Reading resumes once a quarter of the places are free, not at each one: pausing and resuming a socket per event
    // costs two system calls each.
    this.#resumeAt = limit - Math.max(1, Math.floor(limit / 4));
    this.#hold = hold;
  }

  /** Event handlers counted now. */
  get running(): number {
    return this.#running;
  }

  /** An event was taken: it holds a place until {@link leave}. */
  enter(): void {
    if (++this.#running >= this.#limit && !this.#held) {
      this.#held = true;
      this.#hold(true);
    }
  }

  /** An event's handlers settled, or none will run: its place is free. */
  leave(): void {
    if (--this.#running <= this.#resumeAt && this.#held) {
      this.#held = false;
      this.#hold(false);
    }
  }
}
