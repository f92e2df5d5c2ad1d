import { setImmediate } from 'node:timers';
import { Fifo } from '../util/fifo.js';

/**
 * Items all pulls of the process may take in one turn of the event loop; past it, a pull waits for a later turn
 * (`setImmediate`, after the I/O of every connection). An async generator yields its items on microtasks: a thousand
 * pulled replies at once took turns of 200 – 460 ms, and other connections' calls waited that long (a hostile-peer
 * trial, docs/NOTES.md).
 */
export const PULLS_PER_TURN = 256;

/** The `live` of a pull that did not give one: it is never stopped as far as the turns can tell. */
const always = (): boolean => true;

/**
 * One connection's waiting pulls, oldest first: each one's resolve and its `live()` in two queues that move together
 * (nothing allocated per pull beyond its promise).
 */
class WaitingPulls {
  readonly #resolves = new Fifo<() => void>();
  readonly #lives = new Fifo<() => boolean>();

  /** Pulls waiting, live or stopped. */
  get length(): number {
    return this.#lives.length;
  }

  push(resolve: () => void, live: () => boolean): void {
    this.#resolves.push(resolve);
    this.#lives.push(live);
  }

  /**
   * Lets the oldest pull go on (in a microtask): true if it is live and takes an item, false if it was stopped — it
   * then returns at once and takes nothing.
   */
  release(): boolean {
    const live = (this.#lives.shift() as () => boolean)();
    (this.#resolves.shift() as () => void)();
    return live;
  }

  /** Lets the stopped pulls at the head return; true if a live pull is left (at the head). */
  dropStopped(): boolean {
    for (let live = this.#lives.peek(); live !== undefined; live = this.#lives.peek()) {
      if (live()) return true;
      this.#lives.shift();
      (this.#resolves.shift() as () => void)();
    }
    return false;
  }
}

/**
 * The event loop's share of pulled items (streamed replies and streamed requests from AsyncIterables), divided
 * fairly between connections. In a turn, each connection that pulls may take an equal share of
 * {@link PULLS_PER_TURN} (all of it when it is the only one); a pull past its connection's share, or past the turn's
 * budget, waits in its connection's queue. A new turn first lets each waiting connection's queue through up to the
 * share, the connections that got nothing going first the turn after. Before this, the budget was one free-for-all:
 * a connection with a thousand pulled replies took nearly all of every turn, so another connection's streamed reply
 * got one item in four turns (the same trial's leftover). One connection alone pulls exactly as before.
 *
 * A waiting pull that was stopped (`live()` false: cancelled, or its connection gone) takes no item and no share: a
 * new turn first lets the stopped pulls at the head of each queue return, so a connection left with none waiting
 * leaves the rotation before the share is counted; a stopped pull behind a live one is let go, for free, when the
 * turns reach it. Before, a connection that went away with pulls queued kept its share of a few turns (its pulls
 * returning at once) and the live connections waited (docs/NOTES.md).
 */
class PullTurns {
  /** Items taken in this turn, in all. */
  #total = 0;
  /** Items taken in this turn by each connection that pulled or waited in it: their count is the share's divisor. */
  #takenBy = new Map<object, number>();
  /** Waiting pulls, by connection (only those with some), in the order they are let through next. */
  readonly #waiting = new Map<object, WaitingPulls>();
  #endScheduled = false;

  /**
   * Takes one item of the turn for a pull of `owner` (its connection, or any object standing for it): null when the
   * pull may go on now, else a promise that resolves in a later turn, when there is room for its connection. Once
   * `live()` is false (the pull was stopped), the promise resolves when a turn reaches it and takes nothing: the pull
   * checks `live()` when it resolves.
   */
  admit(owner: object, live: () => boolean = always): Promise<void> | null {
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
      if (queue === undefined) this.#waiting.set(owner, (queue = new WaitingPulls()));
      queue.push(resolve, live);
    });
  }

  /** A new turn: the waiting connections' pulls go first, each connection's up to an equal share. */
  endTurn(): void {
    this.#endScheduled = false;
    this.#total = 0;
    const takenBy = (this.#takenBy = new Map());
    const waiting = this.#waiting;
    // Stopped pulls return before the share is counted: a connection with none live is no longer one of its divisor.
    for (const [owner, queue] of waiting) if (!queue.dropStopped()) waiting.delete(owner);
    if (waiting.size === 0) return;
    const share = Math.ceil(PULLS_PER_TURN / waiting.size);
    const served: object[] = [];
    for (const [owner, queue] of waiting) {
      let n = 0;
      while (n < share && this.#total < PULLS_PER_TURN && queue.length > 0) {
        // The pull goes on in a microtask, after this loop; a stopped one (further back) returns and counts nothing.
        if (queue.release()) {
          n++;
          this.#total++;
        }
      }
      takenBy.set(owner, n);
      if (n > 0 || queue.length === 0) served.push(owner);
    }
    // Who was served moves behind who was not (the budget ran out before them): they go first next turn.
    for (const owner of served) {
      const queue = waiting.get(owner) as WaitingPulls;
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
