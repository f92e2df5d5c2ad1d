import { Observable, type Subscriber, type TeardownLogic, type Unsubscribable } from 'rxjs';
import { Buffer } from 'node:buffer';
import { SmuxError } from '../smux/index.js';
import { detached } from '../util/detached.js';

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

// Set by SmuxStreamedPayload's static block: how the server feeds a payload, and how its subscription and iterator
// reach it — kept off the object the handler holds.
let push: (payload: SmuxStreamedPayload, item: unknown, bytes: number) => void;
let end: (payload: SmuxStreamedPayload) => void;
let fail: (payload: SmuxStreamedPayload, error: unknown) => void;
let subscribeTo: (payload: SmuxStreamedPayload, subscriber: Subscriber<unknown>) => TeardownLogic;
let unsubscribed: <T>(payload: SmuxStreamedPayload<T>) => void;
let takeNext: <T>(payload: SmuxStreamedPayload<T>) => Promise<IteratorResult<T>>;
let stopIterating: <T>(payload: SmuxStreamedPayload<T>, value: unknown) => Promise<IteratorResult<T>>;

/**
 * Every payload's subscribe function, one for all: rxjs calls it with the payload as `this` (the `this` its
 * constructor's signature declares), so a payload costs no closure and scope of its own (96 B of a held call).
 */
function subscribePayload(this: Observable<unknown>, subscriber: Subscriber<unknown>): TeardownLogic {
  return subscribeTo(this as SmuxStreamedPayload, subscriber);
}

/**
 * The `@Payload()` of a streamed request: the items the caller streams (`client.send(pattern, source)`), in order.
 * It is an rxjs `Observable` — `payload.pipe(…)`, `subscribe()`, as with `@GrpcStreamMethod` — and also an
 * `AsyncIterable`: `for await (const item of payload)` takes one item at a time, and the stream's window
 * reopens only as items are taken, so a caller can never run far ahead of the handler. Read it once (one
 * subscription or one iteration). Items that arrive before the handler starts reading are held (bounded: the
 * sender waits). It errors with `ERR_SMUX_CANCELLED` when the caller cancels, or when its source failed (an
 * `END` + `ERROR`: the caller's error is the `cause`).
 */
export class SmuxStreamedPayload<T = unknown> extends Observable<T> implements AsyncIterable<T> {
  readonly #flow: InputFlow;
  // Items held for the handler, each followed by its size on the wire; null while none is (most of the time: a
  // held call keeps no arrays).
  #held: unknown[] | null = null;
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
    super(subscribePayload);
    this.#flow = flow;
  }

  static {
    push = (payload, item, bytes) => payload.#push(item, bytes);
    end = (payload) => payload.#end();
    fail = (payload, error) => payload.#fail(error);
    subscribeTo = (payload, subscriber) => payload.#subscribe(subscriber);
    unsubscribed = (payload) => payload.#unsubscribed();
    takeNext = (payload) => payload.#next();
    stopIterating = (payload, value) => payload.#stopIterating(value);
  }

  /** True once the caller's stream ended (all items delivered or held). */
  get ended(): boolean {
    return this.#ended;
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    this.#claim('iterator');
    return new PayloadIterator(this);
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
    const held = (this.#held ??= []);
    held.push(Buffer.isBuffer(item) ? detached(item) : item, bytes); // held, a view would keep its whole read alive
    this.#bytes += bytes;
    this.#flow.hold(this.#bytes);
    if (held.length >= 2 * HIGH_WATER_ITEMS || this.#bytes >= HIGH_WATER_BYTES) this.#flow.pause();
  }

  /** The caller's stream ended (END). */
  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#held !== null) return; // delivered after the held items
    this.#subscriber?.complete();
    this.#settleWaiter({ done: true, value: undefined as T });
  }

  /** The caller's stream failed, or the call was cancelled. */
  #fail(error: unknown): void {
    if (this.#ended && this.#held === null) return;
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

  #subscribe(subscriber: Subscriber<T>): TeardownLogic {
    try {
      this.#claim('observable');
    } catch (error) {
      subscriber.error(error);
      return undefined;
    }
    // Held items first, then live ones: an Observable is not paused, so reading goes on at full speed.
    const held = this.#held;
    this.#held = null;
    this.#drop();
    if (held !== null) for (let i = 0; i < held.length; i += 2) subscriber.next(held[i] as T);
    if (this.#failed) subscriber.error(this.#error);
    else if (this.#ended) subscriber.complete();
    else {
      this.#subscriber = subscriber;
      this.#flow.resume();
    }
    return new PayloadSubscription(this);
  }

  /** The subscription ended: before the caller's END, the handler wants no more items. */
  #unsubscribed(): void {
    // The only subscriber there can be (a payload is read once); null when it was never live (ended at subscribe).
    if (this.#subscriber !== null && !this.#ended) this.#flow.stopReading();
    this.#subscriber = null;
  }

  #next(): Promise<IteratorResult<T>> {
    const held = this.#held;
    if (held !== null) {
      const item = held.shift() as T;
      this.#bytes -= held.shift() as number;
      if (held.length === 0) this.#held = null;
      this.#flow.hold(this.#bytes);
      if (held.length < HIGH_WATER_ITEMS && this.#bytes < HIGH_WATER_BYTES / 2) this.#flow.resume();
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

  /** The iterator's `return()`: the handler stopped taking items (a `break`, a throw out of its `for await`). */
  #stopIterating(value: unknown): Promise<IteratorResult<T>> {
    this.#flow.stopReading();
    this.#drop();
    this.#ended = true;
    return Promise.resolve({ done: true, value: value as T });
  }

  #drop(): void {
    if (this.#bytes !== 0) this.#flow.hold(0);
    this.#held = null;
    this.#bytes = 0;
  }

  #settleWaiter(result: IteratorResult<T>): void {
    const waiter = this.#waiter;
    this.#waiter = this.#rejecter = null;
    waiter?.(result);
  }
}

/**
 * A payload's iterator (`for await`): one small object whose methods reach the payload, rather than an object
 * literal with two closures and their scope (192 B of a held client stream). Called as methods, as the async
 * iteration protocol does.
 */
class PayloadIterator<T> implements AsyncIterator<T> {
  readonly #payload: SmuxStreamedPayload<T>;

  constructor(payload: SmuxStreamedPayload<T>) {
    this.#payload = payload;
  }

  next(): Promise<IteratorResult<T>> {
    return takeNext(this.#payload);
  }

  return(value?: unknown): Promise<IteratorResult<T>> {
    return stopIterating(this.#payload, value);
  }
}

/**
 * The finalizer of a subscription to a payload, which rxjs keeps until it ends: one small object rather than a
 * closure and its scope (104 B of a held bidirectional call).
 */
class PayloadSubscription<T> implements Unsubscribable {
  readonly #payload: SmuxStreamedPayload<T>;

  constructor(payload: SmuxStreamedPayload<T>) {
    this.#payload = payload;
  }

  unsubscribe(): void {
    unsubscribed(this.#payload);
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
