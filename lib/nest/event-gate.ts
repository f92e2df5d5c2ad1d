/**
 * How many event handlers one connection may have running, and how many bytes of events they may hold, and what
 * happens past either: the connection stops being read until some return. An event holds no call slot — its stream
 * closes as it arrives, nothing goes back — so without this a peer sending events faster than their handler finishes
 * started every handler at once: each one pending kept its data, its context and Nest's promises alive (an attack with
 * a 1 s handler pinned 145 MiB in 4 s, and the server's CPU went to them: another client fell to 1 % of its calls/s).
 * Backpressure loses nothing: the events wait in the peer's socket, and TCP slows the sender to the handlers' pace (a
 * close of the connection drops what still waits there, unread — events are at most once; the server's close says so).
 * The calls on that connection wait with them (they share its bytes); other connections do not. The session reads on
 * while it has streams of its own open (`holdReading`): a handler calling the peer back waits for answers that come
 * through the same socket.
 *
 * A handler counts from the moment its event is taken (its decoding included: a custom deserializer may be async)
 * until the promise of its handlers settles, or until the Observable they return (run hot, as Nest's own transports
 * run it) completes or errors. An app's processing start hook decides when handlers run: an event waiting in it holds no place.
 */
export class EventGate {
  readonly #limit: number;
  readonly #resumeAt: number;
  readonly #maxBytes: number;
  readonly #resumeAtBytes: number;
  readonly #hold: (hold: boolean) => void;
  #running = 0;
  #bytes = 0;
  #held = false;

  /**
   * @param limit - event handlers running at once (`maxEventsPerConnection`)
   * @param maxBytes - bytes of events their running handlers may hold (`maxPendingRequestBytes`): one more event
   *   may pass it, never two
   * @param hold - stops (true) or resumes (false) reading the connection
   */
  constructor(limit: number, maxBytes: number, hold: (hold: boolean) => void) {
    this.#limit = limit;
    this.#maxBytes = maxBytes;
    // Reading resumes once a quarter is free again, not at each place: pausing and resuming a socket per event costs
    // two system calls each.
    this.#resumeAt = limit - Math.max(1, Math.floor(limit / 4));
    this.#resumeAtBytes = Math.floor((maxBytes * 3) / 4);
    this.#hold = hold;
  }

  /** Event handlers counted now. */
  get running(): number {
    return this.#running;
  }

  /** Bytes of the events counted now. */
  get bytes(): number {
    return this.#bytes;
  }

  /** True while the gate holds the connection's reading (past either limit, until enough handlers returned). */
  get held(): boolean {
    return this.#held;
  }

  /** An event of `bytes` was taken: it holds a place and its bytes until {@link leave}. */
  enter(bytes: number): void {
    this.#running++;
    this.#bytes += bytes;
    if (!this.#held && (this.#running >= this.#limit || this.#bytes >= this.#maxBytes)) {
      this.#held = true;
      this.#hold(true);
    }
  }

  /** An event's handlers settled, or none will run: its place and its `bytes` are free. */
  leave(bytes: number): void {
    this.#running--;
    this.#bytes -= bytes;
    if (this.#held && this.#running <= this.#resumeAt && this.#bytes <= this.#resumeAtBytes) {
      this.#held = false;
      this.#hold(false);
    }
  }
}
