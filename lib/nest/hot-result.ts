import { Observable, type Subscriber } from 'rxjs';

/*
 * The Observable `emit()` returns, one state machine:
 *
 *   PENDING ──the dispatch resolved──▶ DONE   (subscribers then get the value and completion)
 *      └─────the dispatch rejected───▶ FAILED (subscribers then get the error)
 *
 * A subscriber that comes after DONE gets only the completion, one after FAILED the error — what Nest's
 * `connectable(defer(dispatch), { connector: () => new Subject() })` gives, since a completed Subject replays no value.
 */
const PENDING = 0;
const DONE = 1;
const FAILED = 2;

/**
 * The result of a dispatch that starts at once, whether or not anyone subscribes (Nest's `emit()` is hot). It
 * replaces Nest's `connectable` + `defer` + `Subject` + `from(promise)`: ≈ 2 KB of rxjs objects per event, measured
 * with a sampling heap profile (docs/NOTES.md), for one value that most callers never read.
 */
export class HotResult<T> extends Observable<T> {
  #state = PENDING;
  #value: unknown = undefined; // the value, or the error once FAILED
  #subscriber: Subscriber<T> | null = null; // the first subscriber while PENDING (nearly always the only one)
  #others: Array<Subscriber<T>> | null = null;

  /** Starts `dispatch` now; a synchronous throw is its error, as with `defer`. */
  constructor(dispatch: () => Promise<T>) {
    super((subscriber) => this.#subscribe(subscriber));
    let pending: Promise<T>;
    try {
      pending = dispatch();
    } catch (error) {
      this.#settle(FAILED, error);
      return;
    }
    pending.then(
      (value) => this.#settle(DONE, value),
      (error: unknown) => this.#settle(FAILED, error),
    );
  }

  #subscribe(subscriber: Subscriber<T>): (() => void) | undefined {
    if (this.#state === DONE) subscriber.complete();
    else if (this.#state === FAILED) subscriber.error(this.#value);
    if (this.#state !== PENDING) return undefined;
    if (this.#subscriber === null) this.#subscriber = subscriber;
    else (this.#others ??= []).push(subscriber);
    return () => this.#remove(subscriber);
  }

  #remove(subscriber: Subscriber<T>): void {
    if (this.#subscriber === subscriber) this.#subscriber = null;
    else if (this.#others !== null && this.#others.includes(subscriber)) this.#others.splice(this.#others.indexOf(subscriber), 1);
  }

  #settle(state: typeof DONE | typeof FAILED, value: unknown): void {
    this.#state = state;
    this.#value = state === FAILED ? value : undefined; // a value is delivered now and never again
    const first = this.#subscriber;
    const others = this.#others;
    this.#subscriber = this.#others = null;
    if (first !== null) deliver(first, state, value);
    if (others !== null) for (const subscriber of others) deliver(subscriber, state, value);
  }
}

function deliver<T>(subscriber: Subscriber<T>, state: typeof DONE | typeof FAILED, value: unknown): void {
  if (state === FAILED) return subscriber.error(value);
  subscriber.next(value as T);
  subscriber.complete();
}
