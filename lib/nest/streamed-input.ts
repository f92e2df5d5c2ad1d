import { Observable, type Subscriber } from 'rxjs';
import { SmuxError } from '../smux/index.js';

/** Items a streamed request holds before it stops reading (the sender then waits on the stream's window). */
const HIGH_WATER_ITEMS = 32;
/** Bytes of items it holds before it stops reading: one v2 window's worth. */
const HIGH_WATER_BYTES = 256 * 1024;

/**
 * How a streamed request's items reach the handler, and how taking them paces the sender: the call's endpoint
 * itself (CallEndpoint has these), so a streamed request costs no flow object of its own.
 */
export interface InputFlow {
  /** Stop reading: the items held are enough (the window then holds the sender back). */
  pause(): void;
  /** Read again: the handler took items. */
  resume(): void;
  /** The handler stopped consuming (an iterator's `return()`): later items are not wanted. */
  stopReading(): void;
  /** Bytes of items held for the handler changed (the connection's budget counts them). */
  hold(bytes: number): void;
}

// Set by SmuxStreamedPayload's static block: how the server feeds a payload, kept off the object the handler holds.
let push: (payload: SmuxStreamedPayload, item: unknown, bytes: number) => void;
let end: (payload: SmuxStreamedPayload) => void;
let fail: (payload: SmuxStreamedPayload, error: unknown) => void;

/**
 * The `@Payload()` of a streamed request: the items the caller streams (`client.send(pattern, source)`), in order.
 * It is an rxjs `Observable` — `payload.pipe(…)`, `subscribe()`, as with `@GrpcStreamMethod` — and also an
 * `AsyncIterable`: `for await (const item of payload)` takes one item at a time, and the stream's window
 * reopens only as items are taken, so a caller can never run far ahead of the handler. Read it once (one
 * subscription or one iteration). Items that arrive before the handler starts reading are held (bounded: the
 * sender waits). It errors with `ERR_SMUX_CANCELLED` when the caller cancels, or with the caller's error.
 */
export class SmuxStreamedPayload<T = unknown> extends Observable<T> implements AsyncIterable<T> {
  readonly #flow: InputFlow;
  readonly #items: T[] = [];
  readonly #sizes: number[] = [];
  #bytes = 0;
  #ended = false;
  #error: unknown = null;
  #failed = false;
  #consumer: 'none' | 'observable' | 'iterator' = 'none';
  #subscriber: Subscriber<T> | null = null;
  #waiter: ((result: IteratorResult<T>) => void) | null = null;
  #rejecter: ((error: unknown) => void) | null = null;

  /** @param flow - the call's reading (the server makes these; a handler receives one) */
  constructor(flow: InputFlow) {
    super((subscriber) => this.#subscribe(subscriber));
    this.#flow = flow;
  }

  static {
    push = (payload, item, bytes) => payload.#push(item, bytes);
    end = (payload) => payload.#end();
    fail = (payload, error) => payload.#fail(error);
  }

  /** True once the caller's stream ended (all items delivered or held). */
  get ended(): boolean {
    return this.#ended;
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    this.#claim('iterator');
    return {
      next: () => this.#next(),
      return: (value?: unknown) => {
        this.#flow.stopReading();
        this.#drop();
        this.#ended = true;
        return Promise.resolve({ done: true, value: value as T });
      },
    };
  }

  /** An item arrived (`bytes`: its size on the wire). */
  #push(item: T, bytes: number): void {
    if (this.#ended) return;
    if (this.#subscriber !== null) return this.#subscriber.next(item);
    const waiter = this.#waiter;
    if (waiter !== null) {
      this.#waiter = this.#rejecter = null;
      return waiter({ done: false, value: item });
    }
    this.#items.push(item);
    this.#sizes.push(bytes);
    this.#bytes += bytes;
    this.#flow.hold(this.#bytes);
    if (this.#items.length >= HIGH_WATER_ITEMS || this.#bytes >= HIGH_WATER_BYTES) this.#flow.pause();
  }

  /** The caller's stream ended (END). */
  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#items.length > 0) return; // delivered after the held items
    this.#subscriber?.complete();
    this.#settleWaiter({ done: true, value: undefined as T });
  }

  /** The caller's stream failed, or the call was cancelled. */
  #fail(error: unknown): void {
    if (this.#ended && this.#items.length === 0) return;
    this.#ended = true;
    this.#failed = true;
    this.#error = error;
    this.#drop();
    this.#subscriber?.error(error);
    const reject = this.#rejecter;
    this.#waiter = this.#rejecter = null;
    reject?.(error);
  }

  #claim(consumer: 'observable' | 'iterator'): void {
    if (this.#consumer !== 'none') {
      throw new SmuxError('ERR_SMUX_INVALID_ARGUMENT', 'a streamed request can be read once: one subscription or one iteration');
    }
    this.#consumer = consumer;
  }

  #subscribe(subscriber: Subscriber<T>): () => void {
    try {
      this.#claim('observable');
    } catch (error) {
      subscriber.error(error);
      return () => undefined;
    }
    // Held items first, then live ones: an Observable is not paused, so reading goes on at full speed.
    const held = this.#items.splice(0);
    this.#drop();
    for (const item of held) subscriber.next(item);
    if (this.#failed) subscriber.error(this.#error);
    else if (this.#ended) subscriber.complete();
    else {
      this.#subscriber = subscriber;
      this.#flow.resume();
    }
    return () => {
      if (this.#subscriber === subscriber && !this.#ended) this.#flow.stopReading();
      this.#subscriber = null;
    };
  }

  #next(): Promise<IteratorResult<T>> {
    if (this.#items.length > 0) {
      const item = this.#items.shift()!;
      this.#bytes -= this.#sizes.shift()!;
      this.#flow.hold(this.#bytes);
      if (this.#items.length < HIGH_WATER_ITEMS / 2 && this.#bytes < HIGH_WATER_BYTES / 2) this.#flow.resume();
      return Promise.resolve({ done: false, value: item });
    }
    if (this.#failed) return Promise.reject(this.#error);
    if (this.#ended) return Promise.resolve({ done: true, value: undefined as T });
    this.#flow.resume();
    return new Promise((resolve, reject) => {
      this.#waiter = resolve;
      this.#rejecter = reject;
    });
  }

  #drop(): void {
    if (this.#bytes !== 0) this.#flow.hold(0);
    this.#items.length = 0;
    this.#sizes.length = 0;
    this.#bytes = 0;
  }

  #settleWaiter(result: IteratorResult<T>): void {
    const waiter = this.#waiter;
    this.#waiter = this.#rejecter = null;
    waiter?.(result);
  }
}

/** An item of the caller's stream arrived for `payload` (`bytes`: its size on the wire). */
export function pushToPayload(payload: SmuxStreamedPayload, item: unknown, bytes: number): void {
  push(payload, item, bytes);
}

/** The caller's stream ended (END). */
export function endPayload(payload: SmuxStreamedPayload): void {
  end(payload);
}

/** The caller's stream failed, or the call was cancelled: `payload` errors with `error`. */
export function failPayload(payload: SmuxStreamedPayload, error: unknown): void {
  fail(payload, error);
}
