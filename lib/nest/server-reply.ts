import { nextTick } from 'node:process';
import { isObservable, type Observer, type Subscription, type TeardownLogic, type Unsubscribable } from 'rxjs';
import { type Clock, SmuxError } from '../smux/index.js';
import { Flag, type MessagePiece } from './call-codec.js';
import type { CallEndpoint } from './call-endpoint.js';
import { FeedBuffer, type FeedSendOutcome, feedValues, type FeedWrites, stopFeed } from './feed.js';
import type { PacketCodec } from './packet-codec.js';
import { isAsyncIterable, pullSource, releaseSource } from './sources.js';
import { runTeardowns, type Teardown } from './teardowns.js';

/** What a reply asks of its call. */
export interface ReplyOwner {
  /** True while the call runs (answering makes sense). */
  readonly running: boolean;
  /** The packet id of the request (a custom serializer puts it in every packet). */
  readonly id: string | undefined;
  /** The last message is written (`errored`: it is an error value): wrap the call up. */
  answered(errored: boolean): void;
  /** A transport error ends the call (written as such: a limit). */
  end(error: SmuxError): void;
  /** A thrown value as the caller receives it (Nest's exception-filter defaults). */
  toRpcError(error: unknown): unknown;
  /** The transport error a failed handler's call ends with instead of its error (`send()` to a byte-stream handler). */
  readonly failsWith: SmuxError | null;
}

// Set by ServerReply's static block. The reply is its Observable's subscriber, so application code holds it (a raw
// Observable's `subscriber`, an operator's `destination`): what only the call may do to it is kept off the object.
let adopt: (reply: ServerReply, result: unknown, feed: { bufferSize: number; clock: Clock } | null) => Promise<void> | void;
let answer: (reply: ServerReply, value: unknown, flags: number, status?: string) => void;
let stop: (reply: ServerReply) => void;
let flushPending: (reply: ServerReply) => void;
let feedWrites: FeedWrites<ServerReply>;

/**
 * Writes a handler's result as the call's RESPONSE messages: a plain value as one message with LAST; an
 * Observable's values in order, the completion merged into the last value when it comes in the same tick (as
 * Nest's `send()` does); an AsyncIterable or a Readable pulled only as the stream's window allows; a feed through
 * its bounded, dropping buffer. An Observable cannot be paused: what it queues beyond `maxReplyBufferBytes` ends
 * the call with ERR_SMUX_LIMIT. The reply is its own Observer (no per-call closures), and its own subscriber: it
 * has `closed`, `add`, `remove` and `unsubscribe`, so rxjs subscribes it as it is instead of wrapping it in a
 * SafeSubscriber, a ConsumerObserver and a finalizer array (288 B of the ≈ 2.2 KiB a held call kept: docs/NOTES.md).
 * Being the subscriber, it is in application code's hands: its public face is the subscriber's and nothing more;
 * the call drives it through {@link adoptResult}, {@link answerReply} and {@link stopReply}.
 */
export class ServerReply implements Observer<unknown>, Unsubscribable {
  readonly #endpoint: CallEndpoint;
  readonly #codec: PacketCodec;
  readonly #owner: ReplyOwner;
  readonly #maxBufferedBytes: number;
  #subscription: Subscription | null = null;
  #release: (() => void) | null = null; // frees a pulled AsyncIterable/Readable
  #stopped = false;
  #pending: unknown;
  #hasPending = false;
  #flushScheduled = false;
  #values = 0;
  #feed: FeedBuffer | null = null;
  #closed = false; // as a subscriber: completed, failed or unsubscribed
  #teardown: Teardown | Teardown[] | null = null; // the subscription's finalizers (one, nearly always)

  /**
   * @param endpoint - the call's stream
   * @param codec - the side's packet codec
   * @param owner - the call
   * @param maxBufferedBytes - `maxReplyBufferBytes`
   */
  constructor(endpoint: CallEndpoint, codec: PacketCodec, owner: ReplyOwner, maxBufferedBytes: number) {
    this.#endpoint = endpoint;
    this.#codec = codec;
    this.#owner = owner;
    this.#maxBufferedBytes = maxBufferedBytes;
  }

  static {
    adopt = (reply, result, feed) => reply.#adopt(result, feed);
    answer = (reply, value, flags, status) => reply.#answer(value, flags, status);
    stop = (reply) => reply.#stop();
    flushPending = (reply) => reply.#flushPending();
    feedWrites = {
      send: (reply, value, feed) => reply.#sendFeedItem(value, feed),
      complete: (reply) => reply.#completeFeed(),
    };
  }

  /** Writes `result`: a value, an Observable, an AsyncIterable/Readable, or (with `feed`) a feed's Observable. */
  #adopt(result: unknown, feed: { bufferSize: number; clock: Clock } | null): Promise<void> | void {
    if (feed !== null) {
      // A feed is never paced by the caller: whatever the handler returned is consumed as it comes, each value a
      // feed item (an async generator or Readable too, also when an interceptor wrapped it as its only value).
      this.#feed = new FeedBuffer(this.#endpoint, feed.bufferSize, feed.clock, this, feedWrites);
      if (isAsyncIterable(result)) this.#release = () => releaseSource(result);
      this.#subscription = feedValues(result).subscribe(this.#feed);
      if (this.#stopped) this.#subscription.unsubscribe();
    } else if (isObservable(result)) {
      this.#subscription = result.subscribe(this);
      if (this.#stopped) this.#subscription.unsubscribe(); // ended synchronously, or stopped meanwhile
    } else if (isAsyncIterable(result)) {
      return this.#pull(result);
    } else {
      this.#answer(result, Flag.LAST);
    }
  }

  /**
   * A feed completed: its last message, which carries no value, goes whatever the connection's reply budget holds (a
   * few bytes; a feed never fails for a slow caller).
   */
  #completeFeed(): void {
    if (!this.#owner.running) return;
    const buffers = this.#encode(undefined, Flag.LAST);
    if (buffers === null) return;
    this.#endpoint.write(buffers);
    this.#owner.answered(false);
  }

  /** Writes the call's last message (a value, or with ERROR an error) and lets the call wrap up. */
  #answer(value: unknown, flags: number, status?: string): void {
    if (this.#owner.running && this.#send(value, flags, status)) this.#owner.answered((flags & Flag.ERROR) !== 0);
  }

  /** Stops taking values: the Observable is unsubscribed (its teardown runs), a pulled source released. */
  #stop(): void {
    this.#stopped = true;
    const release = this.#release;
    this.#release = null;
    release?.();
    if (this.#feed !== null) stopFeed(this.#feed);
    const subscription = this.#subscription;
    this.#subscription = null;
    subscription?.unsubscribe();
  }

  // ── Observer: values of the handler's Observable ───────────────────────────────────────────────────────

  next(value: unknown): void {
    if (this.#closed || this.#stopped || !this.#owner.running) return;
    if (this.#hasPending) this.#send(this.#pending, 0);
    this.#pending = value;
    this.#hasPending = true;
    // An AsyncIterable as the only value is what an interceptor makes of a handler's async generator or
    // Readable: complete() pulls it rather than writing it as JSON, so it must wait.
    if (++this.#values === 1 && isAsyncIterable(value)) return;
    // Like Nest's send(): a completion within the same tick merges LAST into this value.
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      nextTick(flushPending, this);
    }
  }

  error(error: unknown): void {
    if (this.#closed || this.#stopped) return;
    const transport = this.#owner.failsWith;
    if (transport !== null) return this.#owner.end(transport); // which stops this reply
    this.#flushPending();
    this.#answer(error, Flag.LAST | Flag.ERROR);
    this.unsubscribe(); // as rxjs's subscribers do once the source is done
  }

  complete(): void {
    if (this.#closed || this.#stopped) return;
    const value = this.#hasPending ? this.#pending : undefined;
    this.#hasPending = false;
    this.#pending = undefined;
    if (this.#values === 1 && isAsyncIterable(value)) {
      this.#subscription = null;
      this.unsubscribe();
      void this.#pull(value);
      return;
    }
    this.#answer(value, Flag.LAST);
    this.unsubscribe();
  }

  // ── Subscription: the reply as rxjs's subscriber ───────────────────────────────────────────────────────

  /** True once the Observable completed or failed, or the reply unsubscribed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Keeps a finalizer of the subscription (what the Observable's subscribe returned, an operator's subscriber). */
  add(teardown: TeardownLogic): void {
    if (teardown === undefined || teardown === null || (teardown as unknown) === this) return;
    if (this.#closed) return runTeardowns(teardown);
    const held = this.#teardown;
    if (held === null) this.#teardown = teardown;
    else if (Array.isArray(held)) held.push(teardown);
    else this.#teardown = [held, teardown];
  }

  /** Forgets a finalizer (a child subscription that ended by itself). */
  remove(teardown: Exclude<TeardownLogic, void>): void {
    const held = this.#teardown;
    if (held === teardown) this.#teardown = null;
    else if (Array.isArray(held) && held.includes(teardown)) held.splice(held.indexOf(teardown), 1);
  }

  /** Ends the subscription: its finalizers run once (all of them, then the first error if one threw). */
  unsubscribe(): void {
    if (this.#closed) return;
    this.#closed = true;
    const held = this.#teardown;
    this.#teardown = null;
    if (held !== null) runTeardowns(held);
  }

  /** Writes a value that waited for a possible completion. */
  #flushPending(): void {
    this.#flushScheduled = false;
    if (!this.#hasPending || !this.#owner.running) return;
    const value = this.#pending;
    this.#hasPending = false;
    this.#pending = undefined;
    this.#send(value, 0);
  }

  /**
   * Writes one RESPONSE; false when the call ended instead. A value JSON cannot carry (a BigInt, a cycle) fails the
   * call with an error rather than leaving the caller waiting; a value the connection's reply budget refuses ends the
   * call with ERR_SMUX_LIMIT, and so does an Observable's queue outgrowing `maxReplyBufferBytes`. A pulled source's
   * items: {@link #sendPulled}; feed items: {@link #sendFeedItem}.
   */
  #send(value: unknown, flags: number, status?: string): boolean {
    const buffers = this.#encode(value, flags, status);
    if (buffers === null) return false;
    if ((flags & Flag.ERROR) === 0) {
      const bytes = byteCount(buffers);
      if (!this.#endpoint.admitsReply(bytes)) {
        this.#owner.end(this.#endpoint.replyRefusal(bytes)!); // the caller does not read: its connection's budget is full
        return false;
      }
    }
    this.#endpoint.write(buffers);
    // An Observable cannot wait: its queue is bounded (a pulled source waits for the window after each item instead).
    if ((flags & Flag.LAST) === 0 && this.#endpoint.writableLength > this.#maxBufferedBytes) {
      const limit = this.#maxBufferedBytes;
      this.#owner.end(
        new SmuxError(
          'ERR_SMUX_LIMIT',
          `the reply's queued values exceeded maxReplyBufferBytes (${limit} bytes): the caller reads slower than the Observable emits, or one value is that large`,
        ),
      );
      return false;
    }
    return true;
  }

  /**
   * Writes a feed item, which the feed sends only while its stream is writable: no `maxReplyBufferBytes` check (the
   * feed's ring and the stream's high-water mark bound it), and a connection's reply budget that is full holds the
   * item back ('held': the feed keeps it in its ring, dropping the oldest, until the budget has room) instead of
   * failing the call — a feed never fails for a slow caller.
   */
  #sendFeedItem(value: unknown, feed: { seq: number; timestamp: number }): FeedSendOutcome {
    const buffers = this.#encode(value, 0, undefined, feed);
    if (buffers === null) return 'ended';
    if (!this.#endpoint.admitsReply(byteCount(buffers))) return 'held';
    this.#endpoint.write(buffers);
    return 'sent';
  }

  /**
   * One RESPONSE's bytes; null when the value cannot be encoded: the call then ends with ERR_SMUX_ENCODING, which the
   * caller receives as it would for its own unencodable request (the server logs the cause, a handler's mistake).
   */
  #encode(value: unknown, flags: number, status?: string, feed?: { seq: number; timestamp: number }): MessagePiece[] | null {
    try {
      return this.#codec.encodeResponse(this.#owner.id, value, flags, status, feed);
    } catch (error) {
      this.#stop();
      this.#hasPending = false;
      this.#owner.end(new SmuxError('ERR_SMUX_ENCODING', 'the server could not encode the reply (its log says why)', { cause: error }));
      return null;
    }
  }

  async #pull(source: AsyncIterable<unknown>): Promise<void> {
    const live = (): boolean => !this.#stopped && this.#owner.running;
    const outcome = await pullSource(
      this.#endpoint,
      source,
      (value) => this.#sendPulled(value, 0),
      live,
      (release) => (this.#release = release),
    );
    if (!live()) return;
    if (!outcome.done) return this.error(this.#owner.toRpcError(outcome.error));
    const sent = this.#sendPulled(undefined, Flag.LAST);
    if (sent === true || (sent !== false && (await sent))) this.#owner.answered(false);
  }

  /**
   * A pulled source's message. It waits for room in the connection's reply budget, as it waits for its stream's
   * window: where an Observable's value that does not fit fails the call, a source that can wait is not failed for
   * the other calls' replies (found by a hostile-peer trial: 500 async-generator replies at once to a caller that
   * reads failed half the calls with ERR_SMUX_LIMIT). A caller that stops reading is still cut off: the budget stays
   * exhausted, and `replyStallTimeout` disconnects it.
   */
  #sendPulled(value: unknown, flags: number): boolean | Promise<boolean> {
    const buffers = this.#encode(value, flags);
    if (buffers === null) return false;
    const bytes = byteCount(buffers);
    if (!this.#endpoint.admitsReply(bytes)) return this.#sendWhenRoom(buffers, bytes);
    this.#endpoint.write(buffers);
    return true;
  }

  /**
   * Holds an encoded item until the budget admits it. What waits so is counted: at most `maxQueuedReplyBytes` of such
   * items per connection, past which the call is refused as before (a thousand calls each holding an item for a
   * caller that reads nothing held them outside the budget).
   */
  async #sendWhenRoom(buffers: MessagePiece[], bytes: number): Promise<boolean> {
    const endpoint = this.#endpoint;
    if (!endpoint.holdWaitingReply(bytes)) {
      this.#owner.end(endpoint.replyRefusal(bytes)!);
      return false;
    }
    try {
      do {
        await endpoint.replyRoom();
        if (this.#stopped || !this.#owner.running) return false;
      } while (!endpoint.admitsReply(bytes));
    } finally {
      endpoint.releaseWaitingReply(bytes);
    }
    endpoint.write(buffers);
    return true;
  }
}

/** Bytes of an encoded message (a text piece is ASCII: its length is its bytes). */
function byteCount(buffers: readonly MessagePiece[]): number {
  let bytes = 0;
  for (const buffer of buffers) bytes += buffer.length;
  return bytes;
}

/** Writes `result` as `reply`'s call's answer: a value, an Observable, an AsyncIterable/Readable, or (with `feed`) a feed. */
export function adoptResult(reply: ServerReply, result: unknown, feed: { bufferSize: number; clock: Clock } | null): Promise<void> | void {
  return adopt(reply, result, feed);
}

/** Writes the call's last message (a value, or with ERROR an error) and lets the call wrap up. */
export function answerReply(reply: ServerReply, value: unknown, flags: number, status?: string): void {
  answer(reply, value, flags, status);
}

/** Stops `reply` taking values: its Observable is unsubscribed (its teardown runs), a pulled source released. */
export function stopReply(reply: ServerReply): void {
  stop(reply);
}
