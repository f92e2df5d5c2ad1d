import { concatMap, from, isObservable, type Observable, type Observer, of } from 'rxjs';
import { type Clock, SmuxError } from '../smux/index.js';
import type { CallEndpoint } from './call-endpoint.js';
import { isAsyncIterable } from './sources.js';

/** The key of a feed's options in a handler's extras (`@MessagePattern(pattern, smuxFeed())`). */
export const FEED_EXTRAS_KEY = 'nestjs-smux:feed';

/** Options of a real-time feed. */
export interface SmuxFeedOptions {
  /**
   * Items kept for a caller that reads more slowly than the handler produces; when full, the oldest unsent item is
   * dropped for each new one. The memory a feed may hold is this many items (plus the stream's window). Default 64.
   */
  bufferSize?: number;
}

/**
 * Marks a `@MessagePattern` handler's Observable reply as a **real-time feed**: each item travels with its sequence
 * number and the server's timestamp, and when the caller reads more slowly than the handler produces, the oldest
 * unsent items are dropped instead of being buffered or failing the call — the producer is never slowed and the
 * memory stays within `bufferSize` items. Callers receive {@link SmuxFeedItem}s; gaps in `seq` are the drops.
 *
 * ```ts
 * @MessagePattern('prices', smuxFeed({ bufferSize: 100 }))
 * prices(): Observable<Price> { return this.market.prices$; }
 * ```
 *
 * (Nest passes this second argument of `@MessagePattern` to the transport as the handler's extras.)
 */
export function smuxFeed(options: SmuxFeedOptions = {}): Record<string, unknown> {
  const bufferSize = options.bufferSize ?? 64;
  if (!Number.isInteger(bufferSize) || bufferSize < 1) {
    throw new SmuxError('ERR_SMUX_INVALID_ARGUMENT', `smuxFeed: bufferSize must be an integer of at least 1, got ${String(bufferSize)}`);
  }
  return { [FEED_EXTRAS_KEY]: { bufferSize } };
}

/** One item of a real-time feed, as the caller receives it. */
export interface SmuxFeedItem<T = unknown> {
  /** The value the handler produced. */
  readonly value: T;
  /** Its sequence number: 1, 2, 3, … over every item produced, dropped ones included (gaps are drops). */
  readonly seq: number;
  /** When the handler produced it, in ms since the Unix epoch (the server's clock); an item that waited keeps it. */
  readonly timestamp: number;
  /** How many items of this feed were dropped so far, before this one. */
  readonly dropped: number;
}

/** What became of an item a feed sent: written, held back (it stays in the ring), or the call ended instead. */
export type FeedSendOutcome = 'sent' | 'held' | 'ended';

/**
 * How a feed writes through its call's reply `R`: functions the reply's module makes once. They are not methods of
 * the reply, which application code holds (it is a subscriber): only its `error` is, as any subscriber's.
 */
export interface FeedWrites<R> {
  /** Writes one item as a RESPONSE: 'held' when the connection's reply budget has no room for it now. */
  send(reply: R, value: unknown, feed: { seq: number; timestamp: number }): FeedSendOutcome;
  /** Writes the call's last message (no value: the feed completed) and lets the call wrap up. */
  complete(reply: R): void;
}

/** What a feed needs of its call's reply itself: what any subscriber has. */
type FeedReply = Pick<Observer<unknown>, 'error'>;

// Set by FeedBuffer's static block: the feed is an Observer in application code's reach (an operator's subscriber
// forwards to it), so stopping it is kept off the object.
let stop: (feed: FeedBuffer) => void;

/**
 * The server side of a feed: items go out while the stream's window allows and the connection's reply budget has
 * room; beyond it they wait in a ring of `bufferSize`, and a new item pushes out the oldest waiting one. Completion
 * goes out after what still waits.
 * Its public face is the Observer's (`next`, `error`, `complete`); the reply stops it with {@link stopFeed}.
 */
export class FeedBuffer<R extends FeedReply = FeedReply> implements Observer<unknown> {
  readonly #endpoint: CallEndpoint;
  readonly #reply: R;
  readonly #writes: FeedWrites<R>;
  readonly #size: number;
  readonly #clock: Clock;
  readonly #ring: Array<{ value: unknown; seq: number; timestamp: number }> = [];
  #seq = 0;
  #draining = false;
  #completed = false;
  #stopped = false;

  /**
   * @param endpoint - the call's stream
   * @param size - `bufferSize`
   * @param clock - the server's clock (timestamps: epoch ms)
   * @param reply - the call's reply
   * @param writes - how the feed writes through it
   */
  constructor(endpoint: CallEndpoint, size: number, clock: Clock, reply: R, writes: FeedWrites<R>) {
    this.#endpoint = endpoint;
    this.#size = size;
    this.#clock = clock;
    this.#reply = reply;
    this.#writes = writes;
  }

  static {
    stop = (feed) => feed.#stop();
  }

  next(value: unknown): void {
    if (this.#stopped) return;
    const item = { value, seq: ++this.#seq, timestamp: performance.timeOrigin + this.#clock.now() };
    if (this.#ring.length === 0 && this.#endpoint.writable && this.#writes.send(this.#reply, item.value, item) !== 'held') return;
    if (this.#ring.length >= this.#size) this.#ring.shift(); // the oldest unsent item goes
    this.#ring.push(item);
    void this.#drain();
  }

  error(error: unknown): void {
    if (this.#stopped) return;
    this.#ring.length = 0;
    this.#reply.error(error);
  }

  complete(): void {
    if (this.#stopped) return;
    this.#completed = true;
    if (this.#ring.length === 0) this.#writes.complete(this.#reply);
  }

  /** The call is over: nothing more is written. */
  #stop(): void {
    this.#stopped = true;
    this.#ring.length = 0;
  }

  async #drain(): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    while (!this.#stopped && this.#ring.length > 0) {
      if (!this.#endpoint.writable) await this.#endpoint.drained();
      if (this.#stopped || this.#endpoint.ended || this.#ring.length === 0) break;
      const item = this.#ring[0]; // taken once written: newer items may push it out while it waits
      const outcome = this.#writes.send(this.#reply, item.value, item);
      if (outcome === 'ended') break;
      if (outcome === 'held')
        await this.#endpoint.replyRoom(); // other calls fill the connection's reply budget
      else if (this.#ring[0] === item) this.#ring.shift();
    }
    this.#draining = false;
    if (!this.#stopped && this.#completed && this.#ring.length === 0) this.#writes.complete(this.#reply);
  }
}

/** Stops `feed`: the call is over, nothing more is written (what waits in its ring is dropped). */
export function stopFeed(feed: FeedBuffer): void {
  stop(feed);
}

/**
 * A feed handler's result as the feed's values: an Observable's values, each an AsyncIterable's items when it is one
 * (an interceptor wraps a handler's async generator as its only value); an AsyncIterable's items; a plain value alone.
 */
export function feedValues(result: unknown): Observable<unknown> {
  return isObservable(result) ? result.pipe(concatMap(asValues)) : asValues(result);
}

function asValues(value: unknown): Observable<unknown> {
  return isAsyncIterable(value) ? from(value) : of(value);
}
