import { setImmediate } from 'node:timers';
import { Fifo } from '../util/fifo.js';

/**
 * Items all pulls of the process may take in one turn of the event loop; past it, a pull waits for a later turn
 * (`setImmediate`, after the I/O of every connection). An async generator yields its items on microtasks: a thousand
 * pulled replies at once took turns of 200 – 460 ms, and other connections' calls waited that long (a hostile-peer
 * trial, docs/NOTES.md).
 */
export const PULLS_PER_TURN = 256;

/**
 * The event loop's share of pulled items (streamed replies and streamed requests from AsyncIterables), divided
 * fairly between connections. In a turn, each connection that pulls may take an equal share of
 * {@link PULLS_PER_TURN} (all of it when it is the only one); a pull past its connection's share, or past the turn's
 * budget, waits in its connection's queue. A new turn first lets each waiting connection's queue through up to the
 * share, the connections that got nothing going first the turn after. Before this, the budget was one free-for-all:
 * a connection with a thousand pulled replies took nearly all of every turn, so another connection's streamed reply
 * got one item in four turns (the same trial's leftover). One connection alone pulls exactly as before.
 */
class PullTurns {
  /** Items taken in this turn, in all. */
  #total = 0;
  /** Items taken in this turn by each connection that pulled or waited in it: their count is the share's divisor. */
  #takenBy = new Map<object, number>();
  /** Waiting pulls, by connection (only those with some), in the order they are let through next. */
  readonly #waiting = new Map<object, Fifo<() => void>>();
  #endScheduled = false;

  /**
   * Takes one item of the turn for a pull of `owner` (its connection, or any object standing for it): null when the
   * pull may go on now, else a promise that resolves in a later turn, when there is room for its connection.
   */
  admit(owner: object): Promise<void> | null {
    if (!this.#endScheduled) {
      this.#endScheduled = true;
      setImmediate(endTurn, this);
    }
    const takenBy = this.#takenBy;
    let taken = takenBy.get(owner);
    if (taken === undefined) takenBy.set(owner, (taken = 0));
    // Its own waiting pulls go first (a newcomer would take what they were promised).
    if (this.#total < PULLS_PER_TURN && taken < Math.ceil(PULLS_PER_TURN / takenBy.size) && !this.#waiting.has(owner)) {
      takenBy.set(owner, taken + 1);
      this.#total++;
      return null;
    }
    return new Promise((resolve) => {
      let queue = this.#waiting.get(owner);
      if (queue === undefined) this.#waiting.set(owner, (queue = new Fifo()));
      queue.push(resolve);
    });
  }

  /** A new turn: the waiting connections' pulls go first, each connection's up to an equal share. */
  endTurn(): void {
    this.#endScheduled = false;
    this.#total = 0;
    const takenBy = (this.#takenBy = new Map());
    const waiting = this.#waiting;
    if (waiting.size === 0) return;
    const share = Math.ceil(PULLS_PER_TURN / waiting.size);
    const served: object[] = [];
    for (const [owner, queue] of waiting) {
      let n = 0;
      while (n < share && this.#total < PULLS_PER_TURN && queue.length > 0) {
        (queue.shift() as () => void)(); // the pull goes on in a microtask, after this loop
        n++;
        this.#total++;
      }
      takenBy.set(owner, n);
      if (n > 0) served.push(owner);
    }
    // Who was served moves behind who was not (the budget ran out before them): they go first next turn.
    for (const owner of served) {
      const queue = waiting.get(owner) as Fifo<() => void>;
      waiting.delete(owner);
      if (queue.length > 0) waiting.set(owner, queue);
    }
    if (waiting.size > 0) {
      this.#endScheduled = true;
      setImmediate(endTurn, this);
    }
  }
}

function endTurn(turns: PullTurns): void {
  turns.endTurn();
}

/** The process's one share: every pull of every connection, server and client alike, takes its items from it. */
export const pullTurns = new PullTurns();
