import { isObservable } from 'rxjs';
import { SmuxError } from '../smux/index.js';
import { encodeMessagePieces, Kind, type MessagePiece } from './call-codec.js';
import type { CallEndpoint } from './call-endpoint.js';
import { pullSource, releaseSource, type SmuxSource } from './sources.js';

/** What a streamed request needs of its call. */
export interface RequestSourceOwner {
  /** True once the call is over: nothing more is sent. */
  done(): boolean;
  /** The source failed, or got too far ahead of the server: the call fails (and is cancelled on the server). */
  fail(error: unknown): void;
}

/**
 * The items of a client stream or a bidi call's request, sent as DATA … END after the REQUEST. An AsyncIterable (a
 * Readable, an async generator) is pulled once the stream is open, and only as its window allows. An Observable is
 * subscribed at once — a hot one must not lose items while the call waits for a connection — and cannot be paused:
 * what it emits beyond `maxBufferBytes` queued, before the stream opens (in the outbox) or on it, fails the call
 * with ERR_SMUX_LIMIT (`maxSourceBufferBytes`). A source that fails fails the call.
 *
 *   (new) ──attach(endpoint)──▶ ATTACHED (the outbox written; an AsyncIterable pulled) ──stop()──▶ STOPPED
 *     └──────────────────────────────stop()──────────────────────────────────────────────────▲
 */
export class RequestSource {
  readonly #owner: RequestSourceOwner;
  readonly #maxBufferBytes: number; // for an Observable only: a pulled source waits for the window instead
  #source: SmuxSource | null;
  #endpoint: CallEndpoint | null = null;
  #release: (() => void) | null = null; // frees the source: unsubscribe, or destroy / return the iterator
  #outbox: MessagePiece[] | null = null; // an Observable's items before the stream opens (allocated on the first)
  #outboxBytes = 0;

  constructor(source: SmuxSource, owner: RequestSourceOwner, maxBufferBytes: number) {
    this.#source = source;
    this.#owner = owner;
    if (!isObservable(source)) {
      this.#maxBufferBytes = Infinity; // one item may pass the high-water mark; the next waits for the window
      // Pulled once the stream opens; a call that ends before that still releases it (a file is closed).
      this.#release = () => releaseSource(source);
      return;
    }
    this.#maxBufferBytes = maxBufferBytes;
    const subscription = source.subscribe({
      next: (value) => this.#send(Kind.DATA, value),
      error: (error: unknown) => owner.fail(error),
      complete: () => this.#send(Kind.END, undefined),
    });
    if (owner.done()) subscription.unsubscribe();
    else this.#release = () => subscription.unsubscribe();
  }

  /** The call's stream is open and its REQUEST written: what waited goes now, and an AsyncIterable is pulled. */
  attach(endpoint: CallEndpoint): void {
    this.#endpoint = endpoint;
    if (this.#outbox !== null) endpoint.write(this.#outbox);
    this.#outbox = null;
    const source = this.#source;
    if (source === null || isObservable(source)) return;
    const live = (): boolean => this.#source !== null && !this.#owner.done();
    const item = (value: unknown): void => this.#send(Kind.DATA, value);
    void pullSource(endpoint, source, item, live, (release) => (this.#release = release)).then((outcome) => {
      if (outcome.done) this.#send(Kind.END, undefined);
      else if ('error' in outcome && outcome.error !== undefined) this.#owner.fail(outcome.error);
    });
  }

  /** The call is over: nothing more is taken from the source, which is released. */
  stop(): void {
    const release = this.#release;
    this.#release = this.#source = this.#endpoint = null;
    this.#outbox = null;
    release?.();
  }

  /** One DATA or the END, on the stream or, until it opens, in the outbox. */
  #send(kind: typeof Kind.DATA | typeof Kind.END, value: unknown): void {
    if (this.#owner.done()) return;
    let buffers: MessagePiece[];
    try {
      buffers = encodeMessagePieces(kind, 0, value);
    } catch (error) {
      return this.#owner.fail(error);
    }
    const endpoint = this.#endpoint;
    let queued: number;
    if (endpoint === null) {
      (this.#outbox ??= []).push(...buffers);
      queued = this.#outboxBytes += buffers.reduce((n, b) => n + b.length, 0);
    } else {
      endpoint.write(buffers);
      queued = endpoint.writableLength;
    }
    const limit = this.#maxBufferBytes;
    if (queued > limit) {
      this.#owner.fail(
        new SmuxError('ERR_SMUX_LIMIT', `the Observable source got ${queued} bytes ahead of the server (maxSourceBufferBytes ${limit})`),
      );
    }
  }
}
